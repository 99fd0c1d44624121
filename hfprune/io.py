"""Files a killed process never leaves half-written (checkpoints, JSON), JSON that stays valid, and quiet
transformers progress bars while saving or loading."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from hfprune.errors import HfpruneError

if TYPE_CHECKING:  # transformers is imported where a model is saved, not by every JSON reader
    from transformers import PreTrainedModel


@contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """transformers' own progress bars off inside the block (loading/saving shards), as before after."""
    from transformers.utils import logging as hf_logging

    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def quiet_hf_warnings() -> Iterator[None]:
    """transformers' warnings off inside the block (e.g. its report of weights it initialised, which hfprune turns
    into one error line of its own), as before after."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


WriteInto = Callable[[Path], None]


@contextmanager
def _os_errors_as_oserror() -> Iterator[None]:
    """safetensors reports a failed write (a full disk) as its own error, "... (os error 28)"; re-raise it as
    the OSError it is, so that callers tell a full disk from a bug."""
    try:
        yield
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - only those naming an OS error are translated
        found = re.search(r"os error (\d+)", str(error))
        if found is None:
            raise
        number = int(found.group(1))
        raise OSError(number, os.strerror(number)) from error


def save_atomically(model: "PreTrainedModel", target: Path, extras: Iterable[WriteInto] = ()) -> None:
    """``save_pretrained`` into ``target.partial``, then rename over ``target``.

    ``extras`` write what belongs beside the weights (a processor, a model card, a record) into the same
    folder before the rename, so a finished target always has them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with quiet_hf_progress(), _os_errors_as_oserror():  # one-shard "Writing model shards" bars would flood
        model.save_pretrained(partial)
        for write in extras:
            write(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN and inf as None, numpy/torch scalars as Python numbers, keys as
    text, and anything else JSON has no type for (paths, library objects) as its text."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def json_line(data: Any, sort_keys: bool = False) -> str:
    """``data`` as one line of strict JSON (see :func:`jsonable`), newline included."""
    return json.dumps(jsonable(data), sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json_atomically(path: str | os.PathLike, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON; readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    partial.replace(path)


MAX_JSON_BYTES = 256 << 20


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON document in ``path``; anything wrong with it (not a regular file, too large, not UTF-8, not
    JSON, nested too deep for Python) is one HfpruneError line naming ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "missing" if not path.exists() else "not a regular file"
        raise HfpruneError(f"{what} {path} is {kind}; give a JSON file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise HfpruneError(f"{what} {path} is larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise HfpruneError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise HfpruneError(f"{what} {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise HfpruneError(f"{what} {path} nests deeper than Python can read") from None
