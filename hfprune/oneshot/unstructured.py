"""One-shot unstructured pruning of a checkpoint: ``hfprune prune MODEL --method ump --sparsity 0.4375``.

Zeroes single weights of the model family's target Linears (for TinyLLaVA: the language model's decoder
Linears) with any registered unstructured method — calibration-aware ones (Wanda, OWL, SparseGPT) on LLaVA-1.5
conversations with their images, SparseGPT updating the kept weights too — in any N:M pattern the method
allows (``--pattern 2:4``), and writes a checkpoint of the same class that plain
``transformers`` loads, its processor, a model card with the overall and per-layer sparsity, and
``hfprune_pruning.json`` with the facts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from hfprune.errors import HfpruneError
from hfprune.io import save_atomically
from hfprune.models import adapter_for_checkpoint
from hfprune.models.base import UnstructuredAdapter
from hfprune.export.cards import unstructured_card
from hfprune.oneshot.structured import check_out_dir
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured import method_from
from hfprune.pruning.unstructured.offload import check_offload, empty_model, prune_from_disk, prune_on_cpu
from hfprune.report.sparsity import mask_counts, sparsity_facts


def load_unstructured(source: str, empty: bool = False) -> tuple[UnstructuredAdapter, torch.nn.Module, Any]:
    """(adapter, model in eval mode in its saved dtype — ``empty``: without weights, on the meta device —, processor
    or None) of an unstructured family's checkpoint."""
    adapter = adapter_for_checkpoint(source)
    if not isinstance(adapter, UnstructuredAdapter):
        raise HfpruneError(f"model '{source}' is a {adapter.name} model, which hfprune prunes structurally: use "
                           "--structure (unstructured methods prune LLaVA checkpoints; convert TinyLLaVA first with "
                           "hfprune convert tinyllava SRC --out DIR)")
    model = empty_model(source) if empty else adapter.load_pretrained(source)
    return adapter, model, adapter.load_processor(source, required=False)


def instruction_subset(data_path: str, image_root: str | None, processor, model, samples: int, seed: int):
    """``samples`` conversations of a LLaVA-1.5 JSON (a deterministic subset in ``seed``), tokenised for ``model``."""
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
    options: dict[str, Any] | None = None,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    calibration_data: str | None = None,
    image_root: str | None = None,
    calibration_samples: int = 128,
    loss_samples: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    offload: str | None = None,
) -> dict[str, Any]:
    """Prune ``source`` with ``method`` (its ``options`` validated by the method's class) at ``sparsity`` and write
    the result to ``out``; returns the facts.

    With ``calibration_data`` (a LLaVA-1.5 JSON, images included), calibration-aware methods (wanda, owl,
    sparsegpt, activation scores) read ``calibration_samples`` of it in batches of ``batch_size``, and
    ``loss_samples`` > 0 measures the pruned train loss on that many. ``device`` (e.g. ``cuda``) is where the
    model is scored, calibrated and masked [default: where it loads, the CPU]. ``offload`` (``cpu`` or ``disk``)
    puts one decoder layer at a time on ``device`` and keeps the rest on the CPU, or on disk: read block by block
    from ``source``'s safetensors files and written back the same way into ``out``
    (:mod:`hfprune.pruning.unstructured.offload`).
    """
    chosen = method_from(method, **(options or {}))
    target_device = _device(device) if device is not None else None
    if not 0 < sparsity < 1:
        raise HfpruneError(f"--sparsity must be in (0, 1), got {sparsity}")
    chosen.check_sparsity(sparsity)
    if offload is not None:
        check_offload(chosen, offload, source)
    how = "--calibration-data LLAVA_JSON with --image-root DIR"
    if chosen.needs_calibration and calibration_data is None:
        raise HfpruneError(f"--method {method} with these options calibrates on data: give {how}")
    if loss_samples > 0 and calibration_data is None:
        raise HfpruneError(f"--loss-samples needs {how}")
    if loss_samples > 0 and offload == "disk":
        raise HfpruneError("--loss-samples runs the whole pruned model, which --offload disk never loads: use "
                           "--offload cpu, or drop --loss-samples")
    out = check_out_dir(out, source)
    adapter, model, processor = load_unstructured(source, empty=offload == "disk")
    if target_device is not None and offload is None:
        model.to(target_device)
    calibration = loss_set = None
    if calibration_data is not None:
        from hfprune.train.trainer import make_loader

        calibration_set = instruction_subset(calibration_data, image_root, processor, model, calibration_samples, seed)
        if chosen.needs_calibration:
            calibration = make_loader(calibration_set, batch_size, shuffle=False, seed=seed)
        if loss_samples:
            loss_set = instruction_subset(calibration_data, image_root, processor, model, loss_samples, seed + 1)
    partial = out.with_name(out.name + ".partial")
    if offload == "disk":  # weights read and written block by block; the rest below writes beside them
        pruned = prune_from_disk(source, chosen, sparsity, partial, calibration=calibration, targets=targets,
                                 ignore=ignore, device=target_device, model=model, progress=progress)
        counts, parameters, nonzero = pruned.counts, pruned.parameters, pruned.nonzero
    else:
        result = (prune_on_cpu(model, chosen, sparsity, calibration=calibration, device=target_device,
                               targets=targets, ignore=ignore, progress=progress) if offload == "cpu" else
                  chosen.masks(model, sparsity, targets=targets, ignore=ignore, calibration=calibration,
                               progress=progress))
        MaskedParameters(model, result.masks).apply()
        counts = mask_counts(result.masks)
        parameters = sum(param.numel() for param in model.parameters())
        nonzero = sum(int(torch.count_nonzero(param)) for param in model.parameters())
    metrics, directions = {}, {}
    if loss_set is not None:
        from hfprune.evaluation.lm_loss import pruned_train_loss

        measured = pruned_train_loss(model, loss_set, batch_size=batch_size, progress=progress)
        metrics = {"pruned_train_loss": measured["loss"], "pruned_train_tokens": measured["tokens"]}
        directions = {"pruned_train_loss": False}
    pattern = chosen.pattern
    command = f"hfprune prune {source} --method {method} --sparsity {sparsity:g}" + \
        (f" --pattern {pattern}" if pattern else "")
    facts = {"source": source, "family": adapter.name,
             "title": f"{source} — {method.upper()} at sparsity {sparsity:g}{f' ({pattern})' if pattern else ''} "
                      "(hfprune)",
             "method": method, "requested_sparsity": sparsity, "pattern": pattern, "command": command, "seed": seed,
             "targets": list(targets) if targets else None, "ignore": list(ignore), "metrics": metrics,
             "higher_is_better": directions, "parameters": parameters, "nonzero_parameters": nonzero,
             "model_class": type(model).__name__, "options": chosen.options(),
             **sparsity_facts(counts), "out": str(out)}

    def write_companions(folder: Path) -> None:
        if processor is not None:
            processor.save_pretrained(folder)
        unstructured_card(facts, adapter).write(folder)
        (folder / "hfprune_pruning.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")

    if offload == "disk":
        write_companions(partial)
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    else:
        save_atomically(model, out, extras=[write_companions])
    return facts


def _device(name: str) -> torch.device:
    """``name`` as a torch device this machine has; a bad or missing one is an HfpruneError naming --device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HfpruneError(f"--device '{name}' is not a torch device; give cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HfpruneError(f"--device {name}: torch sees no CUDA GPU here; drop --device to prune on the CPU")
    return device
