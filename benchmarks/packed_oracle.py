"""Oracle-trial throughput with retraining packed (``execution.pack``): one oracle study's trials at pack 1, 8, 32,
128 on one device.

An oracle study of ``--family`` (LeNet5-Mini on the bundled MNIST sample; ResNet56, ``resnet_cifar`` at
``--depth``, on ``--data-path``, a local CIFAR-10 copy or random CIFAR-size images) with one setting of random masks
(half of every group's units): its dense model trained once, then at each pack size K, K trials run as the study
runs them (the in-process executor at ``--pack K``: each trial pruned, measured and evaluated alone, their
retraining as one stacked model, physically pruned), pack 1 being ``train()`` itself on ``--sequential`` trials.
Trials/hour count every part of a trial; the speedup is over pack 1. A pack that runs out of device memory says so
and ends the sizes. A warm-up pack (2 trials) and a warm-up trial run first, untimed.

    python benchmarks/packed_oracle.py --device cuda [--family lenet5_mini] [--packs 1,8,32,128] [--json out.json]
    python benchmarks/packed_oracle.py --device cuda --family resnet_cifar --depth 56 --data-path DIR
    OMP_NUM_THREADS=1 python benchmarks/packed_oracle.py --cpu-dry-run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from figures import add_json_option, save_figures


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _rate(executor, context, specs) -> float:
    """Trials per hour of ``specs`` through ``executor``."""
    _sync()
    started = time.perf_counter()
    done = list(executor.run(context, specs))
    _sync()
    assert len(done) == len(specs)
    return 3600 * len(specs) / (time.perf_counter() - started)


def measure(args) -> dict:
    import torch

    from fanout import context_of, study
    from hfprune.models import get_adapter
    from hfprune.study.executors.inprocess import InProcessExecutor
    from hfprune.study.registry import parse_recipe

    adapter = get_adapter(args.family)
    options = {"depth": args.depth} if args.family == "resnet_cifar" else {}
    groups = adapter.groups(adapter.config(10, 3 if args.family != "lenet5_mini" else 1, 32, options))
    dataset = "mnist_sample" if args.family == "lenet5_mini" else "cifar10"
    trials = max(args.packs) + 2 + args.sequential
    data = study(trials, args.epochs, args.train_limit, {"threads_per_trial": 1}, args.family, dataset, args.data_path,
                 {name: 0.5 for name in groups})
    data["model"]["config"] = options
    data["pretrain"]["epochs"] = 1
    data["data"]["test_limit"] = args.test_limit
    data["export"] = {"checkpoints": "none"}
    recipe = parse_recipe(data)
    rates, out_of_memory = {}, None
    with tempfile.TemporaryDirectory() as folder:
        context = context_of(recipe, Path(folder))
        specs = context.plan.trials()
        print(f"{args.family} ({len(groups)} groups at 0.5), {args.epochs} retrain epochs on "
              f"{args.train_limit} images, batch 64, on {'cuda' if torch.cuda.is_available() else 'cpu'}",
              flush=True)
        list(InProcessExecutor(1, 2).run(context, specs[:2]))
        list(InProcessExecutor(1, 1).run(context, specs[:1]))
        for size in args.packs:
            count = args.sequential if size == 1 else size
            try:
                rates[size] = _rate(InProcessExecutor(1, size), context, specs[2:2 + count])
            except torch.OutOfMemoryError:
                out_of_memory = size
                print(f"pack {size}: out of device memory; larger packs not tried", flush=True)
                break
            print(f"pack {size:4d}: {rates[size]:10.0f} trials/hour ({rates[size] / rates[min(rates)]:.2f}x pack "
                  f"{min(rates)})", flush=True)
    base = rates[min(rates)]
    return {"family": args.family, "packed_trials_per_hour": rates,
            "packing_speedup": {size: rate / base for size, rate in rates.items()}, "out_of_memory_at": out_of_memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("lenet5_mini", "resnet_cifar"), default="lenet5_mini")
    parser.add_argument("--depth", type=int, default=56, help="resnet_cifar depth")
    parser.add_argument("--data-path", default=None, help="resnet_cifar: a local CIFAR-10 copy (save_to_disk)")
    parser.add_argument("--packs", type=lambda text: [int(k) for k in text.split(",")], default=[1, 8, 32, 128])
    parser.add_argument("--sequential", type=int, default=8, help="trials timed at pack 1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU, in seconds")
    add_json_option(parser)
    args = parser.parse_args()
    if args.cpu_dry_run:
        args.device, args.packs, args.sequential, args.epochs = "cpu", [1, 2], 2, 1
        args.train_limit, args.test_limit, args.depth = 64, 32, 8
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    if args.family == "resnet_cifar" and args.data_path is None:
        raise SystemExit("--family resnet_cifar needs --data-path (a CIFAR-10 copy; benchmarks/gpu_suite.py writes "
                         "random images in its schema)")
    save_figures(args, measure(args))


if __name__ == "__main__":
    main()
