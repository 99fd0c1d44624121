"""Files a killed process never leaves half-written (checkpoints, JSON), JSON that stays valid, and quiet
transformers progress bars while saving or loading."""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """transformers' own progress bars off inside the block (loading/saving shards), as before after."""
    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


WriteInto = Callable[[Path], None]


def save_atomically(model: PreTrainedModel, target: Path, extras: Iterable[WriteInto] = ()) -> None:
    """``save_pretrained`` into ``target.partial``, then rename over ``target``.

    ``extras`` write what belongs beside the weights (a processor, a model card, a record) into the same
    folder before the rename, so a finished target always has them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with quiet_hf_progress():  # one-shard "Writing model shards" bars would flood the trial loop
        model.save_pretrained(partial)
        for write in extras:
            write(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _json_default(value: Any) -> Any:
    """numpy / torch scalars as numbers; anything else JSON cannot hold (paths, library objects) as text."""
    return value.item() if hasattr(value, "item") else str(value)


def _clean(value: Any) -> Any:
    """NaN and inf are not JSON; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_line(data: Any, sort_keys: bool = False) -> str:
    """``data`` as one line of JSON (NaN and inf as null, numpy/torch scalars as numbers), newline included."""
    return json.dumps(_clean(data), default=_json_default, sort_keys=sort_keys) + "\n"


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON; readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_clean(data), indent=2, default=_json_default) + "\n", encoding="utf-8")
    partial.replace(path)
