"""One-shot unstructured pruning of a checkpoint: ``hfprune prune MODEL --method ump --sparsity 0.4375``.

Zeroes single weights of the language model's decoder Linears (UMP, GMP, ONP, PNP; STUDY.md §3) and writes a
checkpoint of the same class that plain ``transformers`` loads, its processor, a model card with the overall
and per-layer sparsity, and ``hfprune_pruning.json`` with the facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from hfprune.study.plan import sparsity_facts
from hfprune.io import quiet_hf_progress, save_atomically
from hfprune.errors import HfpruneError, reason
from hfprune.oneshot.cards import CARD, unstructured_card
from hfprune.oneshot.structured import UNSTRUCTURED_MODEL_TYPES, check_out_dir, model_type_of
from hfprune.pruning.masking import MaskedParameters


def load_vlm(source: str):
    """(model in eval mode, processor or None) of a Llava checkpoint, in the dtype it was saved in."""
    model_type = model_type_of(source)
    if model_type not in UNSTRUCTURED_MODEL_TYPES:
        raise HfpruneError(f"model '{source}' is of type '{model_type}'; unstructured methods prune "
                           f"{', '.join(UNSTRUCTURED_MODEL_TYPES)} checkpoints (convert TinyLLaVA first: "
                           "hfprune convert tinyllava SRC --out DIR); for ViT/LeNet use --structure")
    try:
        with quiet_hf_progress():
            model = LlavaForConditionalGeneration.from_pretrained(source, dtype="auto")
    except (OSError, ValueError, RuntimeError) as error:
        raise HfpruneError(f"cannot load model '{source}' as a Llava checkpoint ({reason(error)})") from None
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError):
        processor = None  # weights alone still make a complete checkpoint
    return model.eval(), processor


def _instruction_subset(data_path: str, image_root: str | None, processor, model, samples: int, seed: int):
    from torch.utils.data import Subset

    from hfprune.data.llava import load_llava_instructions, subsample

    if processor is None:
        raise HfpruneError("--calibration-data needs the model's processor (tokenizer and image processor) "
                           "saved beside it")
    if image_root is None:
        raise HfpruneError("--calibration-data needs --image-root, the folder its image paths are relative to")
    data = load_llava_instructions(data_path, image_root, processor,
                                   image_seq_length=getattr(model.config, "image_seq_length", None))
    return Subset(data, subsample(len(data), min(samples, len(data)), seed))


def prune_unstructured_checkpoint(
    source: str,
    method: str,
    sparsity: float,
    out: str | Path,
    *,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    lam: float = 0.08,
    outlier_m: float = 5.0,
    score: str = "weight",
    variance: float = 0.9,
    calibration_data: str | None = None,
    image_root: str | None = None,
    calibration_samples: int = 128,
    loss_samples: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Prune ``source`` with ``method`` at ``sparsity`` and write the result to ``out``; returns the facts.

    With ``calibration_data`` (a LLaVA-1.5 JSON), ONP's ``score="activation"`` reads ``calibration_samples``
    of it, and ``loss_samples`` > 0 measures the pruned train loss on that many.
    """
    from hfprune.pruning.unstructured import UNSTRUCTURED_METHODS, unstructured_masks

    if method not in UNSTRUCTURED_METHODS:
        raise HfpruneError(f"unknown unstructured method '{method}'; choose one of: {', '.join(UNSTRUCTURED_METHODS)}")
    if not 0 < sparsity < 1:
        raise HfpruneError(f"--sparsity must be in (0, 1), got {sparsity}")
    needs_data = score == "activation" or loss_samples > 0
    if needs_data and calibration_data is None:
        raise HfpruneError("--score activation and --loss-samples need --calibration-data LLAVA_JSON "
                           "with --image-root DIR")
    out = check_out_dir(out, source)
    model, processor = load_vlm(source)
    calibration = loss_set = None
    if calibration_data is not None:
        from hfprune.train.trainer import make_loader

        calibration_set = _instruction_subset(calibration_data, image_root, processor, model, calibration_samples, seed)
        if score == "activation":
            calibration = make_loader(calibration_set, batch_size, shuffle=False, seed=seed)
        if loss_samples:
            loss_set = _instruction_subset(calibration_data, image_root, processor, model, loss_samples, seed + 1)
    result = unstructured_masks(model, method, sparsity, targets=targets, ignore=ignore, lam=lam,
                                outlier_m=outlier_m, score=score, variance=variance, calibration=calibration,
                                progress=progress)
    MaskedParameters(model, result.masks).apply()
    metrics = {}
    if loss_set is not None:
        from hfprune.evaluation.lm_loss import pruned_train_loss

        measured = pruned_train_loss(model, loss_set, batch_size=batch_size, progress=progress)
        metrics = {"pruned_train_loss": measured["loss"], "pruned_train_tokens": measured["tokens"]}
    parameters = sum(param.numel() for param in model.parameters())
    nonzero = sum(int(torch.count_nonzero(param)) for param in model.parameters())
    command = f"hfprune prune {source} --method {method} --sparsity {sparsity:g}"
    facts = {"source": source, "title": f"{source} — {method.upper()} at sparsity {sparsity:g} (hfprune)",
             "method": method, "requested_sparsity": sparsity, "command": command, "seed": seed,
             "targets": list(targets) if targets else None, "ignore": list(ignore), "metrics": metrics,
             "parameters": parameters, "nonzero_parameters": nonzero, "model_class": type(model).__name__,
             "options": {"lam": lam, "outlier_m": outlier_m, "score": score, "variance": variance},
             **sparsity_facts(result.masks), "out": str(out)}

    def write_companions(folder: Path) -> None:
        if processor is not None:
            processor.save_pretrained(folder)
        (folder / CARD).write_text(unstructured_card(facts), encoding="utf-8")
        (folder / "hfprune_pruning.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")

    save_atomically(model, out, extras=[write_companions])
    return facts
