"""What a study will train, counted before any work, and the refusal of a study beyond its bound.

Pure Python (no torch), so that ``hfprune run`` counts a study and refuses a huge one before the engine is
imported; the engine's kinds (:meth:`hfprune.study.kind.StudyKind.guard`) print and refuse through the same code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from hfprune.errors import HfpruneError

DEFAULT_MAX_TRIALS = 20_000  # a study of more trials asks first (execution.max_trials, hfprune run --yes)


@dataclass
class Cost:
    """What a study (or one of its stages) will train, counted before any work: trials by part, and an estimate of
    optimizer steps (None where unknown); ``pending`` names what is counted only later (a stage planned from an
    earlier one's records)."""

    parts: dict[str, int]
    steps: int | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(self.parts.values())

    def beyond(self, max_trials: int | None) -> bool:
        """Whether it counts more trials than ``max_trials`` (None: :data:`DEFAULT_MAX_TRIALS`)."""
        return self.trials > (max_trials or DEFAULT_MAX_TRIALS)

    def line(self, name: str) -> str:
        parts = ", ".join(f"{part} {count:,}" for part, count in self.parts.items() if count)
        steps = "" if self.steps is None else f"; about {self.steps:.3g} training steps"
        later = "".join(f"; {text}" for text in self.pending)
        return f"{name}: {self.trials:,} trials ({parts or 'none'}){steps}{later}"


def guard(cost: Cost, name: str, max_trials: int | None, go_on: bool) -> None:
    """Print what ``cost`` counts (one line on stderr) and refuse, before any work, a study of more trials than
    ``max_trials`` (None: :data:`DEFAULT_MAX_TRIALS`) unless the run says to go on (``hfprune run --yes``)."""
    print(cost.line(name), file=sys.stderr, flush=True)
    bound = max_trials or DEFAULT_MAX_TRIALS
    if cost.beyond(bound) and not go_on:
        raise HfpruneError(f"{name} has {cost.trials:,} trials, more than execution.max_trials ({bound:,}); "
                           f"to run them give `hfprune run --yes`, or set execution.max_trials: {cost.trials} in "
                           "the recipe (or narrow it: budgets, per_budget_limit, max_nonzeros, sweep)")
