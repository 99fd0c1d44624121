"""Per-step cost of keeping pruning masks exact while retraining a decoder.

Two copies of the same small TinyLLaVA decoder (Phi layers) retrain on the same batches with AdamW, weight decay
and gradient clipping: one with its masks kept exact the way ``hfprune.train.trainer.train`` keeps them
(gradient hooks from ``MaskedParameters.attach`` + ``MaskedParameters.apply`` after every step), one without.
Their steps alternate (A B, B A, A B, ...) so machine noise hits both alike; after a warmup, the medians are
printed side by side with their ratio, per phase too. Target: <= 1.05.

The optimiser is the one hfprune's trainer builds (``build_optimizer``: fused AdamW). On the CPU, torch's
multi-tensor ``sqrt`` is some 30x slower on exact zeros than on other values, and Adam takes the square root of
its second moments, which stay exactly zero for pruned weights; the fused kernel does not have that problem. The
last line separates the cost of the enforcement itself (gradient hooks + ``apply``).

    python benchmarks/masked_step_overhead.py                       # CPU, small
    python benchmarks/masked_step_overhead.py --device cuda --hidden 1024 --layers 8 --batch 16 --seq 512 \\
        --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import statistics
import time

import torch

from hfprune.models.llava.tiny import build_tokenizer, tiny_llava_config
from hfprune.pruning.masking import MaskedParameters
from hfprune.train.sections import OptimizerSection
from hfprune.train.optim import build_optimizer

from figures import add_json_option, save_figures

TARGETS = re.compile(r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|dense)|mlp\.(fc1|fc2))\.weight")


def build(args) -> torch.nn.Module:
    from transformers import LlavaForConditionalGeneration

    config = tiny_llava_config(build_tokenizer(), hidden_size=args.hidden, num_layers=args.layers,
                               vocab_size=args.vocab)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    for module in (model.model.vision_tower, model.model.multi_modal_projector):
        module.requires_grad_(False)  # text-only retraining of the language model
    return model


def random_masks(model: torch.nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {name: torch.rand(param.shape, generator=generator) >= ratio
            for name, param in model.named_parameters() if TARGETS.fullmatch(name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--ratio", type=float, default=0.44, help="fraction of each decoder Linear weight pruned")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--steps", type=int, default=40, help="measured steps of each variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    add_json_option(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    optimizer_section = (OptimizerSection(name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4)
                         if args.optimizer == "sgd" else OptimizerSection(name="adamw", lr=1e-4, weight_decay=0.01))
    dense = build(args)
    masks = random_masks(dense, args.ratio)
    MaskedParameters(dense, masks).apply()  # both start from the same pruned weights
    variants = {}
    for name in ("without masks", "with masks"):
        model = copy.deepcopy(dense).to(device).train()
        optimizer = build_optimizer(model.parameters(), optimizer_section)  # as hfprune's trainer builds it
        masked = MaskedParameters(model, masks) if name == "with masks" else None
        if masked is not None:
            masked.apply()
            masked.attach()
        variants[name] = (model, optimizer, masked)

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, dense.config.text_config.vocab_size, (args.batch, args.seq), generator=generator).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.mixed_precision == "bf16"
                else contextlib.nullcontext())

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(model, optimizer, masked) -> list[float]:
        """Seconds of: forward + backward (the gradient hooks run here), clip + optimiser step, apply()."""
        marks = [time.perf_counter()]
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        sync()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        marks.append(time.perf_counter())
        if masked is not None:
            masked.apply()
            sync()
        marks.append(time.perf_counter())
        return [end - start for start, end in zip(marks, marks[1:])]

    times = {name: [] for name in variants}
    names = list(variants)
    sync()
    for index in range(args.warmup + args.steps):
        for name in names if index % 2 == 0 else reversed(names):
            phases = step(*variants[name])
            if index >= args.warmup:
                times[name].append(phases)

    masked = variants["with masks"][2]
    assert masked.violations() == 0
    masked.detach()

    total = sum(p.numel() for p in dense.parameters())
    masked_numel = sum(m.numel() for m in masks.values())
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; optimiser "
          f"{args.optimizer}; mixed precision {args.mixed_precision}")
    print(f"decoder: {args.layers} Phi layers x {args.hidden} hidden, {total / 1e6:.1f}M parameters, "
          f"{masked_numel / 1e6:.2f}M of them masked ({args.ratio:.0%} pruned); batch {args.batch} x {args.seq} tokens")
    print(f"{args.steps} measured steps per variant after {args.warmup} warmup, alternating; medians in ms")
    print(f"  {'':14s} {'step':>9s} {'fwd+bwd':>9s} {'clip+opt':>9s} {'apply':>9s}")
    medians = {}
    for name in names:
        steps = [sum(phases) for phases in times[name]]
        medians[name] = [statistics.median(steps)] + [statistics.median(p) for p in zip(*times[name])]
        print(f"  {name:14s} " + " ".join(f"{value * 1e3:9.2f}" for value in medians[name]))
    plain, kept = medians["without masks"], medians["with masks"]
    ratio = kept[0] / plain[0]
    enforcement = (kept[1] - plain[1] + kept[3]) / plain[0]  # hooks (inside fwd+bwd) + apply, per plain step
    print(f"ratio with/without: {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    print(f"mask enforcement alone (hooks + apply): {enforcement:+.1%} of a step; clip+optimiser ratio "
          f"{kept[2] / plain[2]:.2f}")
    save_figures(args, {"device": str(device), "mixed_precision": args.mixed_precision, "parameters": total,
                        "ratio": ratio, "enforcement_share": enforcement, "clip_optimizer_ratio": kept[2] / plain[2],
                        "median_ms": {name: value[0] * 1e3 for name, value in medians.items()}, "violations": 0})


if __name__ == "__main__":
    main()
