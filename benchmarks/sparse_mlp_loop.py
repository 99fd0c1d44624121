"""One epoch of a sparse MLP through hfprune's trainer vs. a bare PyTorch loop doing the same math.

The sparse-MLP studies train thousands of tiny models (2 → 16 → 16 → 16 → 1, 50,000 2-D points, batch 128,
SGD m0.9 wd5e-4, BCE-with-logits, the Cubist Spiral), so the trainer's fixed cost per step matters there. Both sides train the same
masked model (a random mask keeping 60 of the 560 weights) from the same start for one epoch; their runs
alternate (A B, B A, ...) so machine noise hits both alike, and the medians are printed side by side with their
ratio. A third row runs the bare loop on the trainer's DataLoader, to separate the loader's share; a fourth
runs the trainer with Accelerate's per-step package lookup cached: its ``AcceleratedOptimizer.step`` asks
``is_lomo_available()`` twice per step, an uncached ``importlib.util.find_spec`` over ``sys.path`` (a dozen
``stat`` calls) that costs about as much as this tiny model's whole forward and backward.

    OMP_NUM_THREADS=1 python benchmarks/sparse_mlp_loop.py [--repeats 5] [--points 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import time
import torch

from bare_loop import masked_sgd_step
from hfprune.train.sections import TrainingSection
from hfprune.data.spiral import PointSet, load_spiral
from hfprune.evaluation.classification import binary_loss
from hfprune.models import get_adapter
from hfprune.pruning.sparse_training.base import SparseRun
from hfprune.pruning.sparse_training.loop import train_masked
from hfprune.train.trainer import make_loader

WIDTH, BUDGET = 16, 60


def masked_step(model, params, masks, optimizer, schedule, batch) -> None:
    masked_sgd_step(binary_loss(model, batch), params, masks, optimizer, schedule)


def bare_epoch(model, data: PointSet, masks, section: TrainingSection, loader=None) -> None:
    """The same math as the trainer: shuffled batches, masked gradients and weights, SGD, constant lr."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=section.optimizer.lr, momentum=section.optimizer.momentum,
                                weight_decay=section.optimizer.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    float_masks = {name: mask.float() for name, mask in masks.items()}
    with torch.no_grad():
        for name, keep in float_masks.items():
            params[name].mul_(keep)
    if loader is not None:
        for batch in loader:
            masked_step(model, params, float_masks, optimizer, schedule, batch)
        return
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(order), section.batch_size):
        index = order[start:start + section.batch_size]
        masked_step(model, params, float_masks, optimizer, schedule,
                    {"inputs": data.x[index], "labels": data.y[index]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=50_000)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    data = load_spiral(args.points).train
    section = TrainingSection(epochs=1, batch_size=128,
                              optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4})
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
        run = SparseRun(model, adapter.prunable_weights(model), data, section, binary_loss, 0)
        train_masked(run, masks)

    def bare() -> None:
        bare_epoch(copy.deepcopy(start_model), data, masks, section)

    def bare_on_loader() -> None:
        bare_epoch(copy.deepcopy(start_model), data, masks, section,
                   loader=make_loader(data, section.batch_size, shuffle=True, seed=0))

    def trainer_lookup_cached() -> None:
        import accelerate.optimizer

        looked_up = accelerate.optimizer.is_lomo_available
        with contextlib.ExitStack() as undo:
            accelerate.optimizer.is_lomo_available = functools.cache(looked_up)
            undo.callback(setattr, accelerate.optimizer, "is_lomo_available", looked_up)
            trainer()

    runs = {"trainer": trainer, "bare": bare, "bare+loader": bare_on_loader, "trainer*": trainer_lookup_cached}
    times: dict[str, list[float]] = {name: [] for name in runs}
    trainer(), bare()  # warm up
    for repeat in range(args.repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(reversed(runs))):
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    steps = -(-args.points // section.batch_size)
    print(f"one epoch, {args.points} points, batch {section.batch_size} ({steps} steps), MLP 2-{WIDTH}-{WIDTH}-"
          f"{WIDTH}-1, {BUDGET} weights kept, torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'':14}{'seconds':>9}{'µs/step':>9}{'ratio':>7}")
    for name, seconds in medians.items():
        print(f"{name:14}{seconds:9.3f}{seconds / steps * 1e6:9.0f}{seconds / medians['bare']:7.2f}")
    print("trainer*: the trainer with accelerate.optimizer.is_lomo_available cached (measurement only)")


if __name__ == "__main__":
    main()
