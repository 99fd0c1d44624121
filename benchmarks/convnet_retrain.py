"""ConvNet retraining speed: hfprune's trainer vs a bare PyTorch loop, physically pruned vs masked.

1. One ResNet56 CIFAR-size retraining epoch (random 32x32 images, 10 classes) through
   ``hfprune.train.trainer.train`` vs a bare PyTorch loop doing the same steps (SGD m0.9 wd5e-4, batch 128).
   Target: ratio <= 1.10.
2. ResNet56 pruned at stages [0, 0.5, 0.5, 0.5] (first conv of every block): one epoch retraining the
   physically pruned model vs the masked dense-shaped one, both through hfprune's trainer.
3. The quickstart trial (LeNet5-Mini, conv1 at 0.5, the quickstart recipe's retraining, bundled MNIST sample):
   the retraining of a whole hfprune trial, physical and masked, vs a bare loop that retrains the physically
   pruned LeNet and a bare loop with masks. Target: hfprune physical / bare physical <= 1.10.

Runs alternate so machine noise hits every variant alike; medians are printed side by side. On a CPU shared
with other work, set OMP_NUM_THREADS=1 (oversubscribed threads slow every variant many times over).

    OMP_NUM_THREADS=1 python benchmarks/convnet_retrain.py [--images 1024] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import yaml

from hfprune.study.oracle.recipe import RetrainSection
from hfprune.train.sections import TrainingSection
from hfprune.data.base import TensorImageSet
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.groups import kept_counts, parameter_masks
from hfprune.pruning.structured.samplers import MaskCandidate
from hfprune.study.oracle.physical import retraining_shrink
from hfprune.study.oracle.plan import StructuredPlan, TrialSpec
from hfprune.study.oracle.trial import run_trial
from hfprune.train.trainer import train

from bare_loop import masked_sgd_epochs

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_epochs(model, images, labels, epochs: int, batch_size: int, optimizer_args: dict,
                masks: dict[str, torch.Tensor] | None = None, milestones: list[int] = ()) -> float:
    """Retrain ``model`` in a plain PyTorch loop (masks: gradients and weights multiplied after each step)."""
    device = images.device
    params = dict(model.named_parameters())
    masks = {name: mask.to(device, params[name].dtype) for name, mask in (masks or {}).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=optimizer_args["lr"], momentum=optimizer_args["momentum"],
                                weight_decay=optimizer_args["weight_decay"])
    steps_per_epoch = -(-len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [m * steps_per_epoch for m in milestones], 0.1)
    model.train()
    _sync(device)
    started = time.perf_counter()
    masked_sgd_epochs(model, images, labels, masks, optimizer, schedule, batch_size, epochs)
    _sync(device)
    return time.perf_counter() - started


def hfprune_epochs(model, dataset, section: TrainingSection, masks: MaskedParameters | None = None) -> float:
    device = next(model.parameters()).device
    _sync(device)
    started = time.perf_counter()
    train(model, dataset, section, classification_loss, seed=0, masks=masks, progress=False)
    _sync(device)
    return time.perf_counter() - started


def _median_line(label: str, runs: list[float], unit: str = "s") -> str:
    return f"  {label:<34} median {statistics.median(runs):8.3f} {unit}  (runs: {', '.join(f'{t:.3f}' for t in runs)})"


def resnet56_part(args, device: torch.device) -> None:
    adapter = get_adapter("resnet_cifar")
    torch.manual_seed(0)
    dense = adapter.build(adapter.config(10, 3, 32, {"depth": 56})).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(10, (args.images,), generator=generator).to(device)
    section = TrainingSection(epochs=1, batch_size=128, optimizer=SGD)
    groups = adapter.groups(dense.config)
    counts = kept_counts(groups, {"stage1": 0.5, "stage2": 0.5, "stage3": 0.5})  # Table A2: [0, 0.5, 0.5, 0.5]
    mask = {name: tuple(range(0, 2 * keep, 2)) for name, keep in counts.items()}
    physical = adapter.prune_physically(dense, mask)
    times = {"hfprune dense": [], "bare dense": [], "hfprune physical": [], "hfprune masked": []}
    warmup = 128  # a first round on a few batches warms up allocator and kernels, and is dropped
    for repeat in range(args.repeats + 1):
        n = min(warmup, args.images) if repeat == 0 else args.images
        subset, x, y = TensorImageSet(images[:n], labels[:n]), images[:n], labels[:n]
        round_times = {
            "hfprune dense": hfprune_epochs(copy.deepcopy(dense), subset, section),
            "bare dense": bare_epochs(copy.deepcopy(dense), x, y, 1, 128, SGD),
            "hfprune physical": hfprune_epochs(copy.deepcopy(physical), subset, section),
        }
        masked_model = copy.deepcopy(dense)
        masked = MaskedParameters(masked_model, parameter_masks(groups, mask, dict(masked_model.named_parameters())))
        round_times["hfprune masked"] = hfprune_epochs(masked_model, subset, section, masked)
        if repeat:
            for key, value in round_times.items():
                times[key].append(value)
    params = (sum(p.numel() for p in dense.parameters()), sum(p.numel() for p in physical.parameters()))
    macs = (adapter.macs(dense.config), adapter.macs(physical.config))
    median = {key: statistics.median(value) for key, value in times.items()}
    print(f"ResNet56, {args.images} random 32x32 images, batch 128, one epoch, {args.repeats} alternating repeats, "
          f"device {device}, {torch.get_num_threads()} threads")
    for key, value in times.items():
        print(_median_line(key, value))
    rates = {key: args.images / value for key, value in median.items()}
    print("  images/s: " + ", ".join(f"{key} {rate:.0f}" for key, rate in rates.items()))
    print(f"  trainer overhead hfprune/bare (dense)    = {median['hfprune dense'] / median['bare dense']:.3f}"
          f"  (target <= 1.10)")
    print(f"  pruned stages [0, .5, .5, .5]: params {params[0]} -> {params[1]}, MACs {macs[0]} -> {macs[1]}")
    print(f"  speed physical vs masked (masked/physical) = "
          f"{median['hfprune masked'] / median['hfprune physical']:.3f}")


def quickstart_part(args) -> None:
    from hfprune.data.registry import load_image_classification
    from hfprune.study.tasks.image_classification import ImageClassificationTask

    recipe = yaml.safe_load(QUICKSTART.read_text())
    data = load_image_classification(recipe["data"]["dataset"], image_size=recipe["data"]["image_size"])
    task = ImageClassificationTask(data, eval_batch_size=recipe["evaluation"]["batch_size"])
    adapter = get_adapter("lenet5_mini")
    torch.manual_seed(0)
    dense = adapter.build(adapter.config(data.num_labels, data.channels, data.image_size, {}))
    pretrain = TrainingSection(epochs=3, batch_size=128, optimizer={"name": "sgd", "lr": 0.02, "momentum": 0.9})
    train(dense, data.train, pretrain, task.loss_fn(pretrain), seed=0, progress=False)
    groups = adapter.groups(dense.config)
    mask = {"conv1": (0, 2, 4, 6, 8)}
    spec = TrialSpec(MaskCandidate("bench", mask), 0)
    plan = StructuredPlan(adapter, groups, recipe=None)
    sections = {form: RetrainSection(**{**recipe["retrain"], "physical": form == "physical"})
                for form in ("physical", "masked")}
    retrain = sections["physical"]
    milestones = retrain.schedule.milestones
    parameter = parameter_masks(groups, mask, dict(dense.named_parameters()))
    physical_dense = adapter.prune_physically(dense, mask)
    optimizer_args = retrain.optimizer.model_dump()
    times = {"hfprune trial physical": [], "hfprune trial masked": [], "bare physical": [], "bare masked": []}
    wall = {"physical": [], "masked": []}
    images, labels = data.train.images, data.train.labels
    for _ in range(args.repeats):
        for form, section in sections.items():
            started = time.perf_counter()
            record, _ = run_trial(spec, dense, plan.masks, task, section, study_seed=0, progress=False,
                                  shrink=retraining_shrink(plan, spec, section))
            wall[form].append(time.perf_counter() - started)
            times[f"hfprune trial {form}"].append(record.timings["retrain_s"])
        times["bare physical"].append(bare_epochs(copy.deepcopy(physical_dense), images, labels, retrain.epochs,
                                                  retrain.batch_size, optimizer_args, milestones=milestones))
        masked_model = copy.deepcopy(dense)
        with torch.no_grad():
            for name, keep in parameter.items():
                masked_model.get_parameter(name).mul_(keep)
        times["bare masked"].append(bare_epochs(masked_model, images, labels, retrain.epochs, retrain.batch_size,
                                                optimizer_args, parameter, milestones))
    median = {key: statistics.median(value) for key, value in times.items()}
    print(f"quickstart trial: LeNet5-Mini, conv1@0.5, {retrain.epochs} retrain epochs on {len(data.train)} images, "
          f"batch {retrain.batch_size}, {args.repeats} alternating repeats (retraining time only)")
    for key, value in times.items():
        print(_median_line(key, value))
    print(_median_line("whole trial physical (wall)", wall["physical"]))
    print(_median_line("whole trial masked (wall)", wall["masked"]))
    bare = median["bare physical"]
    print(f"  hfprune physical / bare physical = {median['hfprune trial physical'] / bare:.3f}  (target <= 1.10)")
    print(f"  hfprune masked   / bare physical = {median['hfprune trial masked'] / bare:.3f}")
    print(f"  bare masked      / bare physical = {median['bare masked'] / bare:.3f}")
    print(f"  speed physical vs masked (hfprune masked/physical) = "
          f"{median['hfprune trial masked'] / median['hfprune trial physical']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024, help="random 32x32 images in the ResNet56 epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args()
    if not args.skip_quickstart:
        quickstart_part(args)
    resnet56_part(args, torch.device(args.device))


if __name__ == "__main__":
    main()
