"""``hfprune diagnose``: disconnected paths and effective sparsity of a saved checkpoint (or a study's trial) of
a family whose connectivity can be analysed."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.connectivity import Connectivity, analyse


def resolve_checkpoint(path: str | Path, trial: str | None = None) -> Path:
    """The checkpoint directory of ``path``: itself (a directory with a config.json), or, for a study directory
    with ``trial``, ``checkpoints/<trial dir>`` or ``best/`` when best.json names that trial (``trial="best"``:
    ``best/``)."""
    path = Path(path)
    if not path.exists():
        raise HfpruneError(f"diagnose: '{path}' does not exist; give a checkpoint directory (save_pretrained) or a "
                           "study directory with --trial ID")
    if trial is None:
        if (path / "config.json").is_file():
            return path
        hint = " (a study directory: add --trial ID or --trial best)" if (path / "study.json").exists() \
            or (path / "checkpoints").is_dir() or (path / "best").is_dir() else ""
        raise HfpruneError(f"diagnose: '{path}' holds no config.json{hint}; give a checkpoint directory written by "
                           "save_pretrained")
    candidates = [path / "checkpoints" / trial.replace(":", "_")]
    best_json = path / "best.json"
    if trial == "best" or (best_json.is_file() and _best_trial(best_json) == trial):
        candidates.append(path / "best")
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    saved = sorted(p.name for p in (path / "checkpoints").iterdir()) if (path / "checkpoints").is_dir() else []
    listing = f"saved trials: {', '.join(saved[:10])}" if saved else "the study saved no per-trial checkpoints " \
        "(export.checkpoints: all saves them; best/ holds the best one: --trial best)"
    raise HfpruneError(f"diagnose: no checkpoint of trial '{trial}' under {path}/checkpoints or {path}/best; {listing}")


def _best_trial(best_json: Path) -> str | None:
    try:
        return json.loads(best_json.read_text()).get("trial_id")
    except (OSError, ValueError, AttributeError):
        return None


def diagnose_checkpoint(path: str | Path, trial: str | None = None,
                        input_size: int | None = None) -> tuple[Connectivity, nn.Module, Path]:
    """Load the checkpoint of ``path`` (see :func:`resolve_checkpoint`) with its family's adapter and analyse
    every Linear/Conv weight; returns the analysis, the model and the checkpoint directory. ``input_size``: the
    side of the square images the model sees, where its config does not say (e.g. an HF ResNet)."""
    from hfprune.models import FAMILIES, adapter_for_checkpoint

    checkpoint = resolve_checkpoint(path, trial)
    adapter = adapter_for_checkpoint(str(checkpoint))
    if not adapter.connectivity:
        supported = ", ".join(name for name, family in FAMILIES.items() if family.connectivity)
        raise HfpruneError(f"diagnose: model family '{adapter.name}' has layers the connectivity analysis cannot "
                           f"follow (it needs Linear/Conv, ReLU, BatchNorm, pooling and residual adds only); "
                           f"supported families: {supported}")
    from safetensors import SafetensorError

    from hfprune.errors import reason

    try:
        model = adapter.load_pretrained(str(checkpoint))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise HfpruneError(f"diagnose: cannot load the checkpoint in '{checkpoint}' ({reason(error)}); give a "
                           "directory written by save_pretrained whose weights are whole") from None
    except HfpruneError as error:
        raise HfpruneError(f"diagnose: {error}") from None
    return analyse(model, example_input=_example_input(model, input_size)), model, checkpoint


def _example_input(model: nn.Module, input_size: int | None):
    """One input of the shape the model reads: its config's own size, else ``input_size`` for image models."""
    import torch

    config = getattr(model, "config", None)
    if input_size is None or getattr(config, "input_size", None) is not None:
        return None
    channels = getattr(config, "num_channels", None)
    if channels is None:
        raise HfpruneError("diagnose: --input-size applies to image models; this model's config gives its own input")
    return torch.zeros(1, channels, input_size, input_size)


def mlp_weights(model: nn.Module, connectivity: Connectivity) -> tuple[list, list]:
    """The analysed weights and their effective masks, input side first, when they form a chain of Linear layers
    (each one's inputs are the previous one's outputs); HfpruneError otherwise."""
    names = [row.name for row in connectivity.layers]
    weights = [model.get_parameter(name).detach() for name in names]
    chained = all(w.ndim == 2 for w in weights) and all(
        a.shape[0] == b.shape[1] for a, b in zip(weights[:-1], weights[1:]))
    if not weights or not chained:
        raise HfpruneError("diagnose --plot draws MLP checkpoints (a chain of Linear layers, e.g. sparse_mlp); this "
                           "model has other layers: drop --plot")
    return weights, [connectivity.effective[name] for name in names]
