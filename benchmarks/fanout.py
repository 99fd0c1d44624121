"""Trials/hour of one LeNet5-Mini study run in-process vs. on Ray with 1 and 2 workers (one thread each).

The same trials (same recipe, dense model, masks) run through each executor, in rounds that alternate an
in-process batch with a Ray batch; each Ray mode first runs one warm-up trial per worker (imports, the study's
context fetched from the object store), which is not timed. Ray's
start and its per-trial scheduling overhead are printed too: the latter as the difference per trial between
one Ray worker and in-process, and as the round trip of an empty Ray task. Target: >= 1.8x from 1 to 2
workers on 2 cores.

On a GPU: ``--pack 1,2,4,8`` also runs that many trials per GPU (``execution.gpus_per_trial`` = 1/k, k
workers per GPU) and prints trials/hour against one trial at a time (goal: >= 10x at the best packing);
``--pack-only`` skips the in-process / 1 / 2 worker comparison, ``--device cpu`` packs k workers on the CPU
instead (a dry run of the same path). ``--family``/``--dataset``/``--prune`` study another model (e.g.
``--family resnet_cifar --dataset cifar10 --data-path DIR``).

    python benchmarks/fanout.py [--trials 6] [--rounds 2] [--epochs 3] [--train-limit 2000] [--pack 1,2,4,8]
        [--pack-only] [--device cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hfprune.study.registry import parse_recipe
from hfprune.models import get_adapter
from hfprune.study.dense import dense_config, dense_model
from hfprune.study.oracle.context import OracleContext
from hfprune.study.executors.inprocess import InProcessExecutor
from hfprune.study.oracle.plan import plan_for
from hfprune.study.tasks import build_task

from figures import add_json_option, save_figures


def study(trials: int, epochs: int, train_limit: int, execution: dict, family: str = "lenet5_mini",
          dataset: str = "mnist_sample", data_path: str | None = None,
          ratios: dict[str, float] | None = None) -> dict:
    data = {"dataset": dataset, "train_limit": train_limit, "test_limit": 500}
    return {
        "name": "fanout", "seed": 0, "model": {"family": family},
        "data": {**data, "path": data_path} if data_path else data,
        "pretrain": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
        "pruning": {"settings": [{"ratios": ratios or {"conv1": 0.5},
                                  "candidates": {"mode": "random", "num": trials}}]},
        "retrain": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9}},
        "evaluation": {"batch_size": 500}, "execution": execution,
    }


def context_of(recipe, directory: Path) -> OracleContext:
    """The study's trial context, built as the runner builds it."""
    adapter = get_adapter(recipe.model.family)
    task = build_task(recipe, progress=False)
    config = dense_config(recipe, adapter, task)
    plan = plan_for(recipe, adapter, adapter.groups(config), task)
    dense = dense_model(recipe, adapter, task, directory, False, config)
    return OracleContext(recipe, dense, task, plan, directory)


def timed(executor, context, specs, warmup: int) -> float:
    """Seconds for ``specs`` after ``warmup`` untimed trials, through ``executor`` (already entered)."""
    list(executor.run(context, specs[:warmup]))
    started = time.perf_counter()
    done = list(executor.run(context, specs[warmup:]))
    assert len(done) == len(specs) - warmup
    return time.perf_counter() - started


def empty_task_round_trip(repeats: int = 50) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def nothing():
        return None

    ray.get(nothing.remote())
    started = time.perf_counter()
    for _ in range(repeats):
        ray.get(nothing.remote())
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="trials per timed batch")
    parser.add_argument("--rounds", type=int, default=2, help="alternating in-process / Ray batches per Ray mode")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--pack", default="", help="GPU only: trials per GPU to try, e.g. 1,2,4,8")
    parser.add_argument("--pack-only", action="store_true", help="only the --pack measurement")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="--pack on the GPUs, or (cpu) k workers at once on the CPU")
    parser.add_argument("--family", default="lenet5_mini")
    parser.add_argument("--dataset", default="mnist_sample")
    parser.add_argument("--data-path", default=None, help="local copy of a Hub dataset")
    parser.add_argument("--prune", default="conv1=0.5", help="GROUP=RATIO,... of the sampled masks")
    add_json_option(parser)
    args = parser.parse_args()
    from hfprune.study.executors.ray_tasks import RayExecutor

    packs = [int(k) for k in args.pack.split(",") if k.strip()]
    slots = max(1, torch.cuda.device_count()) if args.device == "cuda" else 1
    warmup_trials = max([2, *[k * slots for k in packs]])
    ratios = {name: float(ratio) for name, _, ratio in (item.partition("=") for item in args.prune.split(","))}
    recipe = parse_recipe(study(args.trials + warmup_trials, args.epochs, args.train_limit,
                                {"threads_per_trial": 1}, args.family, args.dataset, args.data_path, ratios))
    with tempfile.TemporaryDirectory() as folder:
        context = context_of(recipe, Path(folder))
        specs = context.plan.trials()
        if args.pack_only:
            save_figures(args, pack_on_gpu(recipe, context, specs, packs, args.trials, args.device))
            return
        print(f"LeNet5-Mini, conv1@0.5, {args.epochs} retrain epochs on {args.train_limit} images, "
              f"{args.rounds} rounds of {args.trials} trials per mode, 1 thread per trial, "
              f"{torch.get_num_threads()} cores seen")
        # Rounds alternate in-process and Ray batches of the same trials, so machine noise hits both alike.
        seconds = {"in-process": 0.0, "--workers 1": 0.0, "--workers 2": 0.0}
        in_process, batch, ray_start = InProcessExecutor(), specs[:args.trials], {}
        timed(in_process, context, specs[:1], 1)
        for workers in (1, 2):
            started = time.perf_counter()
            with RayExecutor(recipe.execution, workers) as executor:
                ray_start[workers] = time.perf_counter() - started
                timed(executor, context, specs[:workers], workers)
                for _ in range(args.rounds):
                    seconds["in-process"] += timed(in_process, context, batch, 0) / 2
                    seconds[f"--workers {workers}"] += timed(executor, context, batch, 0)
                if workers == 1:
                    round_trip = empty_task_round_trip()
        rates = {mode: args.trials * args.rounds / total * 3600 for mode, total in seconds.items()}
        print(f"Ray local start: {ray_start[1]:.1f} s (1 worker), {ray_start[2]:.1f} s (2 workers)")
        for mode, rate in rates.items():
            print(f"{mode:<12} {rate:8.0f} trials/hour")
        per_trial = 3600 / rates["--workers 1"] - 3600 / rates["in-process"]
        print(f"Ray overhead per trial (--workers 1 minus in-process): {per_trial * 1000:+.0f} ms; "
              f"empty Ray task round trip: {round_trip * 1000:.1f} ms")
        print(f"speed-up --workers 2 / --workers 1 = {rates['--workers 2'] / rates['--workers 1']:.2f}x "
              "(target >= 1.8x); --workers 2 / in-process = "
              f"{rates['--workers 2'] / rates['in-process']:.2f}x")
        figures = {"trials_per_hour": rates, "ray_start_s": ray_start, "ray_overhead_ms": per_trial * 1000}
        if packs:
            figures.update(pack_on_gpu(recipe, context, specs, packs, args.trials, args.device))
        save_figures(args, figures)


def pack_on_gpu(recipe, context, specs, packs: list[int], trials: int, device: str = "cuda") -> dict:
    """Trials/hour with k trials at once per GPU (``gpus_per_trial`` = 1/k), or on the CPU for ``device='cpu'``."""
    from hfprune.study.executors.ray_tasks import RayExecutor

    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if device == "cuda" and not gpus:
        print("--pack: no GPU here; skipped")
        return {"pack_skipped": "no GPU"}
    where = f"GPU x {gpus} GPU(s)" if gpus else "CPU"
    rates = {}
    for per_gpu in packs:
        execution = recipe.execution.model_copy(update={"gpus_per_trial": 1 / per_gpu, "cpus_per_trial": 1})
        workers = per_gpu * max(1, gpus)
        with RayExecutor(execution, workers) as executor:
            rates[per_gpu] = trials / timed(executor, context, specs[:workers + trials], workers) * 3600
        print(f"{per_gpu} trial(s) per {where}: {rates[per_gpu]:8.0f} trials/hour "
              f"({rates[per_gpu] / rates[packs[0]]:.2f}x {packs[0]} per {'GPU' if gpus else 'CPU'})")
    return {"pack_device": device, "gpus": gpus, "packed_trials_per_hour": rates,
            "packing_speedup": {k: rate / rates[packs[0]] for k, rate in rates.items()}}


if __name__ == "__main__":
    main()
