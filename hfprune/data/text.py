"""Plain text for language models: read texts from local files, cut fixed-length token blocks as Wanda and SparseGPT
draw their C4 and WikiText-2 calibration segments.

- :func:`read_texts` — the texts of a local source: a ``.txt`` file (one text), a ``.jsonl`` / ``.json`` file of
  objects with a ``text`` field (either gzipped, e.g. a C4 shard ``c4-train.00000-of-01024.json.gz``), or a
  ``datasets`` dataset written by ``save_to_disk`` with a ``text`` column (its ``train`` split, or its only one).
- :func:`token_blocks` — ``samples`` blocks of ``seqlen`` token ids drawn with ``seed``. From several texts, as the
  reference code draws C4: a random text whose tokens number more than ``seqlen``, then a random window in it,
  repeated per block (``random.Random(seed)``, the same calls as ``random.seed(seed)`` + ``random.randint`` there).
  From one text — or when texts are all short (1,000 draws in a row found none longer than ``seqlen``, as for
  WikiText's lines) — as the reference code draws WikiText-2: the texts joined with spaces (``" ".join``, as it
  joins WikiText-2's train lines), tokenised once, random windows in it (a fresh ``random.Random(seed)``).
- :class:`TokenBlocks` — blocks as a dataset of model inputs (``input_ids``, ``attention_mask``, and ``labels`` =
  the inputs: the causal-LM loss over every position).

Texts are tokenised as the reference does (``tokenizer(text)``: the tokenizer's own special tokens, e.g. Llama's BOS).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Sequence

import torch

from hfprune.errors import HfpruneError

TEXT_FIELD = "text"
SHORT_DRAWS = 1000  # consecutive draws of texts too short for a block before the texts are joined


def read_texts(source: str | Path) -> list[str]:
    """The texts of a local ``.txt``, ``.jsonl``/``.json`` (optionally ``.gz``) file or ``save_to_disk`` directory;
    an HfpruneError naming the source and the fix when it cannot be read or holds no text."""
    path = Path(source)
    if path.is_dir():
        texts = _dataset_texts(path)
    elif not path.is_file():
        raise HfpruneError(f"text source '{source}' not found: give a .txt, .jsonl or .json file (with a "
                           f"'{TEXT_FIELD}' field) or a directory written by datasets' save_to_disk")
    else:
        suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
        compressed = suffixes[-1:] == [".gz"]
        kind = suffixes[-2] if compressed and len(suffixes) == 2 else suffixes[-1] if suffixes else ""
        if kind not in (".txt", ".jsonl", ".json"):
            raise HfpruneError(f"text source '{source}' is neither .txt, .jsonl nor .json (optionally .gz); "
                               "convert it, or save a datasets dataset with save_to_disk")
        raw = _read(path, compressed)
        texts = [raw] if kind == ".txt" else _json_texts(raw, str(source))
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise HfpruneError(f"text source '{source}' holds no text")
    return texts


def _read(path: Path, compressed: bool) -> str:
    try:
        data = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
        return data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise HfpruneError(f"cannot read text source '{path}' ({type(error).__name__}: {error}); give UTF-8 "
                           "text") from None


def _json_texts(raw: str, source: str) -> list[str]:
    """A JSON list of objects, or JSON lines (one object per line), each with a string ``text`` field."""
    try:
        records = json.loads(raw) if raw.lstrip().startswith("[") else \
            [json.loads(line) for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise HfpruneError(f"'{source}' is neither a JSON list nor JSON lines: {error}") from None
    texts = []
    for number, record in enumerate(records):
        value = record.get(TEXT_FIELD) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise HfpruneError(f"'{source}', record {number}: expected an object with a string '{TEXT_FIELD}' "
                               f"field, found {str(record)[:80]!r}")
        texts.append(value)
    return texts


def _dataset_texts(path: Path) -> list[str]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise HfpruneError(f"'{path}' is a directory but not a dataset written by save_to_disk ({error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" not in loaded and len(splits) != 1:
            raise HfpruneError(f"dataset '{path}' has splits {splits} and no 'train'; save the split to calibrate on")
        loaded = loaded["train" if "train" in loaded else splits[0]]
    if TEXT_FIELD not in loaded.column_names:
        raise HfpruneError(f"dataset '{path}' has no '{TEXT_FIELD}' column (columns: {loaded.column_names})")
    return list(loaded[TEXT_FIELD])


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
