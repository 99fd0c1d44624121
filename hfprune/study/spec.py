"""What one trial of any study is: a candidate (what is pruned or trained), its sweep point and which repeat (seed)
of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Candidate(Protocol):
    """What one trial prunes or trains: a structured mask, an unstructured method, a sparse-training method at a
    budget, a search candidate, ..."""

    setting: str

    @property
    def mask_id(self) -> str:
        """Stable id of the candidate within its setting."""

    def facts(self) -> dict[str, Any]:
        """What a trial record keeps about the candidate."""


class Variant(Protocol):
    """A point of a recipe's sweep (:class:`hfprune.study.sweep.Variant`): its label names the trial."""

    label: str


@dataclass(frozen=True)
class TrialSpec:
    """A candidate, the sweep point it trains with (None: the recipe's training) and which repeat (run) it is."""

    candidate: Candidate
    repeat: int
    variant: Variant | None = None

    @property
    def trial_id(self) -> str:
        point = f":{self.variant.label}" if self.variant is not None and self.variant.label else ""
        return f"{self.candidate.setting}:{self.candidate.mask_id}{point}:r{self.repeat}"

    @property
    def directory_name(self) -> str:
        return self.trial_id.replace(":", "_")
