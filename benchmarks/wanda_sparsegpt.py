"""Wanda and SparseGPT on a >=1B-weight decoder: time and peak memory, side by side with magnitude (UMP).

A random Phi decoder (transformers' ``PhiForCausalLM``; the default 24 layers × hidden 2048, FFN 8192 ≈ 1.21B
weights in the decoder Linears q, k, v, dense, fc1, fc2; a small vocabulary, since embeddings are not pruned)
is pruned at ``--sparsity`` over those Linears by, in one run and in this order:

- ``ump`` — magnitude per Linear (no calibration): the baseline;
- ``wanda`` — |w|·‖x‖₂ per output row, decoder layers calibrated in order on ``--samples`` random sequences of
  ``--seqlen`` tokens (two passes of every layer: statistics, then the pruned layer's outputs);
- ``sparsegpt`` — per Linear H = 2XXᵀ/n, Cholesky of H⁻¹, blocks of 128 columns with weight updates, same
  sequential calibration (last: it updates the weights in place).

``--pattern 2:4`` runs the N:M variants instead (sparsity 0.5). Peak memory is measured above the loaded model
(RSS sampled every 2 ms on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA), as in ``gmp_threshold.py``.
Every method must prune exactly the same count. For comparison, the papers report: SparseGPT prunes OPT-175B
in under 4.5 h on one A100-80GB (Frantar & Alistarh, 2023, abstract); Wanda's paper times the pruning-metric
computation for LLaMA-7B at about 203 s for SparseGPT against about 0.5 s for Wanda (Sun et al., 2023), i.e.
without the calibration forward passes, which both methods share.

    python benchmarks/wanda_sparsegpt.py                                  # ~1.2B weights, fp32, CPU
    python benchmarks/wanda_sparsegpt.py --hidden 2560 --layers 32 --samples 128 --seqlen 2048 --device cuda
                                                                          # Phi-2's decoder, the papers' setting
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import PhiConfig, PhiForCausalLM

from gmp_threshold import GIB, PeakMemory, timed
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured import select_targets, unstructured_masks

TARGETS = r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|dense)|mlp\.(fc1|fc2))"


def build_decoder(hidden: int, layers: int, device: str, seed: int) -> PhiForCausalLM:
    """A random-weight Phi decoder (N(0, 0.02) weights), in eval mode."""
    config = PhiConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                       num_attention_heads=hidden // 64, max_position_embeddings=4096)
    torch.manual_seed(seed)
    with torch.device(device):
        return PhiForCausalLM(config).eval()


def calibration_batches(samples: int, seqlen: int, batch_size: int, device: str, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1024, (samples, seqlen), generator=generator)
    return [{"input_ids": chunk.to(device), "attention_mask": torch.ones_like(chunk, device=device)}
            for chunk in ids.split(batch_size)]


def run(model, method: str, sparsity: float, calibration, pattern: str | None, device: str):
    options = {"granularity": pattern} if pattern else {}
    with PeakMemory(device) as memory, timed(device) as clock:
        result = unstructured_masks(model, method, sparsity, targets=TARGETS,
                                    calibration=calibration if method != "ump" else None, **options)
    return result, clock["seconds"], memory.peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--pattern", default=None, help="an N:M pattern, e.g. 2:4 (sets the sparsity to N/M)")
    parser.add_argument("--samples", type=int, default=4, help="calibration sequences")
    parser.add_argument("--seqlen", type=int, default=256, help="tokens per calibration sequence")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="ump,wanda,sparsegpt")
    args = parser.parse_args()

    sparsity = args.sparsity
    if args.pattern:
        n, m = map(int, args.pattern.split(":"))
        sparsity = n / m
    start = time.perf_counter()
    model = build_decoder(args.hidden, args.layers, args.device, args.seed)
    linears = select_targets(model, TARGETS)
    weights = sum(linear.weight.numel() for linear in linears.values())
    expected = {sum(num_pruned(linear.weight.numel(), sparsity) for linear in linears.values()),  # per Linear
                sum(linear.out_features * num_pruned(linear.in_features, sparsity) for linear in linears.values())}
    calibration = calibration_batches(args.samples, args.seqlen, args.batch_size, args.device, args.seed)
    print(f"decoder: {args.layers} layers × h={args.hidden}, {weights / 1e9:.3f}B target weights (float32, "
          f"{args.device}, {torch.get_num_threads()} threads), built in {time.perf_counter() - start:.1f} s; "
          f"sparsity {sparsity:g}{f' ({args.pattern})' if args.pattern else ''}; calibration {args.samples} × "
          f"{args.seqlen} tokens\n")

    rows = []
    for method in args.methods.split(","):  # sparsegpt last: it updates the weights in place
        result, seconds, peak = run(model, method, sparsity, calibration, args.pattern, args.device)
        assert result.pruned in expected, (method, result.pruned, expected)  # per Linear, or per row (wanda)
        rows.append((method, seconds, peak, result.pruned))
    base_seconds = rows[0][1]
    print(f"| method | time (s) | s per decoder layer | time / {rows[0][0]} | peak memory above the model (GiB) "
          "| pruned |\n|---|---:|---:|---:|---:|---:|")
    for method, seconds, peak, pruned in rows:
        print(f"| {method} | {seconds:.1f} | {seconds / args.layers:.2f} | {seconds / base_seconds:.1f} | "
              f"{peak / GIB:.2f} | {pruned:,} |")
    seconds = dict((method, seconds) for method, seconds, _, _ in rows)
    if "sparsegpt" in seconds and "wanda" in seconds:
        print(f"\nsparsegpt / wanda time: {seconds['sparsegpt'] / seconds['wanda']:.1f}x; per billion target weights: "
              + ", ".join(f"{method} {value / (weights / 1e9):.1f} s" for method, value in seconds.items()))


if __name__ == "__main__":
    main()
