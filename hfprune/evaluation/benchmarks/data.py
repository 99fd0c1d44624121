"""Opening a benchmark's split from the Hub or from a local copy, and joining a second config.

A local copy (``data_path``) is either

- a download of the Hub repository (``hf download ID --repo-type dataset --local-dir DIR``):
  parquet files named ``{config}/{split}-*.parquet``, ``data/{split}-*.parquet`` (the default
  config) or ``{config}/{split}/*.parquet``; or
- directories written by ``save_to_disk``: ``DIR`` itself or ``DIR/{config}``, holding either a
  ``DatasetDict`` with the split or the single split as a ``Dataset``.

Image columns are read undecoded; :func:`open_image` opens them lazily (PIL reads the pixels
only when they are used).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

from hfprune.errors import HfpruneError, reason



def _how_to_copy(hub_id: str, config: str | None, split: str) -> str:
    config_arg, target = (f", {config!r}", f"'DIR/{config}'") if config else ("", "DIR")
    return (
        f"download it where there is network with `hf download {hub_id} --repo-type dataset "
        f"--local-dir DIR` (or `datasets.load_dataset({hub_id!r}{config_arg}, split={split!r})"
        f".save_to_disk({target})`) and give DIR as the benchmark's data path"
    )


def _parquet_files(folder: Path, split: str) -> list[Path]:
    for pattern in (f"{split}-*.parquet", f"data/{split}-*.parquet", f"{split}/*.parquet"):
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


def _open_local(name: str, root: Path, hub_id: str, config: str | None, split: str):
    import datasets

    for folder in ([root / config] if config else []) + [root]:
        if (folder / "dataset_dict.json").is_file():
            saved = datasets.load_from_disk(str(folder))
            if split not in saved:
                raise HfpruneError(
                    f"benchmark '{name}': the DatasetDict saved at '{folder}' has no split '{split}' "
                    f"(splits: {', '.join(saved)}); {_how_to_copy(hub_id, config, split)}"
                )
            return saved[split]
        if (folder / "state.json").is_file():
            return datasets.load_from_disk(str(folder))
        files = _parquet_files(folder, split)
        if files:
            return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    where = f"'{root / config}' or '{root}'" if config else f"'{root}'"
    raise HfpruneError(
        f"benchmark '{name}': no split '{split}' of {hub_id}{f' ({config})' if config else ''} in {where} "
        f"(looked for save_to_disk directories and {split}-*.parquet files); {_how_to_copy(hub_id, config, split)}"
    )


def open_split(name: str, hub_id: str, config: str | None, split: str, data_path: str | None):
    """One split as a ``datasets.Dataset`` with undecoded images; load failures become HfpruneError."""
    import datasets
    from datasets.exceptions import DatasetsError

    try:
        if data_path is None:
            ds = datasets.load_dataset(hub_id, config, split=split)
        else:
            root = Path(data_path).expanduser()
            if not root.is_dir():
                raise HfpruneError(
                    f"benchmark '{name}': data path '{data_path}' is not an existing directory; "
                    f"{_how_to_copy(hub_id, config, split)}"
                )
            ds = _open_local(name, root, hub_id, config, split)
    except (OSError, ValueError, DatasetsError) as error:
        source = f"data path '{data_path}'" if data_path else "the Hugging Face Hub"
        raise HfpruneError(
            f"benchmark '{name}': cannot load {hub_id}{f' ({config})' if config else ''} split '{split}' "
            f"from {source} ({reason(error, kind=True)}); {_how_to_copy(hub_id, config, split)}"
        ) from error
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def check_columns(name: str, source: str, ds, required: tuple[str, ...]) -> None:
    missing = [column for column in required if column not in ds.column_names]
    if missing:
        raise HfpruneError(
            f"benchmark '{name}' ({source}): no column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(ds.column_names)}); use a copy in the Hub schema"
        )


def joined_rows(name: str, main, joined, left_on: str, right_on: str) -> Iterator[dict]:
    """Rows of ``main``, each extended with the columns of the ``joined`` row whose key matches."""
    keys = joined.with_format("arrow", columns=[right_on])[:][right_on].to_pylist()
    position = {key: i for i, key in enumerate(keys)}
    extra = [column for column in joined.column_names if column != right_on]
    for row in main:
        key = row[left_on]
        if key not in position:
            raise HfpruneError(
                f"benchmark '{name}': row with {left_on}={key!r} has no match in the joined config's "
                f"column '{right_on}'; the two configs must come from the same copy of the dataset"
            )
        match = joined[position[key]]
        yield {**row, **{column: match[column] for column in extra}}


def open_image(value):
    """A lazily decoded PIL image from an undecoded ``Image`` cell (or None for an empty cell)."""
    from PIL import Image

    if value is None or (value.get("bytes") is None and value.get("path") is None):
        return None
    return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
