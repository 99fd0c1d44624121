"""Batched greedy generation (hfprune's ``generate_batch``) vs. answering one sample at a time.

Same random TinyLLaVA-architecture model (SigLIP + GELU connector + Phi, small but not toy), same
samples, same number of new tokens (``min_new_tokens`` = ``max_new_tokens``, so neither side stops
early). Runs alternate (batched, one-by-one, ...) so machine noise hits both alike; the ratio of the
median times is printed. Target: >= 3x at batch 8.

    python benchmarks/generation_throughput.py [--samples 16] [--batch-size 8] [--new-tokens 32] [--repeats 3]
        [--image-size 224] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image

from hfprune.evaluation.benchmarks.base import BenchmarkSample
from hfprune.evaluation.generation import generate_batch
from hfprune.models.llava.tiny import tiny_llava

from figures import add_json_option, save_figures

# Phi-2's padded vocabulary (51,200 rows) and SigLIP's patch 14; 4 Phi layers of width 256.
CONFIG = {"image_size": 224, "patch_size": 14, "vision_hidden_size": 128, "hidden_size": 256, "num_layers": 4,
          "vocab_size": 51200}


def samples(n: int) -> list[BenchmarkSample]:
    words = "what is shown in the image and which colour does the large object on the left have".split()
    return [BenchmarkSample(f"s{i}", " ".join(words[: 6 + i % 10]) + "?\nAnswer the question using a single word.",
                            Image.new("RGB", (320 + 16 * i, 240), (17 * i % 256, 80, 200)), [])
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=CONFIG["image_size"], help="384 as in TinyLLaVA: 729 tokens")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_json_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = {**CONFIG, "image_size": args.image_size}
    model, processor = tiny_llava(**config)
    model.to(args.device).generation_config.min_new_tokens = args.new_tokens
    data = samples(args.samples)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {config}, {params / 1e6:.1f}M parameters, "
          f"{model.config.image_seq_length} image tokens; device {args.device}, {torch.get_num_threads()} threads")
    print(f"{args.samples} samples, {args.new_tokens} new tokens each, batch {args.batch_size}, {args.repeats} repeats")

    def batched() -> list[str]:
        return [out for start in range(0, len(data), args.batch_size)
                for out in generate_batch(model, processor, data[start:start + args.batch_size], args.new_tokens)]

    def one_by_one() -> list[str]:
        return [generate_batch(model, processor, [sample], args.new_tokens)[0] for sample in data]

    batched()  # warm-up
    times = {"batched": [], "one_by_one": []}
    for _ in range(args.repeats):
        for name, run in (("batched", batched), ("one_by_one", one_by_one)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs = run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            times.setdefault(f"{name}_outputs", outputs)
    medians = {name: statistics.median(times[name]) for name in ("batched", "one_by_one")}
    for name, seconds in medians.items():
        print(f"{name:>10}: median {seconds:.2f} s, {args.samples * args.new_tokens / seconds:.0f} tokens/s")
    same = times["batched_outputs"] == times["one_by_one_outputs"]
    speedup = medians["one_by_one"] / medians["batched"]
    print(f"speed-up of batch {args.batch_size}: {speedup:.2f}x (target >= 3x); same answers: {same}")
    save_figures(args, {"device": args.device, "image_tokens": model.config.image_seq_length,
                        "batch_size": args.batch_size, "speedup": speedup, "same_answers": same,
                        "tokens_per_second": {name: args.samples * args.new_tokens / seconds
                                              for name, seconds in medians.items()}})


if __name__ == "__main__":
    main()
