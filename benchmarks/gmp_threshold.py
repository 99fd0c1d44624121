"""GMP masks on a >=1B-weight decoder: hfprune's streaming radix select vs. torch's global_unstructured.

A Phi-like stack of random Linear weights (per layer q, k, v, dense: h×h; fc1: 4h×h; fc2: h×4h; the
default 24 layers × h=2048 ≈ 1.21B weights) is pruned by each, side by side in one run
(``--repeats`` alternating runs; medians):

- ours: ``unstructured_masks(model, "gmp", S)`` — exact k-th smallest |w| by a two-pass radix select over
  float32 bit patterns, per-layer temporaries, bool masks;
- torch: ``torch.nn.utils.prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)``
  — concatenates every score, topk over all of them, float masks and a masked copy of every weight.

Both must prune the same count at the same threshold (the masks may differ only among weights tied at the
threshold). Peak memory is the RSS high-water mark above the starting RSS, sampled in a thread every 2 ms
(CPU), or ``torch.cuda.max_memory_allocated`` above the starting allocation (CUDA). torch's peak is about
46 bytes per weight at S = 0.4375 (measured); when that does not fit in the available memory its run is skipped.

    python benchmarks/gmp_threshold.py                        # ~1.2B weights, fp32, CPU
    python benchmarks/gmp_threshold.py --hidden 1024          # ~0.3B, small enough for torch on 24 GB
    python benchmarks/gmp_threshold.py --hidden 2560 --layers 32 --device cuda   # Phi-2's decoder shape
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import threading
import time
from contextlib import contextmanager

import psutil
import torch
from torch import nn
from torch.nn.utils import prune

from hfprune.models.llava.layout import PHI_DECODER_LINEARS
from hfprune.pruning.structured.groups import num_pruned
from hfprune.pruning.unstructured import select_targets, unstructured_masks

from figures import add_json_option, save_figures

GIB = 1024 ** 3


class PhiLikeLayer(nn.Module):
    def __init__(self, hidden: int, dtype: torch.dtype):
        super().__init__()
        def linear(fan_in: int, fan_out: int) -> nn.Linear:
            return nn.Linear(fan_in, fan_out, bias=False, device="meta", dtype=dtype)

        attention = ("q_proj", "k_proj", "v_proj", "dense")
        self.self_attn = nn.ModuleDict({name: linear(hidden, hidden) for name in attention})
        self.mlp = nn.ModuleDict({"fc1": linear(hidden, 4 * hidden), "fc2": linear(4 * hidden, hidden)})


def build_decoder(hidden: int, layers: int, dtype: torch.dtype, device: str, seed: int) -> nn.Module:
    """Random N(0, 0.02) weights named like a HF Llava's language model (``model.language_model.layers.N…``)."""
    model = nn.Module()
    model.model = nn.Module()
    model.model.language_model = nn.Module()
    model.model.language_model.layers = nn.ModuleList(PhiLikeLayer(hidden, dtype) for _ in range(layers))
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
    return model


class PeakMemory:
    """High-water mark of memory above the level at entry: RSS sampled in a thread (CPU) or CUDA's counter."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak_bytes = 0

    def _current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else psutil.Process().memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._high = max(self._high, self._current())
            time.sleep(0.002)

    def __enter__(self):
        gc.collect()
        if not self.cuda and hasattr(ctypes.CDLL(None), "malloc_trim"):
            ctypes.CDLL(None).malloc_trim(0)  # hand freed heap back, or later allocations reuse it unseen by RSS
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = self._high = self._current()
        self._stop = threading.Event()
        self._thread = None if self.cuda else threading.Thread(target=self._sample, daemon=True)
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self._high = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self._high = max(self._high, self._current())
        self.peak_bytes = self._high - self._start


@contextmanager
def timed(device: str):
    clock = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    yield clock
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    clock["seconds"] = time.perf_counter() - start


def run_ours(model: nn.Module, sparsity: float, device: str):
    with PeakMemory(device) as memory, timed(device) as clock:
        result = unstructured_masks(model, "gmp", sparsity, targets=PHI_DECODER_LINEARS)
    return result, clock["seconds"], memory.peak_bytes


def run_torch(model: nn.Module, pruned: int, device: str):
    params = [(linear, "weight") for linear in select_targets(model, PHI_DECODER_LINEARS).values()]
    with PeakMemory(device) as memory, timed(device) as clock:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=pruned)
    return clock["seconds"], memory.peak_bytes


def undo_torch_pruning(model: nn.Module) -> None:
    """Give every Linear its dense weight back (``prune.remove`` would keep the pruned one)."""
    for linear in select_targets(model, PHI_DECODER_LINEARS).values():
        hooks = [key for key, hook in linear._forward_pre_hooks.items() if isinstance(hook, prune.BasePruningMethod)]
        for key in hooks:
            del linear._forward_pre_hooks[key]
        dense = linear._parameters.pop("weight_orig")
        del linear._buffers["weight_mask"]
        del linear.weight
        linear.weight = dense


@torch.no_grad()
def compare(model: nn.Module, result) -> dict:
    """Pruned counts, torch's threshold (largest pruned |w|) and where the two masks differ."""
    torch_pruned, torch_threshold, differ, differ_off_ties = 0, 0.0, 0, 0
    for name, linear in select_targets(model, PHI_DECODER_LINEARS).items():
        ours = result.masks[f"{name}.weight"].to(linear.weight_mask.device)
        theirs = linear.weight_mask.bool()
        magnitude = linear.weight_orig.abs().float()
        torch_pruned += int((~theirs).sum())
        if (~theirs).any():
            torch_threshold = max(torch_threshold, float(magnitude[~theirs].max()))
        different = ours != theirs
        differ += int(different.sum())
        differ_off_ties += int((different & (magnitude != result.threshold)).sum())
    return {"torch_pruned": torch_pruned, "torch_threshold": torch_threshold, "differ": differ,
            "differ_off_ties": differ_off_ties}


def torch_fits(weights: int, sparsity: float, device: str) -> tuple[bool, float]:
    """Whether torch's run fits: measured ~46 bytes per weight at S = 0.4375 (scores, masks, topk, copies)."""
    needed = weights * (36 + 24 * sparsity)
    available = (torch.cuda.mem_get_info()[0] if device.startswith("cuda")
                 else psutil.virtual_memory().available)
    return needed < 0.9 * available, needed / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--sparsity", type=float, default=0.4375)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-torch", action="store_true", help="measure ours only")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; medians are printed")
    add_json_option(parser)
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    model = build_decoder(args.hidden, args.layers, dtype, args.device, args.seed)
    weights = sum(parameter.numel() for parameter in model.parameters())
    k = num_pruned(weights, args.sparsity)
    print(f"decoder: {args.layers} layers × h={args.hidden}, {weights / 1e9:.3f}B weights ({args.dtype}, "
          f"{args.device}), built in {time.perf_counter() - start:.1f} s; pruning k = {k:,} (S = {args.sparsity})")

    fits, torch_needs = torch_fits(weights, args.sparsity, args.device)
    skip = "--skip-torch" if args.skip_torch else None
    if not fits and not skip:
        skip = f"needs ~{torch_needs:.1f} GiB, more than is available"
    ours, theirs = [], []
    for repeat in range(args.repeats):
        if repeat and not skip:
            undo_torch_pruning(model)
        result = None
        result, *measured = run_ours(model, args.sparsity, args.device)
        ours.append(measured)
        assert result.pruned == k, (result.pruned, k)
        if not skip:
            theirs.append(run_torch(model, k, args.device))
    our_seconds, our_peak = (statistics.median(values) for values in zip(*ours))
    rows = [("time (s)", f"{our_seconds:.2f}"), ("peak memory (GiB)", f"{our_peak / GIB:.2f}"),
            ("pruned", f"{result.pruned:,}"), ("threshold", f"{result.threshold:.9g}")]
    figures = {"device": args.device, "dtype": args.dtype, "weights": weights, "pruned": result.pruned,
               "threshold": result.threshold, "ours_seconds": our_seconds, "ours_peak_gib": our_peak / GIB}
    if skip:
        save_figures(args, {**figures, "torch_skipped": skip})
        print(f"torch global_unstructured skipped ({skip})\n")
        print("| | ours (GMP radix select) |\n|---|---:|")
        for label, value in rows:
            print(f"| {label} | {value} |")
        return

    torch_seconds, torch_peak = (statistics.median(values) for values in zip(*theirs))
    check = compare(model, result)
    torch_column = [f"{torch_seconds:.2f}", f"{torch_peak / GIB:.2f}", f"{check['torch_pruned']:,}",
                    f"{check['torch_threshold']:.9g}"]
    ratios = [f"{our_seconds / torch_seconds:.3f}", f"{our_peak / torch_peak:.3f}",
              "same" if check["torch_pruned"] == result.pruned else "DIFFERENT",
              "same" if check["torch_threshold"] == result.threshold else "DIFFERENT"]
    save_figures(args, {**figures, "torch_seconds": torch_seconds, "torch_peak_gib": torch_peak / GIB,
                        "time_ratio": our_seconds / torch_seconds, "memory_ratio": our_peak / torch_peak,
                        "same_count": check["torch_pruned"] == result.pruned,
                        "same_threshold": check["torch_threshold"] == result.threshold,
                        "differ_off_ties": check["differ_off_ties"]})
    print(f"medians of {args.repeats} alternating run(s)\n")
    print("| | ours (GMP radix select) | torch global_unstructured | ours/torch |\n|---|---:|---:|---:|")
    for (label, value), other, ratio in zip(rows, torch_column, ratios):
        print(f"| {label} | {value} | {other} | {ratio} |")
    print(f"\nmasks differ at {check['differ']:,} weights, {check['differ_off_ties']:,} of them not tied at the "
          "threshold (torch breaks ties in topk's order, ours by layer then index)")
    print("per run (s, GiB): ours " + ", ".join(f"{t:.2f}/{m / GIB:.2f}" for t, m in ours)
          + "; torch " + ", ".join(f"{t:.2f}/{m / GIB:.2f}" for t, m in theirs))

if __name__ == "__main__":
    main()
