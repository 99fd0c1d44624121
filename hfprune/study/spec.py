"""What one trial of any study is: a candidate (what is pruned or trained) and which repeat (seed) of it."""

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


@dataclass(frozen=True)
class TrialSpec:
    """A candidate and which repeat (seed) it is."""

    candidate: Candidate
    repeat: int

    @property
    def trial_id(self) -> str:
        return f"{self.candidate.setting}:{self.candidate.mask_id}:r{self.repeat}"

    @property
    def directory_name(self) -> str:
        return self.trial_id.replace(":", "_")
