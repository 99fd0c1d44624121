"""Peak memory of Wanda and SparseGPT layer by layer from disk, against the whole model loaded and calibrated.

A random Llama-shape checkpoint (default TinyLlama-1.1B's shape: hidden 2048, 22 layers, FFN 5632, 32 heads with
4 key/value heads, vocabulary 32000 — 1.10B parameters, float32 on disk, 4.4 GB in 1 GB shards) is written to a
temporary folder by ``save_pretrained``. Then, per method, each in a process of its own so that its peak resident
memory (``VmHWM`` of /proc/self/status, the process's high-water mark of resident memory) is its own:

- ``disk`` — ``prune_from_disk``: the model built without weights, each decoder layer read from the shards, run on
  the calibration batches, pruned, written back into a copy of the checkpoint and dropped;
- ``whole`` — ``from_pretrained``, the method's masks on the whole model, masks applied, ``save_pretrained``: what
  ``hfprune prune unstructured`` does without ``--offload``. After its timing and peak are taken, it reads the disk
  run's output tensor by tensor and reports the largest |difference| of any weight.

Both calibrate on the same ``--samples`` random sequences of ``--seqlen`` tokens. Printed per method: the peak of
each, their ratio (target <= 0.25), the wall-time ratio (load, prune, write) and the max |difference| (0: the same
pruned weights, bit for bit). float32 is the default dtype on disk because CPUs without bf16 instructions compute
bf16 layers many times slower; the whole-model run then needs about 10 GB.

    OMP_NUM_THREADS=1 python benchmarks/offload_memory.py             # 1.1B parameters, ~10-30 minutes on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/offload_memory.py --tiny      # seconds: a 3-layer toy, for the tests
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024 ** 3
TINY = {"hidden": 64, "layers": 3, "intermediate": 96, "heads": 4, "kv_heads": 2, "vocab": 128, "samples": 2,
        "seqlen": 16, "batch_size": 2, "shard_size": "40KB"}


def peak_resident_bytes() -> int:
    """This process's high-water mark of resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_checkpoint(args: argparse.Namespace, folder: Path) -> None:
    """A random-weight Llama of the asked shape, saved in shards (run in its own process)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=max(2048, args.seqlen))
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()
    model.save_pretrained(folder, max_shard_size=args.shard_size)
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()),
                      "bytes": sum(p.numel() * p.element_size() for p in model.parameters())}))


def calibration(args: argparse.Namespace) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (args.samples, args.seqlen), generator=generator)
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in ids.split(args.batch_size)]


def run_disk(args: argparse.Namespace) -> dict:
    from hfprune.pruning.unstructured import method_from
    from hfprune.pruning.unstructured.offload import prune_from_disk

    batches, baseline = calibration(args), peak_resident_bytes()
    start = time.perf_counter()
    pruned = prune_from_disk(args.checkpoint, method_from(args.method), args.sparsity, args.out, calibration=batches)
    return {"seconds": time.perf_counter() - start, "peak": peak_resident_bytes(), "baseline": baseline,
            "pruned": sum(count for count, _ in pruned.counts.values())}


def run_whole(args: argparse.Namespace) -> dict:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from hfprune.pruning.masking import MaskedParameters
    from hfprune.pruning.unstructured import unstructured_masks

    batches, baseline = calibration(args), peak_resident_bytes()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint).eval()
    result = unstructured_masks(model, args.method, args.sparsity, calibration=batches)
    MaskedParameters(model, result.masks).apply()
    model.save_pretrained(args.out)
    figures = {"seconds": time.perf_counter() - start, "peak": peak_resident_bytes(), "baseline": baseline,
               "pruned": result.pruned}
    weights, largest, differing = dict(model.state_dict()), 0.0, 0
    compare = Path(args.compare)
    if (compare / "model.safetensors.index.json").is_file():
        index = json.loads((compare / "model.safetensors.index.json").read_text())["weight_map"]
    else:
        with safe_open(compare / "model.safetensors", framework="pt") as handle:
            index = dict.fromkeys(handle.keys(), "model.safetensors")
    for key, file in index.items():  # one tensor of the disk run's output at a time
        with safe_open(compare / file, framework="pt") as handle:
            other = handle.get_tensor(key)
        difference = float((weights[key].float() - other.float()).abs().max()) if other.numel() else 0.0
        largest, differing = max(largest, difference), differing + (not torch.equal(weights[key], other))
    return {**figures, "max_difference": largest, "differing_tensors": differing, "tensors": len(index)}


def child(args: argparse.Namespace, kind: str, method: str, checkpoint: Path, out: Path,
          compare: Path | None = None) -> dict:
    """One run in a fresh Python process (its own peak memory); its figures as a dict."""
    command = [sys.executable, __file__, "--child", kind, "--method", method, "--checkpoint", str(checkpoint),
               "--out", str(out), *(["--compare", str(compare)] if compare else []), *shared_flags(args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{kind} {method} failed:\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if "peak" in figures:  # as it goes, on stderr
        print(f"{method} {kind}: peak {figures['peak'] / GIB:.2f} GiB, {figures['seconds']:.1f} s", file=sys.stderr)
    return figures


def shared_flags(args: argparse.Namespace) -> list[str]:
    return ["--hidden", str(args.hidden), "--layers", str(args.layers), "--intermediate", str(args.intermediate),
            "--heads", str(args.heads), "--kv-heads", str(args.kv_heads), "--vocab", str(args.vocab),
            "--samples", str(args.samples), "--seqlen", str(args.seqlen), "--batch-size", str(args.batch_size),
            "--sparsity", str(args.sparsity), "--seed", str(args.seed), "--dtype", args.dtype,
            "--shard-size", args.shard_size]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--samples", type=int, default=4, help="calibration sequences")
    parser.add_argument("--seqlen", type=int, default=256, help="tokens per calibration sequence")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--shard-size", default="1GB", help="max_shard_size of the written checkpoint")
    parser.add_argument("--methods", default="wanda,sparsegpt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for the checkpoints [default: a temporary "
                                                                "one, removed after]")
    parser.add_argument("--tiny", action="store_true", help="a 3-layer toy that runs in seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    for name in ("--child", "--method", "--checkpoint", "--out", "--compare"):
        parser.add_argument(name, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse()
    if args.child == "write":
        return write_checkpoint(args, Path(args.out))
    if args.child in ("disk", "whole"):
        print(json.dumps((run_disk if args.child == "disk" else run_whole)(args)))
        return
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)  # --work DIR need not exist yet
    work = Path(tempfile.mkdtemp(prefix="offload_memory_", dir=args.work))
    try:
        source = work / "checkpoint"
        written = child(args, "write", "none", source, source)
        print(f"checkpoint: Llama, {args.layers} layers x hidden {args.hidden}, FFN {args.intermediate}, "
              f"{args.heads} heads ({args.kv_heads} key/value), vocabulary {args.vocab}: "
              f"{written['parameters'] / 1e9:.3f}B parameters, {args.dtype}, {written['bytes'] / GIB:.2f} GiB in "
              f"{len(list(source.glob('*.safetensors')))} shards; calibration {args.samples} x {args.seqlen} tokens; "
              f"sparsity {args.sparsity:g}\n")
        rows = {}
        for method in args.methods.split(","):
            disk = child(args, "disk", method, source, work / f"{method}-disk")
            whole = child(args, "whole", method, source, work / f"{method}-whole", compare=work / f"{method}-disk")
            assert disk["pruned"] == whole["pruned"], (method, disk["pruned"], whole["pruned"])
            rows[method] = {"disk": disk, "whole": whole}
            for folder in (work / f"{method}-disk", work / f"{method}-whole"):
                shutil.rmtree(folder)
        print("| method | peak RSS, whole model (GiB) | peak RSS, layer by layer from disk (GiB) | peak ratio | "
              "wall, whole (s) | wall, from disk (s) | wall ratio | max abs difference of the pruned weights |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for method, row in rows.items():
            disk, whole = row["disk"], row["whole"]
            print(f"| {method} | {whole['peak'] / GIB:.2f} | {disk['peak'] / GIB:.2f} | "
                  f"{disk['peak'] / whole['peak']:.3f} | {whole['seconds']:.1f} | {disk['seconds']:.1f} | "
                  f"{disk['seconds'] / whole['seconds']:.2f} | {whole['max_difference']:g} |")
        for method, row in rows.items():
            print(f"\n{method}: {row['whole']['differing_tensors']} of {row['whole']['tensors']} tensors differ; "
                  f"resident after imports (both runs): {row['disk']['baseline'] / GIB:.2f} GiB; peak ratio "
                  f"{row['disk']['peak'] / row['whole']['peak']:.3f} (target <= 0.25)", end="")
        print()
        if args.json is not None:
            args.json.write_text(json.dumps({"checkpoint": written, "runs": rows}, indent=1), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
