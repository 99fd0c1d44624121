"""Text for language models: documents read from local files, a ``datasets`` copy or the Hub, and random
fixed-length token windows of them (calibration samples, as Wanda and SparseGPT draw them).

Sources :func:`read_text_splits` reads:

- a ``.txt`` file: documents separated by blank lines;
- a folder of ``.txt`` files: one document per file (sorted by path);
- a ``.jsonl`` file (one JSON object per line) or a ``.json`` file (a list of objects or of strings): the ``field``
  (``text``) of each object;
- a ``datasets`` folder written by ``save_to_disk`` (a dataset or a dataset dict): its ``field`` column;
- ``python_stdlib``: the Python standard library's source files, one document each;
- otherwise a Hub dataset id, through ``datasets.load_dataset`` (offline: give a local copy).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import torch

from hfprune.data.stdlib_corpus import NAME as STDLIB, read_stdlib
from hfprune.errors import HfpruneError, reason

WHOLE = "all"  # the one "split" of a source that has none
_BLANK_LINES = re.compile(r"\n\s*\n")


def _field_of(record, field: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        raise HfpruneError(f"{where}: expected an object with a string '{field}' field (data.text.field), found "
                           f"{str(record)[:80]!r}")
    return record[field]


def _read_jsonl(path: Path, field: str) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise HfpruneError(f"'{path}' line {number} is not JSON ({error})") from None
            texts.append(_field_of(record, field, f"'{path}' line {number}"))
    return texts


def _read_json(path: Path, field: str) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HfpruneError(f"'{path}' is not valid JSON ({error})") from None
    if isinstance(data, dict) and isinstance(data.get(field), list):
        data = data[field]
    if not isinstance(data, list):
        raise HfpruneError(f"'{path}' must hold a JSON list of objects with a '{field}' field (or of strings)")
    return [_field_of(record, field, f"'{path}' item {index}") for index, record in enumerate(data)]


def _documents_of(text: str) -> list[str]:
    return [part.strip() for part in _BLANK_LINES.split(text) if part.strip()]


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _column(dataset, field: str, source: str) -> list[str]:
    if field not in dataset.column_names:
        raise HfpruneError(f"'{source}' has no '{field}' column (it has {', '.join(dataset.column_names)}); set "
                           "data.text.field")
    return [text for text in dataset[field] if isinstance(text, str) and text.strip()]


def _from_datasets(loaded, field: str, source: str) -> dict[str, list[str]]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        return {split: _column(part, field, source) for split, part in loaded.items()}
    return {WHOLE: _column(loaded, field, source)}


def read_text_splits(source: str | Path, field: str = "text", config: str | None = None) -> dict[str, list[str]]:
    """The documents of ``source`` by split: ``{"train": [...], "test": [...], ...}`` for a dataset with splits,
    ``{"all": [...]}`` for one without (files); ``python_stdlib``: the standard library's source files
    (:mod:`hfprune.data.stdlib_corpus`); ``config``: a Hub dataset's configuration. Empty documents are dropped;
    problems are one HfpruneError line."""
    if str(source) == STDLIB:
        return {WHOLE: read_stdlib()}
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        try:
            if suffix == ".jsonl":
                texts = _read_jsonl(path, field)
            elif suffix == ".json":
                texts = _read_json(path, field)
            else:
                texts = _documents_of(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise HfpruneError(f"'{path}' is not UTF-8 text ({error})") from None
        return {WHOLE: [text for text in texts if text.strip()]}
    if path.is_dir():
        import datasets

        if _is_saved_dataset(path):
            return _from_datasets(datasets.load_from_disk(str(path)), field, str(path))
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise HfpruneError(f"'{path}' holds neither .txt files nor a dataset written by save_to_disk")
        texts = [file.read_bytes().decode("utf-8", errors="replace") for file in files]
        return {WHOLE: [text for text in texts if text.strip()]}
    if str(source).startswith((".", "/", "~")) or str(source).endswith((".txt", ".json", ".jsonl")):
        raise HfpruneError(f"text source '{source}' not found; give a .txt/.jsonl/.json file, a folder, a "
                           "save_to_disk copy or a Hub dataset id")
    import datasets

    try:
        return _from_datasets(datasets.load_dataset(str(source), config), field, str(source))
    except (OSError, ValueError, ConnectionError) as error:
        raise HfpruneError(f"cannot load the text dataset '{source}' ({reason(error)}); offline, give a local copy "
                           "written with datasets' save_to_disk") from None


def read_texts(source: str | Path, split: str = "train", field: str = "text") -> list[str]:
    """The documents of ``source`` (see the module): its ``split`` where it has splits, else all of them."""
    splits = read_text_splits(source, field)
    if WHOLE in splits:
        return splits[WHOLE]
    if split not in splits:
        raise HfpruneError(f"'{source}' has no '{split}' split (it has {', '.join(splits)})")
    return splits[split]


def token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All ``texts`` tokenised (no special tokens) and joined into one 1-D stream, the tokenizer's end-of-text
    token after each document (where it has one)."""
    if not texts:
        return torch.zeros(0, dtype=torch.long)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return torch.tensor([token for document in ids for token in (*document, *separator)], dtype=torch.long)


def token_blocks(tokenizer, texts: Sequence[str], samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``seqlen`` tokens, ``[samples, seqlen]``, starting at positions drawn uniformly
    (seeded) over the token stream of ``texts`` (:func:`token_stream`)."""
    return windows(token_stream(tokenizer, texts), samples, seqlen, seed)


def windows(stream: torch.Tensor, samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``seqlen`` tokens of a 1-D token ``stream``, at seeded uniform start positions."""
    if len(stream) < seqlen:
        raise HfpruneError(f"the texts hold {len(stream)} tokens, fewer than one sample of {seqlen}; give more text "
                           "or shorter samples")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen + 1, (samples,), generator=generator)
    return torch.stack([stream[start:start + seqlen] for start in starts.tolist()])
