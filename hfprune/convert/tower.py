"""The legacy checkpoint's SigLIP tower: embedded in the checkpoint, or read from a separate SigLIP checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

from transformers import SiglipVisionConfig

from hfprune.errors import HfpruneError
from hfprune.convert.configs import legacy_tower_name
from hfprune.convert.keys import (
    LEGACY_TOWER,
    TOWER_TARGET,
    dropped_reason,
    layer_count,
    layer_index,
    listed,
    source_name,
)
from hfprune.convert.source import SourceWeights, resolve_source, weight_files

log = logging.getLogger(__name__)

SIGLIP_VISION = "vision_model."  # a SigLIP checkpoint's tower (SiglipVisionModel, or SiglipModel's vision half)
SIGLIP_TEXT = ("text_model.", "logit_scale", "logit_bias")  # a SiglipModel's text half: never loaded


@dataclass
class LegacyTower:
    """Where a legacy checkpoint's SigLIP tower comes from: its weights from ``directory`` when ``separate``,
    else from the checkpoint itself; ``directory`` (None when not local) also holds its config.json."""

    directory: Path | None
    separate: bool


def _embedded_tower_keys(keys: Collection[str]) -> list[str]:
    """The legacy checkpoint's own tower weights (buffers that are dropped anyway do not count)."""
    return [key for key in keys if key.startswith(LEGACY_TOWER) and dropped_reason(key) is None]


def find_legacy_tower(config: Mapping, directory: Path, keys: Collection[str],
                      vision_tower: str | Path | None = None) -> LegacyTower:
    """``vision_tower`` when given (it replaces a tower the checkpoint holds, as the legacy code's reload from
    ``mm_vision_tower`` does); else the checkpoint's own tower; else the one ``mm_vision_tower`` names."""
    named = legacy_tower_name(config)
    if vision_tower is not None:
        tower = LegacyTower(resolve_source(vision_tower, "vision tower", "--vision-tower"), separate=True)
        if _embedded_tower_keys(keys):
            log.warning("note: the vision tower comes from %s; the one in the checkpoint is left out", vision_tower)
        return tower
    if _embedded_tower_keys(keys):
        return LegacyTower(local_tower_dir(config, directory), separate=False)
    if not named:
        raise HfpruneError("the legacy checkpoint holds no vision tower weights and its config.json names no "
                           "mm_vision_tower; pass the SigLIP tower's directory with --vision-tower")
    try:
        return LegacyTower(local_tower_dir(config, directory) or resolve_source(named, "vision tower",
                                                                                "--vision-tower"), separate=True)
    except HfpruneError as error:
        raise HfpruneError(f"the legacy checkpoint holds no vision tower weights; the legacy code loads them from "
                           f"its mm_vision_tower: {error}") from error


def local_tower_dir(config: Mapping, directory: Path) -> Path | None:
    """The directory ``mm_vision_tower`` names (absolute, or relative to the checkpoint), if it exists."""
    tower = legacy_tower_name(config)
    if not tower:
        return None
    path = Path(tower) if Path(tower).is_absolute() else directory / tower
    return path if path.is_dir() else None


def _as_legacy_tower_key(key: str, kept_layers: int) -> str | None:
    """A SigLIP key's legacy-checkpoint name; None for what the legacy tower never loads (the text half, the
    pooling head, encoder layers from ``kept_layers`` on)."""
    if not key.startswith(SIGLIP_VISION) or key.startswith(SIGLIP_VISION + "head."):
        return None
    index = layer_index(key, SIGLIP_VISION)
    if index is not None and index >= kept_layers:
        return None
    return LEGACY_TOWER + key[len(SIGLIP_VISION):]


def separate_tower_weights(directory: Path, vision: SiglipVisionConfig) -> SourceWeights:
    """The SigLIP checkpoint's tower as the legacy tower loads it, under the legacy checkpoint's names:
    ``vision.num_hidden_layers - 1`` encoder layers, no head (see :mod:`hfprune.convert`)."""
    files = weight_files(directory)
    keys = list(SourceWeights(files).shapes())
    unknown = [key for key in keys if not key.startswith((SIGLIP_VISION, *SIGLIP_TEXT))]
    if unknown or not any(key.startswith(SIGLIP_VISION) for key in keys):
        raise HfpruneError(f"the vision tower {directory} is not a SigLIP checkpoint: expected vision_model.* keys"
                           f"{f', found {listed(unknown)}' if unknown else ''}")
    layers, configured = layer_count(keys, SIGLIP_VISION), vision.num_hidden_layers
    if layers not in (configured, configured - 1):
        raise HfpruneError(f"the vision tower {directory} holds {layers} encoder layers; with num_hidden_layers "
                           f"{configured} the legacy tower needs {configured} (a whole tower, of which it keeps "
                           f"{configured - 1}) or {configured - 1} (a tower saved after that cut)")
    return SourceWeights(files, rename=lambda key: _as_legacy_tower_key(key, kept_layers=configured - 1))


def without_tower(key: str) -> str | None:
    """Leaves out a legacy checkpoint's own tower (replaced by a separate one)."""
    return None if key.startswith(LEGACY_TOWER) else key


def check_whole_tower(keys: Collection[str], target_shapes: Mapping[str, tuple[int, ...]],
                      tower: LegacyTower) -> None:
    """HfpruneError naming the tower tensors that are missing (a checkpoint that holds part of its tower)."""
    wanted = {source_name(target, "legacy") for target in target_shapes if target.startswith(TOWER_TARGET)}
    missing = wanted - set(keys)
    if not missing:
        return
    if tower.separate:
        names = [SIGLIP_VISION + key[len(LEGACY_TOWER):] for key in missing]
        raise HfpruneError(f"the vision tower {tower.directory} lacks {listed(names)} ({len(missing)} of the "
                           f"{len(wanted)} tensors the legacy tower loads)")
    raise HfpruneError(f"the legacy checkpoint holds only part of its vision tower: {listed(missing)} missing "
                       f"({len(missing)} of {len(wanted)} tensors); pass a whole SigLIP tower with --vision-tower")
