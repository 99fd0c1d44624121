"""Cost of the batched CIFAR augmentation (4-pixel pad + random 32x32 crop + flip) next to a ResNet56 step.

One SGD step (forward, backward, update) of ResNet56 on a CIFAR-size batch, with and without the
augmentation that ``data.augment: [pad_crop, hflip]`` applies to the batch on the device first. The two
alternate (A B, B A, ...) so machine noise hits both alike; medians after a warmup, and their ratio (target:
<= 1.02, i.e. the augmentation costs at most 2% of a step).

    python benchmarks/cifar_augment.py                          # CPU
    python benchmarks/cifar_augment.py --device cuda --batch 128 --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hfprune.data.cifar import CIFAR10_MEAN, CIFAR10_STD, batch_augmentation
from hfprune.models import get_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    adapter = get_adapter("resnet_cifar")
    model = adapter.build(adapter.config(10, 3, 32, {"depth": args.depth})).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    augment = batch_augmentation(("pad_crop", "hflip"), CIFAR10_MEAN, CIFAR10_STD)
    pixels = torch.randn(args.batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(augmented: bool) -> float:
        sync()
        start = time.perf_counter()
        x = augment(pixels) if augmented else pixels
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start

    def augment_only() -> float:
        sync()
        start = time.perf_counter()
        augment(pixels)
        sync()
        return time.perf_counter() - start

    times = {True: [], False: [], "aug": []}
    for i in range(args.warmup + args.steps):
        order = (True, False) if i % 2 == 0 else (False, True)
        measured = {flag: step(flag) for flag in order}
        aug = augment_only()
        if i >= args.warmup:
            for flag, seconds in measured.items():
                times[flag].append(seconds)
            times["aug"].append(aug)
    plain, augmented, aug = (statistics.median(times[k]) for k in (False, True, "aug"))
    print(f"ResNet{args.depth} step, batch {args.batch} on {device}: plain {plain * 1e3:.1f} ms, "
          f"augmented {augmented * 1e3:.1f} ms, ratio {augmented / plain:.3f}; "
          f"augmentation alone {aug * 1e3:.2f} ms = {aug / plain:.2%} of a step")


if __name__ == "__main__":
    main()
