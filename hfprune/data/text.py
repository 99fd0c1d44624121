"""Text for language models: documents read from local files, a ``datasets`` copy or the Hub; token blocks drawn as
Wanda and SparseGPT draw their calibration segments; seeded windows of a token stream (study data).

Sources :func:`read_text_splits` (and :func:`read_texts`, one split of it) reads:

- a ``.txt`` file: documents separated by blank lines;
- a ``.jsonl`` file (one JSON object per line) or a ``.json`` file (a list of objects or of strings, an object
  whose ``field`` is such a list, or JSON lines): the ``field`` (``text``) of each object; either gzipped
  (``.jsonl.gz``, ``.json.gz``, e.g. a C4 shard ``c4-train.00000-of-01024.json.gz``);
- a folder of ``.txt`` files: one document per file (sorted by path);
- a ``datasets`` folder written by ``save_to_disk`` (a dataset or a dataset dict): its ``field`` column;
- ``python_stdlib``: the Python standard library's source files, one document each;
- otherwise a Hub dataset id, through ``datasets.load_dataset`` (offline: give a local copy).

Token blocks:

- :func:`token_blocks` — ``samples`` blocks of ``seqlen`` token ids drawn with ``seed``. From several texts, as the
  reference code draws C4: a random text whose tokens number more than ``seqlen``, then a random window in it,
  repeated per block (``random.Random(seed)``, the same calls as ``random.seed(seed)`` + ``random.randint`` there).
  From one text — or when texts are all short (1,000 draws in a row found none longer than ``seqlen``, as for
  WikiText's lines) — as the reference code draws WikiText-2: the texts joined with spaces (``" ".join``, as it
  joins WikiText-2's train lines), tokenised once, random windows in it (a fresh ``random.Random(seed)``). Texts
  are tokenised as the reference does (``tokenizer(text)``: the tokenizer's own special tokens, e.g. Llama's BOS).
- :class:`TokenBlocks` — blocks as a dataset of model inputs (``input_ids``, ``attention_mask``, and ``labels`` =
  the inputs: the causal-LM loss over every position).
- :func:`token_stream` and :func:`windows` — a study's corpus as one stream (documents separated by the end-of-text
  token) and seeded uniform windows of it.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Sequence

import torch

from hfprune.data.stdlib_corpus import NAME as STDLIB, read_stdlib
from hfprune.errors import HfpruneError, reason

TEXT_FIELD = "text"
WHOLE = "all"  # the one "split" of a source that has none
SHORT_DRAWS = 1000  # consecutive draws of texts too short for a block before the texts are joined
KINDS = (".txt", ".jsonl", ".json")
_BLANK_LINES = re.compile(r"\n\s*\n")


# -- reading ----------------------------------------------------------------------------------------------------------

def read_text_splits(source: str | Path, field: str = TEXT_FIELD, config: str | None = None) -> dict[str, list[str]]:
    """The documents of ``source`` (module docstring) by split: ``{"train": [...], "test": [...], ...}`` for a
    dataset with splits, ``{"all": [...]}`` for one without (files); ``config``: a Hub dataset's configuration.
    Empty documents are dropped; a problem is one HfpruneError line naming the source and the fix."""
    if str(source) == STDLIB:
        return {WHOLE: read_stdlib()}
    path = Path(source)
    if path.is_file():
        splits = {WHOLE: _file_texts(path, field)}
    elif path.is_dir():
        splits = _folder_texts(path, field)
    elif str(source).startswith((".", "/", "~")) or Path(str(source)).suffix.lower() in (*KINDS, ".gz"):
        raise HfpruneError(f"text source '{source}' not found: give a .txt, .jsonl or .json file (with a "
                           f"'{field}' field), a folder, a copy written by datasets' save_to_disk or a Hub dataset id")
    else:
        splits = _hub_texts(str(source), field, config)
    splits = {split: [text for text in texts if text.strip()] for split, texts in splits.items()}
    if not any(splits.values()):
        raise HfpruneError(f"text source '{source}' holds no text")
    return splits


def read_texts(source: str | Path, split: str = "train", field: str = TEXT_FIELD) -> list[str]:
    """The documents of ``source``: its ``split`` where it has splits (its only one where it has one), else all."""
    splits = read_text_splits(source, field)
    if WHOLE in splits:
        return splits[WHOLE]
    if split not in splits and len(splits) == 1:
        return next(iter(splits.values()))
    if split not in splits:
        raise HfpruneError(f"'{source}' has no '{split}' split (it has {', '.join(splits)}); save the split to read")
    if not splits[split]:
        raise HfpruneError(f"text source '{source}', split '{split}', holds no text")
    return splits[split]


def _file_texts(path: Path, field: str) -> list[str]:
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    compressed = suffixes[-1:] == [".gz"]
    kind = suffixes[-2] if compressed and len(suffixes) == 2 else suffixes[-1] if suffixes else ""
    if kind not in KINDS:
        raise HfpruneError(f"text source '{path}' is neither .txt, .jsonl nor .json (optionally .gz); convert it, "
                           "or save a datasets dataset with save_to_disk")
    try:
        raw = (gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise HfpruneError(f"cannot read text source '{path}' ({reason(error)}); give UTF-8 text") from None
    if kind == ".txt":
        return [part.strip() for part in _BLANK_LINES.split(raw)]
    return _json_texts(raw, field, str(path))


def _json_texts(raw: str, field: str, source: str) -> list[str]:
    """A JSON list (of objects or strings), an object whose ``field`` is such a list, or JSON lines."""
    start = raw.lstrip()[:1]
    try:
        data = json.loads(raw) if start == "[" else None
        if start == "{":
            try:
                whole = json.loads(raw)
                data = whole[field] if isinstance(whole, dict) and isinstance(whole.get(field), list) else None
            except json.JSONDecodeError:
                pass  # JSON lines
        if data is None:
            lines = [(number, line) for number, line in enumerate(raw.splitlines(), 1) if line.strip()]
            return [_field_of(json.loads(line), field, f"'{source}' line {number}, record {index}")
                    for index, (number, line) in enumerate(lines)]
    except json.JSONDecodeError as error:
        raise HfpruneError(f"'{source}' is neither a JSON list nor JSON lines: {error}") from None
    return [_field_of(record, field, f"'{source}' item {index}, record {index}") for index, record in enumerate(data)]


def _field_of(record, field: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        raise HfpruneError(f"{where}: expected an object with a string '{field}' field (data.text.field), found "
                           f"{str(record)[:80]!r}")
    return record[field]


def _folder_texts(path: Path, field: str) -> dict[str, list[str]]:
    """A ``save_to_disk`` copy's splits, or a folder's ``.txt`` files, one document each."""
    if any((path / name).is_file() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as error:
            raise HfpruneError(f"'{path}' is not a dataset written by save_to_disk ({reason(error)})") from None
        return _from_datasets(loaded, field, str(path))
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise HfpruneError(f"'{path}' holds neither .txt files nor a dataset written by save_to_disk")
    return {WHOLE: [file.read_bytes().decode("utf-8", errors="replace") for file in files]}


def _hub_texts(source: str, field: str, config: str | None) -> dict[str, list[str]]:
    import datasets

    try:
        loaded = datasets.load_dataset(source, config)
    except (OSError, ValueError, ConnectionError) as error:
        raise HfpruneError(f"cannot load the text dataset '{source}' ({reason(error)}); offline, give a local copy "
                           "written with datasets' save_to_disk") from None
    return _from_datasets(loaded, field, source)


def _from_datasets(loaded, field: str, source: str) -> dict[str, list[str]]:
    import datasets

    parts = dict(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else {WHOLE: loaded}
    for part in parts.values():
        if field not in part.column_names:
            raise HfpruneError(f"dataset '{source}' has no '{field}' column (columns: "
                               f"{', '.join(part.column_names)}); set data.text.field")
    return {split: [text for text in part[field] if isinstance(text, str)] for split, part in parts.items()}


# -- calibration blocks, as the reference draws them ------------------------------------------------------------------

def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def token_blocks(tokenizer, texts: Sequence[str], samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``samples`` × ``seqlen`` token ids drawn from ``texts`` with ``seed`` (module docstring), as a LongTensor."""
    if samples < 1 or seqlen < 1:
        raise HfpruneError(f"token blocks need samples >= 1 and seqlen >= 1, got {samples} and {seqlen}")
    if not texts:
        raise HfpruneError("no texts to draw token blocks from")
    blocks = _per_text(tokenizer, texts, samples, seqlen, seed) if len(texts) > 1 else None
    if blocks is None:
        blocks = _joined(tokenizer, texts, samples, seqlen, seed)
    return torch.tensor(blocks, dtype=torch.long)


def _per_text(tokenizer, texts: Sequence[str], samples: int, seqlen: int, seed: int) -> list[list[int]] | None:
    """C4-style draws; None when ``SHORT_DRAWS`` draws in a row find no text longer than ``seqlen`` tokens."""
    rng, cache, blocks = random.Random(seed), {}, []
    for _ in range(samples):
        for _ in range(SHORT_DRAWS):
            index = rng.randint(0, len(texts) - 1)
            if index not in cache:
                cache[index] = _ids(tokenizer, texts[index])
            ids = cache[index]
            if len(ids) > seqlen:
                break
        else:
            return None
        start = rng.randint(0, len(ids) - seqlen - 1)
        blocks.append(ids[start:start + seqlen])
    return blocks


def _joined(tokenizer, texts: Sequence[str], samples: int, seqlen: int, seed: int) -> list[list[int]]:
    """WikiText-2-style draws: random windows of the texts joined with spaces."""
    ids = _ids(tokenizer, " ".join(texts))
    if len(ids) <= seqlen:
        raise HfpruneError(f"the texts hold {len(ids)} tokens in all, too few for blocks of {seqlen}: give more "
                           "text or a smaller sequence length")
    rng = random.Random(seed)
    blocks = []
    for _ in range(samples):
        start = rng.randint(0, len(ids) - seqlen - 1)
        blocks.append(ids[start:start + seqlen])
    return blocks


class TokenBlocks(torch.utils.data.Dataset):
    """Token blocks (``samples`` × ``seqlen``) as model inputs: ``dataset[i]`` one block's ``input_ids``,
    ``attention_mask`` and ``labels`` (the inputs); ``__getitems__`` a batch of them."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        ids = self.blocks[list(indices)]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


# -- a study's corpus: one stream, seeded windows ---------------------------------------------------------------------

def token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """All ``texts`` tokenised (no special tokens) and joined into one 1-D stream, the tokenizer's end-of-text
    token after each document (where it has one)."""
    if not texts:
        return torch.zeros(0, dtype=torch.long)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return torch.tensor([token for document in ids for token in (*document, *separator)], dtype=torch.long)


def windows(stream: torch.Tensor, samples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``seqlen`` tokens of a 1-D token ``stream``, at seeded uniform start positions."""
    if len(stream) < seqlen:
        raise HfpruneError(f"the texts hold {len(stream)} tokens, fewer than one sample of {seqlen}; give more text "
                           "or shorter samples")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - seqlen + 1, (samples,), generator=generator)
    return torch.stack([stream[start:start + seqlen] for start in starts.tolist()])
