"""ViT-B/16 heads + FFN pruning at 0.5: what it saves, and what mask swapping saves.

Run by hand (random weights, no download):

    python benchmarks/vit_pruning.py [--device cpu|cuda] [--k 10] [--images 16] [--batch 1,8]

Part 1 — the real ViT-B/16 architecture (google/vit-base-patch16-224's config, 1000 classes) pruned
at 0.5 heads and 0.5 FFN neurons in all 12 layers (L1 criterion): parameters, analytic MACs, and
inference latency pruned/dense, measured in one run, dense and pruned alternating, medians.

Part 2 — the pruned train loss of K masks: one model with unit gates whose mask tensors are
swapped (hfprune.pruning.structured.gates) vs. K weight-masked model copies (what a copy per mask costs).
Each variant runs in its own fresh process so its peak memory (ru_maxrss on CPU, the CUDA
allocator's peak on GPU) is its own; a baseline process that only builds the dense model and the
data is subtracted.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers import ViTConfig, ViTForImageClassification

from hfprune.models import get_adapter
from hfprune.models.vit.adapter import vit_macs
from hfprune.pruning.structured.groups import expand_ratios
from hfprune.pruning.structured.importance import criterion_mask
from hfprune.pruning.structured.gates import pruned_losses
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.samplers import sample

RATIOS = {"heads": 0.5, "ffn": 0.5}


def dense_vit(device: str) -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(num_labels=1000)).to(device).eval()  # ViT-B/16, 224 px


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def latency(models: dict, batch: int, device: str, repeats: int) -> dict[str, float]:
    x = torch.randn(batch, 3, 224, 224, device=device)
    times = {name: [] for name in models}
    for model in models.values():  # warm-up
        model(x)
    for _ in range(repeats):
        for name, model in models.items():  # alternate, so drift hits both alike
            sync(device)
            started = time.perf_counter()
            model(x)
            sync(device)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def part1(args) -> None:
    adapter = get_adapter("vit")
    dense = dense_vit(args.device)
    groups = adapter.groups(dense.config)
    pruned = adapter.prune_physically(dense, criterion_mask("l1", dense, groups, RATIOS)).eval()
    params = [sum(p.numel() for p in m.parameters()) for m in (dense, pruned)]
    macs = [vit_macs(m.config)["total"] for m in (dense, pruned)]
    print(f"ViT-B/16 pruned at heads=0.5, ffn=0.5 in all 12 layers ({args.device}, {torch.get_num_threads()} threads)")
    print(f"  heads per layer {pruned.config.num_attention_heads_per_layer[0]}/12, "
          f"FFN {pruned.config.intermediate_size_per_layer[0]}/3072")
    print(f"  parameters  dense {params[0]:>13,}  pruned {params[1]:>13,}  ratio {params[1] / params[0]:.3f}")
    print(f"  MACs/image  dense {macs[0]:>13,}  pruned {macs[1]:>13,}  ratio {macs[1] / macs[0]:.3f}")
    for batch in args.batch:
        t = latency({"dense": dense, "pruned": pruned}, batch, args.device, args.repeats)
        print(f"  latency batch {batch:>3}: dense {t['dense'] * 1e3:8.1f} ms  pruned {t['pruned'] * 1e3:8.1f} ms  "
              f"ratio {t['pruned'] / t['dense']:.3f}  (median of {args.repeats}, alternating)")


def kmask_worker(mode: str, k: int, images: int, batch: int, device: str) -> dict:
    """One variant in this (fresh) process; prints JSON with its time and peak memory."""
    torch.manual_seed(1)
    dense = dense_vit(device)
    groups = get_adapter("vit").groups(dense.config)
    data = [(torch.randn(batch, 3, 224, 224, device=device), torch.randint(0, 1000, (batch,), device=device))
            for _ in range(images // batch)]
    masks = [c.mask for c in sample(groups, expand_ratios(groups, RATIOS), "bench", k, seed=0)]

    @torch.no_grad()
    def loss(model) -> float:
        total = sum(torch.nn.functional.cross_entropy(model(x).logits, y, reduction="sum").item() for x, y in data)
        return total / (len(data) * batch)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.max_memory_allocated()
    sync(device)
    started = time.perf_counter()
    losses: list[float] = []
    if mode == "swap":
        losses = pruned_losses(dense, groups, masks, loss)
    elif mode == "copies":
        copies = []
        for mask in masks:  # K pruned models alive at once, as a copy-per-mask evaluation holds them
            model = copy.deepcopy(dense)
            MaskedParameters(model, parameter_masks(groups, mask, dict(model.named_parameters()))).apply()
            copies.append(model)
        losses = [loss(model) for model in copies]
    sync(device)
    seconds = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"mode": mode, "seconds": seconds, "peak_rss": peak_rss, "losses": losses}
    if device.startswith("cuda"):
        result["peak_cuda"] = torch.cuda.max_memory_allocated() - base_cuda
    return result


def part2(args) -> None:
    runs = {}
    for mode in ("baseline", "swap", "copies"):
        command = [sys.executable, __file__, "--worker", mode, "--k", str(args.k), "--images", str(args.images),
                   "--eval-batch", str(args.eval_batch), "--device", args.device]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        runs[mode] = json.loads(output.strip().splitlines()[-1])
    swap, copies, base = runs["swap"], runs["copies"], runs["baseline"]
    same = max(abs(a - b) for a, b in zip(swap["losses"], copies["losses"]))
    print(f"\nPruned train loss of K={args.k} masks on {args.images} images (batch {args.eval_batch}), {args.device}")
    mib = 2**20
    for name, run in (("mask swapping, one model", swap), ("K weight-masked copies", copies)):
        extra = (run["peak_rss"] - base["peak_rss"]) / mib
        cuda = f", CUDA peak {run['peak_cuda'] / mib:8.0f} MiB" if "peak_cuda" in run else ""
        print(f"  {name:<26} {run['seconds']:7.2f} s   peak RSS over baseline {extra:8.0f} MiB{cuda}")
    print(f"  copies/swap: time {copies['seconds'] / swap['seconds']:.2f}x, extra memory "
          f"{(copies['peak_rss'] - base['peak_rss']) / mib:.0f} MiB vs {(swap['peak_rss'] - base['peak_rss']) / mib:.0f}"
          f" MiB; max |loss difference| {same:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", default="1,8", help="latency batch sizes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--k", type=int, default=10, help="masks (the paper's ViT study: 10)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--worker", choices=("baseline", "swap", "copies"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-part1", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(kmask_worker(args.worker, args.k, args.images, args.eval_batch, args.device)))
        return
    args.batch = [int(b) for b in args.batch.split(",")]
    if not args.skip_part1:
        part1(args)
    part2(args)


if __name__ == "__main__":
    main()
