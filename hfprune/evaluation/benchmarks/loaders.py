"""Loaders: from a benchmark's dataset rows to :class:`BenchmarkSample` s.

A loader is registered under a name with the columns it needs and the prompt fields it provides;
the spec's prompt template is formatted with those fields. Its ``references`` function reads the
reference fields of a row (the same for ``hfprune score``'s rows) into references and scorer meta.
Each loader reads one Hub schema:

- ``gqa`` (``lmms-lab/GQA``): ``id``, ``question``, ``answer``, ``image`` (joined by ``imageId``).
- ``scienceqa`` (``lmms-lab/ScienceQA``, ``ScienceQA-IMG``): ``image``, ``question``, ``choices``,
  ``answer`` (index of the right choice), ``hint``; no id column, so the row index is the id.
  Rows without an image are skipped.
- ``textvqa`` (``lmms-lab/textvqa``): ``question_id``, ``question``, ``image``, ``answers`` (10),
  ``ocr_tokens``. Besides ``question`` and ``ocr_tokens`` (comma-joined) it provides the fields of
  LLaVA's TextVQA question file (``llava_textvqa_val_v051_ocr.jsonl``): ``question_capitalized``
  and ``ocr_line``, "\nReference OCR token: t1, t2, ..." (empty when the image has no OCR tokens).
- ``pope`` (``lmms-lab/POPE``): ``question_id``, ``question``, ``answer`` (yes/no), ``image``,
  ``category`` (adversarial / popular / random, all in split ``test``).
- ``mmvet`` (``lmms-lab/MMVet``): ``question_id``, ``question``, ``answer``, ``image``,
  ``capability`` (comma-separated, e.g. ``ocr,math``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hfprune.errors import HfpruneError
from hfprune.evaluation.benchmarks.base import BenchmarkSample
from hfprune.evaluation.benchmarks.data import open_image



@dataclass
class LoadedRow:
    """What a loader reads from one row; ``fields`` fill the prompt template."""

    sample_id: str
    image: Any
    fields: dict[str, str]
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


RowReader = Callable[[int, dict], Optional[LoadedRow]]
References = Callable[[dict], tuple[list[str], dict[str, Any]]]  # row -> (references, scorer meta)


@dataclass(frozen=True)
class Loader:
    read: RowReader  # (row index, row) -> LoadedRow, or None to skip the row
    columns: tuple[str, ...]  # columns every row must have
    fields: tuple[str, ...]  # names the prompt template may use
    optional: tuple[str, ...] = ()  # columns used when present
    references: Optional[References] = None


LOADERS: dict[str, Loader] = {}


def register_loader(name: str, *, columns, fields, optional=(), references: Optional[References] = None):
    """Decorator: register a row reader as loader ``name``."""

    def decorate(read: RowReader) -> RowReader:
        LOADERS[name] = Loader(read, tuple(columns), tuple(fields), tuple(optional), references)
        return read

    return decorate


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _loaded(sample_id: str, row: dict, fields: dict[str, str], references: References) -> LoadedRow:
    answers, meta = references(row)
    return LoadedRow(sample_id, open_image(row["image"]), fields, answers, meta)


def gqa_references(row: dict) -> tuple[list[str], dict]:
    return [_text(row["answer"])], {}


@register_loader("gqa", columns=("id", "question", "answer", "image"), fields=("question",), references=gqa_references)
def read_gqa(index: int, row: dict) -> LoadedRow:
    return _loaded(str(row["id"]), row, {"question": _text(row["question"])}, gqa_references)


def _letters(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def scienceqa_references(row: dict) -> tuple[list[str], dict]:
    """The letter of the right choice (``answer`` is its 0-based index) and the choices."""
    choices = [str(choice) for choice in row["choices"]]
    answer = int(row["answer"])
    if not 0 <= answer < len(choices):
        raise ValueError(f"field 'answer' ({answer}) is not the 0-based index of one of its {len(choices)} choices")
    return [_letters(len(choices))[answer]], {"choices": choices}


@register_loader(
    "scienceqa",
    columns=("image", "question", "choices", "answer"),
    fields=("context", "hint", "question", "choices"),
    optional=("hint",),
    references=scienceqa_references,
)
def read_scienceqa(index: int, row: dict) -> Optional[LoadedRow]:
    image = open_image(row["image"])
    if image is None:
        return None
    try:
        references, meta = scienceqa_references(row)
    except ValueError as error:
        raise HfpruneError(f"ScienceQA row {index}: {error}") from None
    choices = meta["choices"]
    hint = _text(row.get("hint"))
    fields = {
        "context": f"Context: {hint}\n" if hint else "",
        "hint": hint,
        "question": _text(row["question"]),
        "choices": "\n".join(f"{letter}. {choice}" for letter, choice in zip(_letters(len(choices)), choices)),
    }
    return LoadedRow(str(index), image, fields, references, meta)


def textvqa_references(row: dict) -> tuple[list[str], dict]:
    return [str(answer) for answer in row["answers"]], {}


@register_loader(
    "textvqa",
    columns=("question_id", "question", "image", "answers"),
    fields=("question", "question_capitalized", "ocr_tokens", "ocr_line"),
    optional=("ocr_tokens",),
    references=textvqa_references,
)
def read_textvqa(index: int, row: dict) -> LoadedRow:
    question, tokens = _text(row["question"]), ", ".join(row.get("ocr_tokens") or [])
    fields = {"question": question, "question_capitalized": question.capitalize(), "ocr_tokens": tokens,
              "ocr_line": f"\nReference OCR token: {tokens}" if tokens else ""}
    return _loaded(str(row["question_id"]), row, fields, textvqa_references)


def pope_references(row: dict) -> tuple[list[str], dict]:
    """The yes/no answer, and the split (``category``) when the row has one."""
    category = _text(row.get("category"))
    return [_text(row["answer"]).lower()], ({"category": category} if category else {})


@register_loader("pope", columns=("question_id", "question", "answer", "image", "category"), fields=("question",),
                 references=pope_references)
def read_pope(index: int, row: dict) -> LoadedRow:
    return _loaded(f"{_text(row['category'])}-{row['question_id']}", row, {"question": _text(row["question"])},
                   pope_references)


def mmvet_references(row: dict) -> tuple[list[str], dict]:
    """The reference answer; the question and capabilities (``capability``: comma-separated or a list)."""
    capability = row.get("capability") or []
    capabilities = capability.split(",") if isinstance(capability, str) else list(capability)
    meta = {"question": _text(row["question"]), "capabilities": [c.strip() for c in capabilities if c.strip()]}
    return [_text(row["answer"])], meta


@register_loader("mmvet", columns=("question_id", "question", "answer", "image"), fields=("question",),
                 optional=("capability",), references=mmvet_references)
def read_mmvet(index: int, row: dict) -> LoadedRow:
    return _loaded(str(row["question_id"]), row, {"question": _text(row["question"])}, mmvet_references)
