"""hfprune's trainer vs. a bare PyTorch loop doing the same math: a sparse MLP and ResNet56, side by side.

The sparse-MLP studies train thousands of tiny models (2 → 16 → 16 → 16 → 1, 50,000 2-D points, batch 128,
SGD m0.9 wd5e-4, BCE-with-logits, the Cubist Spiral), so the trainer's fixed cost per step matters there; on
ResNet56 (CIFAR-size random images, batch 128) the step itself dominates. For each model three variants train
the same start for one epoch:

- ``trainer``: :func:`hfprune.train.trainer.train` as studies call it (its lean loop on one process);
- ``trainer/accelerate``: the same run with every step through Accelerate's wrapped optimizer, scheduler and
  loader (``trainer.LEAN_LOOP = False``: what the trainer did for every run before the lean loop; DDP, DeepSpeed,
  mixed precision and accumulation still take this path);
- ``bare``: a plain PyTorch loop (randperm, slicing, masked SGD) doing the same steps.

The MLP is masked (a random mask keeping 60 of its 560 weights); ResNet56 is dense. Runs alternate (A B C,
C B A, ...) so machine noise hits every variant alike; min and median over the repeats are printed with the
ratios to ``bare`` (target: trainer/bare <= 1.10).

    OMP_NUM_THREADS=1 python benchmarks/sparse_mlp_loop.py [--repeats 7] [--points 50000] [--resnet-images 256]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch

from bare_loop import masked_sgd_epochs, masked_sgd_step
from hfprune.data.base import TensorImageSet
from hfprune.data.spiral import PointSet, load_spiral
from hfprune.evaluation.classification import binary_loss, classification_loss
from hfprune.models import get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.train import trainer as trainer_module
from hfprune.train.trainer import train

WIDTH, BUDGET = 16, 60
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def bare_epoch(model, data: PointSet, masks, section: TrainingSection) -> None:
    """The same math as the trainer: shuffled batches, masked gradients and weights, SGD, constant lr."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=section.optimizer.lr, momentum=section.optimizer.momentum,
                                weight_decay=section.optimizer.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    float_masks = {name: mask.float() for name, mask in masks.items()}
    with torch.no_grad():
        for name, keep in float_masks.items():
            params[name].mul_(keep)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(order), section.batch_size):
        index = order[start:start + section.batch_size]
        batch = {"inputs": data.x[index], "labels": data.y[index]}
        masked_sgd_step(binary_loss(model, batch), params, float_masks, optimizer, schedule)


def through_accelerate(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` with the trainer's lean loop turned off (every step through Accelerate's wrappers)."""
    def wrapped() -> None:
        trainer_module.LEAN_LOOP = False
        try:
            run()
        finally:
            trainer_module.LEAN_LOOP = True
    return wrapped


def measure(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each run per repeat, the order of the runs reversed every other repeat, after one warm-up."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(reversed(runs))):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    return times


def report(title: str, times: dict[str, list[float]], steps: int) -> float:
    """Print min and median per variant and their ratios to ``bare``; returns the trainer/bare median ratio."""
    mins = {name: min(values) for name, values in times.items()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(title)
    print(f"  {'':20}{'min s':>9}{'median s':>10}{'µs/step':>9}{'min ratio':>11}{'median ratio':>14}")
    for name in times:
        print(f"  {name:20}{mins[name]:9.3f}{medians[name]:10.3f}{medians[name] / steps * 1e6:9.0f}"
              f"{mins[name] / mins['bare']:11.3f}{medians[name] / medians['bare']:14.3f}")
    return medians["trainer"] / medians["bare"]


def mlp_part(args) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    data = load_spiral(args.points).train
    section = TrainingSection(epochs=1, batch_size=128, optimizer=SGD)
    torch.manual_seed(0)
    adapter = get_adapter("sparse_mlp")
    start_model = adapter.build(adapter.config(0, 0, 0, {"hidden_sizes": [WIDTH] * 3}))
    weights = adapter.prunable_weights(start_model)
    flat = torch.zeros(sum(w.numel() for w in weights.values()), dtype=torch.bool)
    flat[torch.randperm(flat.numel(), generator=generator)[:BUDGET]] = True
    masks, offset = {}, 0
    for name, weight in weights.items():
        masks[name] = flat[offset:offset + weight.numel()].view(weight.shape).clone()
        offset += weight.numel()

    def trainer() -> None:
        model = copy.deepcopy(start_model)
        train(model, data, section, binary_loss, seed=0, masks=MaskedParameters(model, masks), progress=False)

    def bare() -> None:
        bare_epoch(copy.deepcopy(start_model), data, masks, section)

    steps = -(-len(data) // section.batch_size)
    times = measure({"trainer": trainer, "trainer/accelerate": through_accelerate(trainer), "bare": bare},
                    args.repeats)
    ratio = report(f"sparse MLP 2-{WIDTH}-{WIDTH}-{WIDTH}-1, {BUDGET} weights kept: one epoch of {len(data)} points, "
                   f"batch {section.batch_size} ({steps} steps)", times, steps)
    return ratio, statistics.median(times["trainer/accelerate"]) / statistics.median(times["bare"])


def resnet_part(args) -> tuple[float, float]:
    adapter = get_adapter("resnet_cifar")
    torch.manual_seed(0)
    dense = adapter.build(adapter.config(10, 3, 32, {"depth": 56}))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.resnet_images, 3, 32, 32, generator=generator)
    labels = torch.randint(10, (args.resnet_images,), generator=generator)
    data = TensorImageSet(images, labels)
    section = TrainingSection(epochs=1, batch_size=128, optimizer=SGD)

    def trainer() -> None:
        train(copy.deepcopy(dense), data, section, classification_loss, seed=0, progress=False)

    def bare() -> None:
        model = copy.deepcopy(dense)
        optimizer = torch.optim.SGD(model.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                    weight_decay=SGD["weight_decay"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model.train()
        masked_sgd_epochs(model, images, labels, {}, optimizer, schedule, section.batch_size, 1)

    steps = -(-len(data) // section.batch_size)
    times = measure({"trainer": trainer, "trainer/accelerate": through_accelerate(trainer), "bare": bare},
                    args.resnet_repeats)
    ratio = report(f"ResNet56 (dense): one epoch of {len(data)} random 32x32 images, batch {section.batch_size} "
                   f"({steps} steps)", times, steps)
    return ratio, statistics.median(times["trainer/accelerate"]) / statistics.median(times["bare"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="alternating repeats of the MLP epoch")
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--resnet-images", type=int, default=256, help="0 skips ResNet56")
    parser.add_argument("--resnet-repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; min and median over the repeats; ratios to bare")
    rows = {"sparse MLP": mlp_part(args)}
    if args.resnet_images:
        rows["ResNet56"] = resnet_part(args)
    print("trainer/bare (median):  " + "   ".join(f"{name} {lean:.3f} (accelerate loop {wrapped:.3f})"
                                                for name, (lean, wrapped) in rows.items()))


if __name__ == "__main__":
    main()
