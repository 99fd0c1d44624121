"""One-shot structured pruning of a checkpoint: ``hfprune prune MODEL --structure heads=0.5,ffn=0.5``.

Loads a local or Hub checkpoint of any structured family (the CNNs, ViT, and every causal LM, VLM or ViT-like
encoder transformers loads), picks a mask with a criterion under an allocation, removes the pruned units physically
and writes a checkpoint that plain ``transformers`` loads (native, or ``trust_remote_code=True`` for per-layer
widths), the source's processor or tokenizer, and a model card with the facts.

Calibration data: a registered image dataset for image models; for language models (and a VLM's language model) a
text file — ``.jsonl`` rows with ``input_ids`` (token ids) or ``text``, or plain ``.txt`` — cut into sequences of
``calibration_length`` tokens by the checkpoint's tokenizer.
"""

from __future__ import annotations

import inspect
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
from hfprune.models.structure import auto_class_name
from hfprune.models.transformer.adapter import BlockStructured
from hfprune.models.transformer.size import macs_unit
from hfprune.models.transformer.surgery import checkpoint_kind
from hfprune.models.transformer.groups import block_groups
from hfprune.export.cards import structured_card
from hfprune.pruning.structured.allocation import ALLOCATIONS
from hfprune.pruning.structured.importance import get_importance
from hfprune.pruning.structured.masks import LAMBDA, OUTLIER_M, check_request, structured_mask, token_loss

STRUCTURE_HELP = ("fractions to remove, by kind or group: heads=0.25,ffn=0.5 (query heads; with grouped-query "
                  "attention the kept heads split evenly over the key/value groups), kv_groups=0.25 (whole key/value "
                  "groups with their query heads), ffn=0.5 (FFN neurons), layers=0.25 (whole decoder layers), "
                  "filters=0.5 or conv1=0.5 (CNNs); per group e.g. layers.3.heads=0.5")


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


def token_batches(path: str, tokenizer, samples: int, length: int, batch_size: int) -> list[dict]:
    """Calibration batches of ``samples`` sequences of ``length`` tokens from a text file: ``.jsonl`` rows with
    ``input_ids`` or ``text``, else plain text; texts are joined and cut into equal sequences."""
    source = Path(path)
    if not source.is_file():
        raise HfpruneError(f"--calibration-data '{path}' is no file; give a .jsonl (input_ids or text per row) or "
                           ".txt file")
    ids: list[int] = []
    text = source.read_text(encoding="utf-8", errors="replace")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()] if source.suffix == ".jsonl" else None
    if rows is None:
        texts = [text]
    elif all(isinstance(row, dict) and "input_ids" in row for row in rows):
        ids = [int(token) for row in rows for token in row["input_ids"]]
        texts = []
    elif all(isinstance(row, dict) and isinstance(row.get("text"), str) for row in rows):
        texts = [row["text"] for row in rows]
    else:
        raise HfpruneError(f"--calibration-data '{path}': every row must have input_ids or text")
    if texts:
        if tokenizer is None:
            raise HfpruneError(f"--calibration-data '{path}' holds text but the model has no tokenizer saved with "
                               "it; give token ids (.jsonl rows with input_ids)")
        eos = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
        ids = [token for text in texts for token in tokenizer(text, add_special_tokens=False)["input_ids"] + eos]
    sequences = min(samples, len(ids) // length)
    if sequences == 0:
        raise HfpruneError(f"--calibration-data '{path}' has {len(ids)} tokens, fewer than one sequence of "
                           f"--calibration-length {length}")
    tokens = torch.tensor(ids[:sequences * length], dtype=torch.long).view(sequences, length)
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in tokens.split(batch_size)]


def _calibration(adapter, model, source, data, path, samples, batch_size, length, seed):
    """(batches, loss function, description) of the calibration data, or (None, None, None)."""
    if data is None:
        return None, None, None
    if isinstance(adapter, BlockStructured) and adapter.task != "image_classification":
        batches = token_batches(data, adapter.load_processor(source, required=False), samples, length, batch_size)
        return batches, token_loss, f"{data}: {sum(len(b['input_ids']) for b in batches)} sequences of {length} tokens"
    from hfprune.data.registry import load_image_classification
    from hfprune.evaluation.classification import classification_loss
    from hfprune.train.trainer import make_loader

    image_size = getattr(model.config, "image_size", 224)  # HF ResNet configs have none (ImageNet: 224)
    loaded = load_image_classification(data, path=path, image_size=image_size if isinstance(image_size, int)
                                       else image_size[0], train_limit=samples, test_limit=1, limit_seed=seed,
                                       image_processor=source)
    batches = make_loader(loaded.train, batch_size, shuffle=False, seed=seed)
    if "labels" not in inspect.signature(model.forward).parameters:  # an encoder without a head: images only
        batches = [{key: value for key, value in batch.items() if key != "labels"} for batch in batches]
    return batches, classification_loss, f"{data} train split, {len(loaded.train)} images"


def _save_processor(adapter, source: str, folder: Path) -> bool:
    """The source's processor or tokenizer beside the pruned weights (transformers families), else its image
    processor file; whether one was written."""
    if isinstance(adapter, BlockStructured):
        processor = adapter.load_processor(source, required=False)
        if processor is not None:
            processor.save_pretrained(folder)
            return True
    return _copy_image_processor(source, folder)


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
    allocation: str = "uniform",
    options: dict[str, Any] | None = None,
    outlier_m: float = OUTLIER_M,
    lam: float = LAMBDA,
    calibration_length: int = 128,
) -> dict[str, Any]:
    """Prune ``source`` and write the result to ``out``; returns the model card's facts."""
    importance = get_importance(method, options)
    ratios = parse_structure(structure)
    if allocation not in ALLOCATIONS:
        raise HfpruneError(f"--allocation: unknown allocation '{allocation}'; choose one of: {', '.join(ALLOCATIONS)}")
    if (importance.needs_calibration or allocation == "owl") and calibration_data is None:
        needs = f"--method {method}" if importance.needs_calibration else "--allocation owl"
        raise HfpruneError(f"{needs} needs --calibration-data (a .jsonl/.txt text file for language models, a "
                           "dataset such as imagenet_1k with --calibration-path DIR for image models)")
    out = check_out_dir(out, source)
    adapter, model = load_structured(source)
    groups = block_groups(model) if isinstance(adapter, BlockStructured) else adapter.groups(model.config)
    check_request(groups, ratios, importance, allocation, calibration_data is not None)  # before any work
    batches, loss_fn, calibration = _calibration(adapter, model, source, calibration_data, calibration_path,
                                                 calibration_samples, batch_size, calibration_length, seed)
    torch.manual_seed(seed)
    mask = structured_mask(model, groups, ratios, importance, allocation=allocation, batches=batches,
                           loss_fn=loss_fn, seed=seed, outlier_m=outlier_m, lam=lam)
    pruned = adapter.prune_physically(model, mask).eval()
    options_text = "".join(f" --option {key}={value}" for key, value in (options or {}).items())
    facts = {
        "source": source, "family": adapter.name, "method": method, "seed": seed, "structure": ratios,
        "allocation": allocation, "options": dict(options or {}), "calibration": calibration,
        "command": f"hfprune prune structured {source} --structure {structure} --method {method} "
                   f"--allocation {allocation}{options_text} --seed {seed}",
        "params_before": _count_parameters(model), "params_after": _count_parameters(pruned),
        "macs_before": adapter.macs(model.config), "macs_after": adapter.macs(pruned.config),
        "groups": {name: (len(mask[name]) if name in mask else group.size, group.size)
                   for name, group in groups.items()},
        "out": str(out),
    }
    if isinstance(adapter, BlockStructured):
        facts.update(checkpoint=checkpoint_kind(pruned.config), architecture=type(pruned).__name__,
                     auto_class=auto_class_name(model), macs_unit=macs_unit(model.config))

    def write_companions(folder: Path) -> None:
        facts["image_processor"] = _save_processor(adapter, source, folder)
        structured_card(facts, adapter, pruned.config).write(folder)
        (folder / "hfprune_pruning.json").write_text(
            json.dumps({**facts, "mask": {name: list(kept) for name, kept in mask.items()}}, indent=1),
            encoding="utf-8")

    save_atomically(pruned, out, extras=[write_companions])
    return facts
