"""Scoring styles: how a benchmark's raw answers are read, the way one evaluation codebase reads them.

``official`` follows the scripts behind the published LLaVA-1.5 / TinyLLaVA numbers (LLaVA's
``llava/eval``, copied by TinyLLaVA Factory): ``convert_gqa_for_eval.py`` + GQA's ``eval.py``,
``eval_science_qa.py``, ``eval_pope.py`` and the MM-Vet evaluator. ``lmms_eval`` follows lmms-eval's
task code. Both strip the generated text first and score TextVQA with the same EvalAI processor
(:mod:`~hfprune.evaluation.benchmarks.vqa_normalize`). A spec picks a style with ``scoring.style``;
``--style`` overrides it. A new style is a :class:`ScoringStyle` passed to :func:`register_style`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable, Optional

from hfprune.errors import HfpruneError

OPTION_LETTERS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options


@dataclass(frozen=True)
class ScoringStyle:
    name: str
    gqa: Callable[[str, str], tuple[str, bool]]  # (output, reference) -> (parsed, correct)
    sqa: Callable[[str, str, Optional[int]], tuple[Optional[str], bool]]  # (output, reference letter, choices)
    pope: Callable[[str], Optional[str]]  # output -> "yes", "no" or None (neither)
    pope_yes_ratio_of_references: bool  # the yes-ratio counts the references, not the predictions
    judge_grade: Callable[[str], Optional[float]]  # MM-Vet judge's reply -> grade in [0, 1], None if unusable
    description: str = ""


STYLES: dict[str, ScoringStyle] = {}


def register_style(style: ScoringStyle) -> ScoringStyle:
    STYLES[style.name] = style
    return style


def get_style(name: str) -> ScoringStyle:
    if name not in STYLES:
        raise HfpruneError(f"unknown scoring style '{name}'; choose one of: {', '.join(STYLES)}")
    return STYLES[name]


# --- official (LLaVA's scripts) -------------------------------------------------------------------


def official_gqa(output: str, reference: str) -> tuple[str, bool]:
    """``rstrip('.')`` and lowercase, then GQA's ``eval.py``: exact equality with the answer."""
    parsed = output.strip().rstrip(".").lower()
    return parsed, parsed == reference


_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # '.' is any character, as in the script


def official_letter(output: str) -> Optional[str]:
    """A bare option letter, a letter followed by ". ", or the single "The answer is X?" match."""
    text = output.strip()
    if text in OPTION_LETTERS:
        return text
    if len(text) >= 3 and text[0] in OPTION_LETTERS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


def official_sqa(output: str, reference: str, num_choices: Optional[int]) -> tuple[Optional[str], bool]:
    """The letter counts only if it names one of the question's choices (``get_pred_idx``); None: A-E."""
    letter = official_letter(output)
    parsed = letter if letter is not None and letter in OPTION_LETTERS[:num_choices] else None
    return parsed, parsed is not None and parsed == reference


def official_pope(output: str) -> str:
    """Text before the first '.', commas deleted, split on single spaces: 'no' if a word is No, not or no."""
    words = output.strip().split(".")[0].replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


def official_grade(reply: str) -> Optional[float]:
    """The MM-Vet evaluator's reading: the reply up to its first space, as a float within [0, 1].

    Like the evaluator, ``float`` decides what a number is, and a NaN passes its range check.
    """
    try:
        grade = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    return None if grade > 1.0 or grade < 0.0 else grade


# --- lmms-eval ------------------------------------------------------------------------------------

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def lmms_gqa(output: str, reference: str) -> tuple[str, bool]:
    """lmms-eval's ``exact_match`` with ignore_case and ignore_punctuation, on both sides."""
    parsed = output.strip().lower().translate(_NO_PUNCTUATION)
    return parsed, parsed == reference.lower().translate(_NO_PUNCTUATION)


def lmms_sqa(output: str, reference: str, num_choices: Optional[int]) -> tuple[Optional[str], bool]:
    """One character equal to the letter in any case, or an upper-case character followed by '.'."""
    text = output.strip()
    if len(text) == 1:
        parsed = text
    elif len(text) >= 2 and text[0].isupper() and text[1] == ".":
        parsed = text[0]
    else:
        return None, False
    return parsed, parsed.lower() == reference.lower()


def lmms_pope(output: str) -> Optional[str]:
    """Exactly 'yes' or 'no' in any case; anything else is neither."""
    text = output.lower().strip()
    return text if text in ("yes", "no") else None


def lmms_grade(reply: str) -> Optional[float]:
    """lmms-eval's MM-Vet reading: the stripped reply up to its first space, as a float within [0, 1]."""
    try:
        grade = float(reply.strip().split(" ")[0].strip())
    except ValueError:
        return None
    return grade if 0.0 <= grade <= 1.0 else None


register_style(ScoringStyle("official", official_gqa, official_sqa, official_pope, False, official_grade,
                            "LLaVA's evaluation scripts (the published LLaVA-1.5 / TinyLLaVA numbers)"))
register_style(ScoringStyle("lmms_eval", lmms_gqa, lmms_sqa, lmms_pope, True, lmms_grade,
                            "lmms-eval's task code"))
DEFAULT_STYLE = "official"
