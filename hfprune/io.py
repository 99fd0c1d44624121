"""Checkpoint I/O: quiet transformers progress bars, and saves that a killed process never leaves half-written."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
