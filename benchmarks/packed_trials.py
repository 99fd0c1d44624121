"""Trials per hour, packed (``hfprune.train.packed.train_packed``) vs one at a time (``hfprune.train.trainer.train``).

1. Sparse-MLP trials as the cubist_spiral_quick recipe trains them (its width, data size, batch, optimizer and
   schedule; each trial its own initialisation, seed and random mask of the recipe's middle budget): K trials
   packed vs trials one after another, at every K of ``--packs``. Trials per hour are for the recipe's whole
   training (its epochs), measured on ``--epochs`` and scaled.
2. LeNet5-Mini trials (masked, half of conv1's filters; the bundled MNIST sample; batch 128; SGD m0.9):
   packed vs one at a time at every K of ``--lenet-packs``. On a CPU the sequential runs are expected to win.
3. With ``--device cuda``: LeNet5-Mini and ResNet56 (random CIFAR-size images) at ``--convnet-packs``: images
   per second and trials per hour, pack 1 being ``train()`` itself; a pack that runs out of memory says so.

Packed and sequential runs alternate (A B, B A, ...) so noise hits both alike; min and median over ``--repeats``
are printed with the median ratio. One thread on a CPU (``OMP_NUM_THREADS=1``). ``--cpu-dry-run`` runs every
part on tiny sizes in seconds (for the tests).

    OMP_NUM_THREADS=1 python benchmarks/packed_trials.py [--packs 1,8,64,256] [--lenet-packs 8,32] [--repeats 3]
    python benchmarks/packed_trials.py --device cuda [--convnet-packs 1,8,32,128] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import yaml

from figures import add_json_option, save_figures
from hfprune.train.sections import TrainingSection
from hfprune.data.base import TensorImageSet
from hfprune.data.spiral import load_spiral
from hfprune.evaluation.classification import binary_loss
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.packed import PackedJob, train_packed
from hfprune.train.trainer import train

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "cubist_spiral_quick.yaml"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trials:
    """Trial k of a kind: its model (a fresh copy of its initialisation), its masks and its seed."""

    def __init__(self, build: Callable[[int], torch.nn.Module], masks: Callable[[torch.nn.Module, int], dict] | None,
                 dataset, section: TrainingSection, loss_fn):
        self.build, self.make_masks, self.dataset, self.section, self.loss_fn = build, masks, dataset, section, loss_fn
        self.starts: dict[int, tuple[torch.nn.Module, dict | None]] = {}

    def start(self, k: int) -> tuple[torch.nn.Module, MaskedParameters | None]:
        if k not in self.starts:
            model = self.build(k)
            self.starts[k] = (model, self.make_masks(model, k) if self.make_masks else None)
        model, masks = self.starts[k]
        model = copy.deepcopy(model)
        return model, (MaskedParameters(model, masks) if masks is not None else None)

    def sequential(self, count: int, device: torch.device) -> float:
        """Seconds per trial, ``count`` trials one after another through ``train()``."""
        runs = [self.start(k) for k in range(count)]
        _sync(device)
        started = time.perf_counter()
        for k, (model, masks) in enumerate(runs):
            train(model, self.dataset, self.section, self.loss_fn, seed=k, masks=masks, progress=False)
        _sync(device)
        return (time.perf_counter() - started) / count

    def packed(self, count: int, device: torch.device) -> float:
        """Seconds per trial, ``count`` trials as one pack."""
        jobs = []
        for k in range(count):
            model, masks = self.start(k)
            jobs.append(PackedJob(model, self.section, k, masks))
        _sync(device)
        started = time.perf_counter()
        train_packed(jobs, self.dataset, self.loss_fn, device=device, progress=False)
        _sync(device)
        return (time.perf_counter() - started) / count


def compare(trials: Trials, packs: list[int], repeats: int, device: torch.device, sequential_cap: int,
            scale: float) -> dict:
    """Per pack size: seconds per trial packed and sequential (min, median), trials/hour (median) and the ratio."""
    rows = {}
    trials.packed(min(packs), device), trials.sequential(1, device)  # warm up
    for size in packs:
        times = {"packed": [], "sequential": []}
        for repeat in range(repeats):
            order = ("packed", "sequential") if repeat % 2 == 0 else ("sequential", "packed")
            for name in order:
                if name == "packed":
                    times[name].append(trials.packed(size, device))
                else:
                    times[name].append(trials.sequential(min(size, sequential_cap), device))
        median = {name: statistics.median(values) for name, values in times.items()}
        rows[size] = {"packed_s": (min(times["packed"]), median["packed"]),
                      "sequential_s": (min(times["sequential"]), median["sequential"]),
                      "packed_per_hour": 3600 / (median["packed"] * scale),
                      "sequential_per_hour": 3600 / (median["sequential"] * scale),
                      "ratio": median["sequential"] / median["packed"]}
    return rows


def print_rows(title: str, rows: dict) -> None:
    print(title)
    print(f"  {'K':>5}{'packed s/trial':>17}{'sequential s/trial':>21}{'packed /h':>12}{'sequential /h':>15}"
          f"{'packed/seq':>12}")
    for size, row in rows.items():
        packed, sequential = row["packed_s"], row["sequential_s"]
        print(f"  {size:>5}{packed[0]:8.4f} {packed[1]:8.4f}{sequential[0]:10.4f} {sequential[1]:10.4f}"
              f"{row['packed_per_hour']:12.0f}{row['sequential_per_hour']:15.0f}{row['ratio']:11.2f}x")
    print("  (s/trial: min and median over the repeats; per hour and ratio: medians)")


def mlp_part(args, device: torch.device) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    widths = recipe["model"]["config"]["hidden_sizes"]
    training = recipe["training"]
    points = args.points or recipe["data"]["train_limit"]
    data = load_spiral(train_limit=points).train if points < 50_000 else load_spiral().train
    section = TrainingSection(**{**training, "epochs": args.epochs})
    budget = sorted(recipe["sparse"]["budgets"])[len(recipe["sparse"]["budgets"]) // 2]
    adapter = get_adapter("sparse_mlp")

    def build(k: int) -> torch.nn.Module:
        torch.manual_seed(1000 + k)
        return adapter.build(adapter.config(0, 0, 0, {"hidden_sizes": widths}))

    def masks(model: torch.nn.Module, k: int) -> dict:
        weights = adapter.prunable_weights(model)
        flat = torch.zeros(sum(w.numel() for w in weights.values()), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(k))[:budget]] = True
        out, offset = {}, 0
        for name, weight in weights.items():
            out[name] = flat[offset:offset + weight.numel()].view(weight.shape).clone()
            offset += weight.numel()
        return out

    trials = Trials(build, masks, data, section, binary_loss)
    rows = compare(trials, args.packs, args.repeats, device, args.sequential_cap, training["epochs"] / args.epochs)
    steps = math.ceil(len(data) / section.batch_size) * args.epochs
    print_rows(f"sparse MLP 2-{'-'.join(map(str, widths))}-1 (cubist_spiral_quick), {len(data)} points, batch "
               f"{section.batch_size}, {budget} weights kept, measured on {args.epochs} epoch(s) ({steps} steps); "
               f"trials/hour for the recipe's {training['epochs']} epochs, device {device}", rows)
    return rows


def _lenet_trials(args, device: torch.device) -> Trials:
    from hfprune.data.registry import load_image_classification
    from hfprune.pruning.structured.groups import parameter_masks

    data = load_image_classification("mnist_sample", train_limit=args.lenet_images)
    adapter = get_adapter("lenet5_mini")
    section = TrainingSection(epochs=args.epochs, batch_size=128,
                              optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4})

    def build(k: int) -> torch.nn.Module:
        torch.manual_seed(k)
        return adapter.build(adapter.config(data.num_labels, data.channels, data.image_size, {}))

    def masks(model: torch.nn.Module, k: int) -> dict:
        kept = tuple(sorted(torch.randperm(10, generator=torch.Generator().manual_seed(k))[:5].tolist()))
        return parameter_masks(adapter.groups(model.config), {"conv1": kept}, dict(model.named_parameters()))

    return Trials(build, masks, data.train, section, classification_loss)


def lenet_part(args, device: torch.device) -> dict:
    trials = _lenet_trials(args, device)
    rows = compare(trials, args.lenet_packs, args.repeats, device, args.sequential_cap, 1.0)
    print_rows(f"LeNet5-Mini, conv1 at 0.5 (a random mask per trial), {len(trials.dataset)} MNIST-sample images, "
               f"batch 128, {args.epochs} epoch(s) per trial, device {device}", rows)
    return rows


def convnet_throughput(name: str, trials: Trials, packs: list[int], device: torch.device, repeats: int) -> dict:
    """Images per second and trials per hour (of the measured epochs) at each pack size; 1 = train()."""
    images = len(trials.dataset) * trials.section.epochs
    rows = {}
    trials.sequential(1, device)  # warm up
    for size in packs:
        try:
            seconds = [trials.sequential(1, device) if size == 1 else trials.packed(size, device)
                       for _ in range(repeats)]
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows[size] = {"out_of_memory": True}
            print(f"  {name} pack {size}: out of device memory")
            break
        best = min(seconds)
        rows[size] = {"s_per_trial": best, "images_per_s": images / best, "trials_per_hour": 3600 / best}
    base = rows.get(1, {}).get("trials_per_hour")
    print(f"{name}: {len(trials.dataset)} images x {trials.section.epochs} epoch(s) per trial, batch "
          f"{trials.section.batch_size}, device {device} (best of {repeats})")
    for size, row in rows.items():
        if "out_of_memory" in row:
            continue
        speedup = f"{row['trials_per_hour'] / base:8.2f}x" if base else ""
        print(f"  pack {size:>4}: {row['s_per_trial']:9.4f} s/trial {row['images_per_s']:12.0f} images/s "
              f"{row['trials_per_hour']:10.0f} trials/h {speedup}")
    return rows


def convnet_part(args, device: torch.device) -> dict:
    lenet = _lenet_trials(args, device)
    figures = {"lenet5_mini": convnet_throughput("LeNet5-Mini", lenet, args.convnet_packs, device, args.repeats)}
    adapter = get_adapter("resnet_cifar")
    generator = torch.Generator().manual_seed(0)
    data = TensorImageSet(torch.randn(args.resnet_images, 3, 32, 32, generator=generator),
                          torch.randint(10, (args.resnet_images,), generator=generator))
    section = TrainingSection(epochs=1, batch_size=128,
                              optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4})

    def build(k: int) -> torch.nn.Module:
        torch.manual_seed(k)
        return adapter.build(adapter.config(10, 3, 32, {"depth": args.resnet_depth}))

    resnet = Trials(build, None, data, section, classification_loss)
    figures[f"resnet{args.resnet_depth}"] = convnet_throughput(f"ResNet{args.resnet_depth}", resnet,
                                                               args.convnet_packs, device, args.repeats)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=_ints, default=[1, 8, 64, 256], help="sparse-MLP pack sizes ('' skips)")
    parser.add_argument("--lenet-packs", type=_ints, default=[8, 32], help="LeNet5-Mini pack sizes on a CPU ('' skips)")
    parser.add_argument("--convnet-packs", type=_ints, default=[1, 8, 32, 128], help="pack sizes with --device cuda")
    parser.add_argument("--points", type=int, default=None, help="spiral points [the recipe's train_limit]")
    parser.add_argument("--epochs", type=int, default=1, help="epochs measured per trial")
    parser.add_argument("--lenet-images", type=int, default=1024)
    parser.add_argument("--resnet-images", type=int, default=1024)
    parser.add_argument("--resnet-depth", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential-cap", type=int, default=8,
                        help="sequential trials timed per repeat (their time per trial does not depend on K)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpu-dry-run", action="store_true", help="every part on tiny sizes, on the CPU, in seconds")
    add_json_option(parser)
    args = parser.parse_args()
    if args.cpu_dry_run:
        args.device, args.packs, args.lenet_packs, args.convnet_packs = "cpu", [1, 2], [2], [1, 2]
        args.points, args.lenet_images, args.resnet_images, args.resnet_depth = 400, 64, 32, 8
        args.repeats, args.sequential_cap = 1, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # train() on the CPU too, even beside a GPU
    print(f"torch threads {torch.get_num_threads()}, device {device}")
    figures: dict = {"device": str(device), "threads": torch.get_num_threads()}
    if args.packs:
        figures["sparse_mlp"] = mlp_part(args, device)
    if device.type == "cpu" and args.lenet_packs:
        figures["lenet5_mini"] = lenet_part(args, device)
    if device.type == "cuda" or args.cpu_dry_run:
        figures["convnets"] = convnet_part(args, device)
    save_figures(args, figures)


if __name__ == "__main__":
    main()
