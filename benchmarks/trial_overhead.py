"""Overhead of one hfprune trial vs. a bare PyTorch loop doing the same work.

Same dense LeNet5-Mini, same bundled data, same mask, same epochs, batch size, optimiser and
schedule; both measure the pruned train loss, retrain with the mask enforced and evaluate on the
test set. Runs alternate (hfprune, bare, hfprune, bare, ...) so machine noise hits both alike;
the ratio of the medians is printed. Target: <= 1.10. ``--device cuda`` runs both on the GPU (the bare loop
with its data moved there once; hfprune's trial on the device Accelerate picks).

    python benchmarks/trial_overhead.py [--repeats 5] [--epochs 5] [--device cuda] [--train-limit N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from hfprune.study.oracle.plan import StructuredPlan, TrialSpec
from hfprune.data.registry import load_image_classification
from hfprune.models import get_adapter
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.pruning.structured.samplers import MaskCandidate
from hfprune.study.oracle.recipe import RetrainSection
from hfprune.train.sections import TrainingSection
from hfprune.study.tasks.image_classification import ImageClassificationTask
from hfprune.train.trainer import train
from hfprune.study.oracle.trial import run_trial

from bare_loop import masked_sgd_epochs
from figures import add_json_option, save_figures

MASK = {"conv1": (0, 2, 4, 6, 8)}


def bare_trial(dense, groups_masks, data, epochs: int, batch_size: int, lr: float, milestone: int,
               device: str = "cpu") -> float:
    """The same trial written directly in PyTorch on ``device``; returns the final test accuracy."""
    model = copy.deepcopy(dense).to(device)
    groups_masks = {name: keep.to(device) for name, keep in groups_masks.items()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in groups_masks.items():
            params[name].mul_(keep)

    def evaluate(images, labels):
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(pixel_values=images[i:i + 1000]).logits for i in range(0, len(images), 1000)])
        model.train()
        return torch.nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(-1) == labels).float().mean().item()

    train_x, train_y = data.train.images.to(device), data.train.labels.to(device)
    test_x, test_y = data.test.images.to(device), data.test.labels.to(device)
    evaluate(train_x, train_y)  # pruned train loss
    evaluate(test_x, test_y)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = -(-len(train_y) // batch_size)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [milestone * steps_per_epoch], 0.1)
    masked_sgd_epochs(model, train_x, train_y, groups_masks, optimizer, schedule, batch_size, epochs)
    evaluate(train_x, train_y)
    return evaluate(test_x, test_y)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both trials run there)")
    parser.add_argument("--train-limit", type=int, default=None, help="train on a subset of the 4,000 images")
    add_json_option(parser)
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # hfprune's trainer and trial on the CPU even beside a GPU
    elif not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device here")

    data = load_image_classification("mnist_sample", train_limit=args.train_limit)
    task = ImageClassificationTask(data, eval_batch_size=1000)
    adapter = get_adapter("lenet5_mini")
    torch.manual_seed(0)
    dense = adapter.build(adapter.config(data.num_labels, data.channels, data.image_size, {}))
    pretrain = TrainingSection(epochs=3, batch_size=128, optimizer={"name": "sgd", "lr": 0.02, "momentum": 0.9})
    train(dense, data.train, pretrain, task.loss_fn(pretrain), seed=0, progress=False)
    groups = adapter.groups(dense.config)
    masks = parameter_masks(groups, MASK, dict(dense.named_parameters()))
    retrain = RetrainSection(epochs=args.epochs, batch_size=256,
                             optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
                             schedule={"name": "multistep", "milestones": [max(1, args.epochs - 1)]})
    spec = TrialSpec(MaskCandidate("bench", MASK), 0)
    plan = StructuredPlan(adapter, groups, recipe=None)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    hfprune_s, bare_s = [], []
    for _ in range(args.repeats):
        sync()
        started = time.perf_counter()
        record, model = run_trial(spec, dense, plan.masks, task, retrain, study_seed=0, progress=False)
        sync()
        hfprune_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare_acc = bare_trial(dense, masks, data, args.epochs, 256, 0.01, max(1, args.epochs - 1), args.device)
        sync()
        bare_s.append(time.perf_counter() - started)
    trial_device = next(model.parameters()).device.type

    hf, bare = statistics.median(hfprune_s), statistics.median(bare_s)
    print(f"trial: LeNet5-Mini, conv1@0.5, {args.epochs} retrain epochs on {len(data.train)} images, "
          f"{args.repeats} alternating repeats, {torch.get_num_threads()} threads")
    print(f"hfprune trial  median {hf:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in hfprune_s)})")
    print(f"bare PyTorch   median {bare:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in bare_s)})")
    print(f"final test acc: hfprune {record.metrics['final_test_acc']:.4f}, bare {bare_acc:.4f}")
    print(f"overhead ratio hfprune/bare = {hf / bare:.3f}  (target <= 1.10); hfprune's trial ran on {trial_device}")
    save_figures(args, {"device": args.device, "trial_device": trial_device, "ratio": hf / bare,
                        "hfprune_seconds": hf, "bare_seconds": bare,
                        "final_test_acc": {"hfprune": record.metrics["final_test_acc"], "bare": bare_acc}})


if __name__ == "__main__":
    main()
