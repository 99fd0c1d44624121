"""Do structurally pruned LLMs really run faster? Three random checkpoints of one Llama shape, run side by side
through ``hfprune bench``:

- ``dense``       — by default about 1.06B parameters: hidden 1536, FFN 6144, 28 layers, 16 query heads in 4 KV
                    groups (head dim 96), 32k vocabulary, untied LM head;
- ``ffn50_kv25``  — half of every layer's FFN neurons and a quarter of its KV groups (with their query heads)
                    removed: FFN 3072, 3 KV groups, 12 query heads;
- ``depth25``     — a quarter of the layers removed: 21 layers.

Why hidden 1536 and not Llama's 2048: transformers 5.23's ``LlamaConfig`` refuses a hidden size that is not a
multiple of the number of query heads, even with ``head_dim`` given, and removing a quarter of the KV groups leaves
three quarters of the heads (2048 with 32 → 24 heads is refused). Head dim 96 makes 16 and 12 heads both divide.

A uniform structured pruning leaves exactly these native configs of the same architecture (the pruned models save
as plain ``LlamaForCausalLM`` checkpoints), so random weights of those shapes measure what such a pruning saves.
The checkpoints are written once (``--save-dtype``, bfloat16 by default: 2.4 GB for the dense one) into ``--out`` and
reused; ``hfprune bench`` then loads all three (``--dtype``: float32 on the CPU by default, ~11.4 GB of weights at
once, since CPUs without bf16 instructions compute bf16 layers slowly and unevenly; bfloat16 on a GPU, ~5.7 GB) and
measures them interleaved.

Targets (the issue's done-when): decoder-layer parameters of ``ffn50_kv25`` ≤ 0.6× the dense model's and its decode
tokens/s ≥ 1.4×; ``depth25`` decode tokens/s ≥ 1.25×.

    OMP_NUM_THREADS=2 python benchmarks/llm_structured_speed.py                    # CPU, the figures of the issue
    python benchmarks/llm_structured_speed.py --device cuda --batch-size 8 --new-tokens 128
    python benchmarks/llm_structured_speed.py --hidden 48 --intermediate 128 --layers 4 --heads 4 --kv-heads 4 \\
        --vocab 512 --prompt-length 16 --new-tokens 4 --out /tmp/tiny                # a seconds-long check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {"ffn50_kv25_decoder_parameters": ("<=", 0.6), "ffn50_kv25_decode_speedup": (">=", 1.4),
           "depth25_decode_speedup": (">=", 1.25)}


def configs(args) -> dict:
    """The three Llama configs: dense, half the FFN and a quarter of the KV groups removed, a quarter of the layers
    removed (all other fields equal)."""
    from transformers import LlamaConfig

    head_dim = args.hidden // args.heads
    kv_kept = args.kv_heads - args.kv_heads // 4
    common = dict(vocab_size=args.vocab, hidden_size=args.hidden, head_dim=head_dim, max_position_embeddings=4096,
                  tie_word_embeddings=False)
    dense = dict(intermediate_size=args.intermediate, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                 num_key_value_heads=args.kv_heads)
    return {
        "dense": LlamaConfig(**common, **dense),
        "ffn50_kv25": LlamaConfig(**common, **{**dense, "intermediate_size": args.intermediate // 2,
                                               "num_key_value_heads": kv_kept,
                                               "num_attention_heads": args.heads // args.kv_heads * kv_kept}),
        "depth25": LlamaConfig(**common, **{**dense, "num_hidden_layers": args.layers - args.layers // 4}),
    }


def write_checkpoints(out: Path, args) -> dict[str, Path]:
    """Random checkpoints of the three configs in ``out`` (kept when one with the same config is there)."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    dtype = getattr(torch, args.save_dtype)
    paths = {}
    for name, config in configs(args).items():
        path = out / name
        paths[name] = path
        if (path / "config.json").is_file() and (path / "model.safetensors.index.json").is_file() or \
                (path / "model.safetensors").is_file():
            saved = AutoConfig.from_pretrained(path)
            if all(getattr(saved, key) == getattr(config, key) for key in (
                    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim")) and saved.dtype == dtype:
                print(f"reusing {path}", flush=True)
                continue
        started = time.perf_counter()
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # built in the saved dtype: the dense model never exists in float32
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(path)
        print(f"wrote {path}: {model.num_parameters() / 1e9:.3f}B parameters in {args.save_dtype} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        del model
    return paths


def judge(result: dict) -> dict:
    """The issue's figures and whether each target is met."""
    rows = {row["name"]: row for row in result["models"]}
    dense = rows["dense"]
    figures = {
        "ffn50_kv25_decoder_parameters": rows["ffn50_kv25"]["decoder_parameters"] / dense["decoder_parameters"],
        "ffn50_kv25_parameters": rows["ffn50_kv25"]["parameters"] / dense["parameters"],
        "ffn50_kv25_decode_speedup": rows["ffn50_kv25"]["decode_tokens_per_s"] / dense["decode_tokens_per_s"],
        "ffn50_kv25_prefill_speedup": rows["ffn50_kv25"]["prefill_tokens_per_s"] / dense["prefill_tokens_per_s"],
        "depth25_decoder_parameters": rows["depth25"]["decoder_parameters"] / dense["decoder_parameters"],
        "depth25_decode_speedup": rows["depth25"]["decode_tokens_per_s"] / dense["decode_tokens_per_s"],
        "depth25_prefill_speedup": rows["depth25"]["prefill_tokens_per_s"] / dense["prefill_tokens_per_s"],
        "dense_parameters": dense["parameters"],
        "dense_decode_tokens_per_s": dense["decode_tokens_per_s"],
    }
    figures["targets"] = {key: {"target": f"{op} {limit:g}", "value": figures[key],
                                "met": figures[key] <= limit if op == "<=" else figures[key] >= limit}
                          for key, (op, limit) in TARGETS.items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "llm_structured_speed",
                        help="where the checkpoints are written (and reused)")
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--intermediate", type=int, default=6144)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--save-dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="what hfprune bench loads and runs the models in [default: float32 on cpu, else bfloat16]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    kept_heads = args.heads // args.kv_heads * (args.kv_heads - args.kv_heads // 4)
    if args.kv_heads < 4 or args.heads % args.kv_heads or args.layers < 4 or args.hidden % args.heads \
            or args.hidden % kept_heads:
        raise SystemExit(f"--kv-heads must be at least 4 and divide --heads, --layers at least 4 (a quarter of each is "
                         f"removed), and --hidden a multiple of --heads and of the {kept_heads} heads kept "
                         "(transformers' LlamaConfig refuses others)")
    paths = write_checkpoints(args.out, args)
    if args.dtype is None:  # CPUs without bf16 instructions compute bf16 layers slower than float32 ones
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    bench_json = args.out / "bench.json"
    command = [sys.executable, "-m", "hfprune", "bench", *map(str, paths.values()), "--device", args.device,
               "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--prompt-length", str(args.prompt_length),
               "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--json", str(bench_json)]
    print("$ " + " ".join(command[1:]).replace(str(ROOT) + "/", ""), flush=True)
    finished = subprocess.run(command, cwd=ROOT, env={**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160")})
    if finished.returncode:
        raise SystemExit(f"hfprune bench exited with {finished.returncode}")
    result = json.loads(bench_json.read_text())
    figures = {**judge(result), "bench": result}
    for key, target in figures["targets"].items():
        print(f"{key}: {target['value']:.3f} (target {target['target']}: {'met' if target['met'] else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
