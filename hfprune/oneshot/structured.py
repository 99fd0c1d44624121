"""One-shot structured pruning of a checkpoint: ``hfprune prune MODEL --structure heads=0.5,ffn=0.5``.

Loads a local or Hub checkpoint of any structured family, picks a mask with a criterion, removes the pruned
units physically and writes a checkpoint that plain ``transformers`` loads (``trust_remote_code=True`` for the
per-layer-width classes), the source's image processor, and a model card with the facts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from hfprune.errors import HfpruneError, reason
from hfprune.io import quiet_hf_progress, save_atomically
from hfprune.models import adapter_for_checkpoint
from hfprune.models.base import StructuredAdapter
from hfprune.export.cards import structured_card
from hfprune.pruning.structured.groups import expand_ratios, kept_counts
from hfprune.pruning.structured.importance import get_importance


def parse_structure(text: str) -> dict[str, float]:
    """``heads=0.5,ffn=0.5,layers.3.heads=0.25`` → {key: ratio}; malformed text is an HfpruneError."""
    ratios: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            ratio = float(value)
        except ValueError:
            ratio = None
        if not sep or not key or ratio is None:
            raise HfpruneError(f"--structure: '{item}' is not KEY=RATIO (e.g. heads=0.5,ffn=0.5)")
        if not 0 <= ratio <= 1:
            raise HfpruneError(f"--structure: ratio of '{key}' must be in [0, 1], got {value.strip()}")
        ratios[key] = ratio
    if not ratios:
        raise HfpruneError("--structure: give at least one KEY=RATIO, e.g. heads=0.5,ffn=0.5")
    return ratios


def load_structured(source: str) -> tuple[StructuredAdapter, torch.nn.Module]:
    """(adapter, dense model in eval mode) of a local directory or Hub id of a structured family."""
    adapter = adapter_for_checkpoint(source)
    if not isinstance(adapter, StructuredAdapter):
        from hfprune.pruning.unstructured import METHODS

        raise HfpruneError(f"model '{source}' is a {adapter.name} model, which hfprune prunes unstructurally; use "
                           f"--method {'|'.join(METHODS)} --sparsity S")
    try:
        with quiet_hf_progress():  # keep stderr for the one-line errors
            model = adapter.load_pretrained(source)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # truncated or garbage weights too
        raise HfpruneError(f"cannot load model '{source}' as a {adapter.name} checkpoint ({reason(error)})") from None
    return adapter, model.eval()


def check_out_dir(out: str | Path, source: str) -> Path:
    """``out`` as a Path if it may receive a pruned checkpoint: new, empty, or an earlier prune output."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "hfprune_pruning.json").is_file())):
        raise HfpruneError(f"--out '{out}' exists and is not an earlier hfprune prune output; "
                           "choose a new or empty directory")
    if Path(source).exists() and out.resolve() == Path(source).resolve():
        raise HfpruneError("--out must differ from the source model directory")
    return out


def _copy_image_processor(source: str, out: Path) -> bool:
    local = Path(source) / "preprocessor_config.json"
    if local.is_file():
        shutil.copy2(local, out / "preprocessor_config.json")
        return True
    if Path(source).is_dir():
        return False
    try:
        from huggingface_hub import hf_hub_download

        shutil.copy2(hf_hub_download(source, "preprocessor_config.json"), out / "preprocessor_config.json")
        return True
    except Exception:  # noqa: BLE001 - no processor on the Hub (or offline): the checkpoint is still complete
        return False


def _count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_checkpoint(
    source: str,
    structure: str,
    method: str,
    out: str | Path,
    *,
    seed: int = 0,
    calibration_data: str | None = None,
    calibration_path: str | None = None,
    calibration_samples: int = 256,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Prune ``source`` and write the result to ``out``; returns the model card's facts."""
    importance = get_importance(method)
    ratios = parse_structure(structure)
    if importance.needs_calibration and calibration_data is None:
        raise HfpruneError(f"--method {method} needs --calibration-data DATASET (e.g. imagenet_1k with "
                           "--calibration-path DIR)")
    out = check_out_dir(out, source)
    adapter, model = load_structured(source)
    groups = adapter.groups(model.config)
    expand_ratios(groups, ratios)  # unknown keys and bad ratios fail before any work
    counts = kept_counts(groups, ratios)
    if all(counts[name] == groups[name].size for name in counts):
        raise HfpruneError(f"--structure {structure} prunes nothing (every ratio is 0); give a ratio above 0, "
                           "e.g. conv1=0.5")
    batches, calibration = None, None
    if calibration_data is not None:
        from hfprune.data.registry import load_image_classification
        from hfprune.train.trainer import make_loader

        image_size = getattr(model.config, "image_size", 224)  # HF ResNet configs have none (ImageNet: 224)
        data = load_image_classification(calibration_data, path=calibration_path,
                                         image_size=image_size if isinstance(image_size, int) else image_size[0],
                                         train_limit=calibration_samples, test_limit=1, limit_seed=seed,
                                         image_processor=source)
        batches = make_loader(data.train, batch_size, shuffle=False, seed=seed)
        calibration = f"{calibration_data} train split, {len(data.train)} images"
    from hfprune.evaluation.classification import classification_loss

    torch.manual_seed(seed)
    mask = importance.select(model, groups, counts, seed=seed, batches=batches, loss_fn=classification_loss)
    pruned = adapter.prune_physically(model, mask).eval()
    facts = {
        "source": source, "family": adapter.name, "method": method, "seed": seed, "structure": ratios,
        "calibration": calibration,
        "command": f"hfprune prune {source} --structure {structure} --method {method} --seed {seed}",
        "params_before": _count_parameters(model), "params_after": _count_parameters(pruned),
        "macs_before": adapter.macs(model.config), "macs_after": adapter.macs(pruned.config),
        "groups": {name: (len(mask[name]) if name in mask else group.size, group.size)
                   for name, group in groups.items()},
        "out": str(out),
    }

    def write_companions(folder: Path) -> None:
        facts["image_processor"] = _copy_image_processor(source, folder)
        structured_card(facts, adapter, pruned.config).write(folder)
        (folder / "hfprune_pruning.json").write_text(
            json.dumps({**facts, "mask": {name: list(kept) for name, kept in mask.items()}}, indent=1),
            encoding="utf-8")

    save_atomically(pruned, out, extras=[write_companions])
    return facts
