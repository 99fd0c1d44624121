"""One-shot structured pruning of a checkpoint: ``hfprune prune MODEL --structure heads=0.5,ffn=0.5``.

Loads a local or Hub checkpoint, picks a mask with a criterion, removes the pruned units physically
and writes a checkpoint that plain ``transformers`` loads (``trust_remote_code=True`` for the
per-layer-width classes), the source's image processor, and a model card with the facts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from hfprune.io import quiet_hf_progress
from hfprune.errors import HfpruneError, reason
from hfprune.oneshot.cards import front_matter
from hfprune.models import get_adapter
from hfprune.pruning.structured.importance import METHODS, criterion_mask, expand_ratios

FAMILY_OF_MODEL_TYPE = {"vit": "vit", "pruned_vit": "vit", "lenet5_mini": "lenet5_mini"}
UNSTRUCTURED_MODEL_TYPES = ("llava",)


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


def model_type_of(source: str) -> str:
    """The ``model_type`` in the config.json of a local directory or Hub id."""
    how = "give a directory written by save_pretrained or hfprune convert, or a Hub id reachable from this machine"
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(source)
    except (OSError, ValueError) as error:
        raise HfpruneError(f"cannot load model '{source}' ({reason(error)}); {how}") from None
    model_type = config_dict.get("model_type")
    if model_type is None:
        raise HfpruneError(f"cannot load model '{source}' (no config.json with a model_type); {how}")
    return model_type


def load_model(source: str):
    """(adapter, dense model in eval mode) of a local directory or Hub id."""
    model_type = model_type_of(source)
    family = FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        hint = ("; prune it unstructurally with --method ump|gmp|onp|pnp --sparsity S"
                if model_type in UNSTRUCTURED_MODEL_TYPES else "")
        raise HfpruneError(
            f"model '{source}' is of type '{model_type}', which hfprune cannot prune structurally; "
            f"supported types: {', '.join(FAMILY_OF_MODEL_TYPE)}{hint}"
        )
    adapter = get_adapter(family)
    try:
        with quiet_hf_progress():  # keep stderr for the one-line errors
            model = adapter.load_pretrained(source)
    except (OSError, ValueError, RuntimeError) as error:
        raise HfpruneError(f"cannot load model '{source}' as a {family} checkpoint ({reason(error)})") from None
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


def _macs(family: str, config) -> int | None:
    if family == "vit":
        from hfprune.models.vit.adapter import vit_macs

        return vit_macs(config)["total"]
    return None


def model_card(facts: dict[str, Any]) -> str:
    """README.md of a pruned checkpoint: how it was made and what it costs, before and after."""

    def ratio(after, before):
        return f"{after / before:.3f}" if before else "–"

    lines = [
        *front_matter(facts["source"], ["hfprune", "pruned", "structured-pruning"]),
        f"# {facts['source']} — structurally pruned with hfprune", "",
        f"Pruned with `{facts['command']}`.", "",
        "| | dense | pruned | pruned / dense |", "|---|---:|---:|---:|",
        f"| parameters | {facts['params_before']:,} | {facts['params_after']:,} | "
        f"{ratio(facts['params_after'], facts['params_before'])} |",
    ]
    if facts.get("macs_before"):
        lines.append(f"| MACs per image | {facts['macs_before']:,} | {facts['macs_after']:,} | "
                     f"{ratio(facts['macs_after'], facts['macs_before'])} |")
    lines += ["", f"- method: `{facts['method']}`", f"- seed: {facts['seed']}",
              f"- structure (fraction removed): `{json.dumps(facts['structure'])}`"]
    if facts.get("calibration"):
        lines.append(f"- calibration data: {facts['calibration']}")
    lines += ["", "## Kept units per group", "", "| group | kept | of |", "|---|---:|---:|"]
    lines += [f"| {name} | {kept} | {size} |" for name, (kept, size) in facts["groups"].items()]
    if facts.get("per_layer"):
        lines += ["", "## Per layer", "", "| layer | heads | FFN width |", "|---:|---:|---:|"]
        lines += [f"| {i} | {h} | {f} |" for i, (h, f) in enumerate(facts["per_layer"])]
    lines += ["", "## Loading", "", "```python", "from transformers import AutoModelForImageClassification",
              "model = AutoModelForImageClassification.from_pretrained(PATH, trust_remote_code=True)", "```",
              "", "MACs are counted analytically (patch embedding, attention projections and matmuls, MLP, "
              "classifier; no norms, softmax, activations or biases).", ""]
    return "\n".join(line for line in lines if line is not None)


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
    if method not in METHODS:
        raise HfpruneError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    ratios = parse_structure(structure)
    if method == "taylor_fo" and calibration_data is None:
        raise HfpruneError("--method taylor_fo needs --calibration-data DATASET (e.g. imagenet_1k with "
                           "--calibration-path DIR)")
    out = check_out_dir(out, source)
    adapter, model = load_model(source)
    groups = adapter.groups(model.config)
    expand_ratios(groups, ratios)  # unknown keys and bad ratios fail before any work
    batches, calibration = None, None
    if calibration_data is not None:
        from hfprune.data.registry import load_image_classification
        from hfprune.train.trainer import make_loader

        image_size = model.config.image_size
        data = load_image_classification(calibration_data, path=calibration_path,
                                         image_size=image_size if isinstance(image_size, int) else image_size[0],
                                         train_limit=calibration_samples, test_limit=1, limit_seed=seed,
                                         image_processor=source)
        batches = make_loader(data.train, batch_size, shuffle=False, seed=seed)
        calibration = f"{calibration_data} train split, {len(data.train)} images"
    from hfprune.evaluation.classification import classification_loss

    torch.manual_seed(seed)
    mask = criterion_mask(method, model, groups, ratios, seed=seed, batches=batches, loss_fn=classification_loss)
    pruned = adapter.prune_physically(model, mask).eval()

    from hfprune.io import save_atomically

    save_atomically(pruned, out)
    has_processor = _copy_image_processor(source, out)
    family = adapter.name
    per_layer = None
    if family == "vit":
        from hfprune.models.vit.adapter import layer_widths

        heads, ffn, _ = layer_widths(pruned.config)
        per_layer = list(zip(heads, ffn))
    facts = {
        "source": source, "method": method, "seed": seed, "structure": ratios, "calibration": calibration,
        "command": f"hfprune prune {source} --structure {structure} --method {method} --seed {seed}",
        "params_before": _count_parameters(model), "params_after": _count_parameters(pruned),
        "macs_before": _macs(family, model.config), "macs_after": _macs(family, pruned.config),
        "groups": {name: (len(mask[name]) if name in mask else group.size, group.size)
                   for name, group in groups.items()},
        "per_layer": per_layer, "image_processor": has_processor, "out": str(out),
    }
    (out / "README.md").write_text(model_card(facts), encoding="utf-8")
    (out / "hfprune_pruning.json").write_text(
        json.dumps({**facts, "mask": {name: list(kept) for name, kept in mask.items()}}, indent=1), encoding="utf-8")
    return facts
