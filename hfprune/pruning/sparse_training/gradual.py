"""Gradual magnitude pruning during training (Zhu & Gupta, 2017), as the sparse-MLP study runs it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from hfprune.errors import HfpruneError
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.loop import total_steps
from hfprune.pruning.sparse_training.masks import check_budget, dense_masks, magnitude_masks
from hfprune.pruning.sparse_training.phases import Phases


def cubic_nonzeros(event: int, events: int, total: int, budget: int) -> int:
    """Weights kept after pruning event ``event`` of ``events``: budget + (total − budget)(1 − e/E)³, rounded
    down; exactly the budget at the last event."""
    if event >= events:
        return budget
    return int(budget + (total - budget) * (1 - event / events) ** 3)


class GradualMagnitude(SparseTrainingMethod):
    """Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017), the study's "imp" run.

    Prunes during one training run: the steps are cut into ``events + 1`` equal intervals and at the end of each
    of the first ``events`` (after that step's update) the globally smallest |w| among the kept weights are
    pruned down to :func:`cubic_nonzeros`; the last event reaches the budget, and training goes on with that
    mask to the end. Pruned weights never return. (Reading: the reference also prunes at a 200th event, where
    its schedule passes t/T = 1 and undershoots the budget; here the schedule ends at the budget. A run with
    fewer steps than ``events + 1`` prunes after every step but the last.) The reference's thresholds keep one
    weight fewer than asked and its last events pass t/T = 1, so it ends at budget − 2 (``reference_shortfall``).
    """

    name: Literal["gradual_magnitude"] = "gradual_magnitude"
    events: int = Field(199, ge=1, le=1_000_000, description="pruning events during training (paper: 199)")
    reference_shortfall: ClassVar[int] = 2
    packs: ClassVar[str] = "yes: each model's pruning events run on its own weights inside the pack"

    def phases(self, run: SparseRun, budget: int) -> Phases:
        check_budget(run, budget, self.name)
        steps = total_steps(run)
        if steps < 2:
            raise HfpruneError(f"{self.name}: training takes {steps} optimizer step(s); it needs at least 2 to prune "
                               "during training (raise epochs or lower batch_size)")
        events = min(self.events, steps - 1)
        interval = steps // (events + 1)
        total = run.total_weights
        masked = MaskedParameters(run.model, dense_masks(run))
        pruned_at: list[tuple[int, int]] = []

        def prune(step: int) -> None:
            event, rest = divmod(step, interval)
            if rest or not 1 <= event <= events:
                return
            keep = cubic_nonzeros(event, events, total, budget)
            masked.update(magnitude_masks(run, keep, dict(zip(masked.names, masked.masks))))
            pruned_at.append((step, keep))

        yield run.phase(masked, description=self.name, on_step=prune)
        masks = dict(zip(masked.names, masked.masks))
        return SparseResult(masks, run.training.epochs, {"events": events, "interval_steps": interval,
                                                         "pruned_at": pruned_at})
