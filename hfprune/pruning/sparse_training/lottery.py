"""Iterative magnitude pruning with rewinding: the lottery ticket (Frankle & Carbin, 2019)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.masks import check_budget, dense_masks, magnitude_masks
from hfprune.pruning.sparse_training.phases import Phases
from hfprune.seeding import stable_seed
from hfprune.train.sections import TrainingSection


def round_nonzeros(round_index: int, prunings: int, total: int, budget: int) -> int:
    """Weights kept after pruning ``round_index`` of ``prunings``: total · (budget/total)^(r/R), rounded down
    (a constant rate per round); exactly the budget after the last."""
    if round_index >= prunings:
        return budget
    return int(total * (budget / total) ** (round_index / prunings))


class LotteryTicket(SparseTrainingMethod):
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; rewinding, Frankle et al. 2020).

    ``rounds`` full training runs (each ``run.training``, its schedule restarted); after every round but the
    last, the globally smallest |w| among the kept weights are pruned to :func:`round_nonzeros` and every
    parameter (biases too) is rewound to its value at initialisation, the rewind point of the reference
    (5 rounds of 50 epochs); the last round trains the budget's mask. ``epochs`` counts all rounds. Data order
    (``round_order``): ``same`` shuffles every round with the run's seed (every round sees the same batch order,
    our reading); ``fresh`` gives round r > 1 its own seed, as the reference's loader goes on shuffling from one
    round to the next. Its thresholds keep one weight fewer than asked (``reference_shortfall``).
    """

    name: Literal["imp"] = "imp"
    rounds: int = Field(5, ge=2, le=100, description="training rounds; all but the last end with a pruning "
                                                     "(paper: 5 rounds of 50 epochs)")
    round_order: Literal["same", "fresh"] = Field(
        "same", description="data order of the rounds: same (every round the run's) or fresh (a new shuffle per "
                            "round, as the reference)")
    reference_shortfall: ClassVar[int] = 1
    packs: ClassVar[str] = "yes: round by round (the trials of a pack train each round together)"

    def phase_count(self, run_training: TrainingSection) -> int:
        return self.rounds

    def round_seed(self, run: SparseRun, round_index: int) -> int:
        """The data-order seed of round ``round_index`` (1 first)."""
        if self.round_order == "same" or round_index == 1:
            return run.seed
        return stable_seed(run.seed, "imp-round", round_index)

    def phases(self, run: SparseRun, budget: int) -> Phases:
        check_budget(run, budget, self.name)
        rewind_point = {name: value.detach().clone() for name, value in run.model.state_dict().items()}
        masks, kept = dense_masks(run), []
        prunings = self.rounds - 1
        for round_index in range(1, self.rounds + 1):
            yield run.phase(masks, seed=self.round_seed(run, round_index),
                            description=f"{self.name} round {round_index}")
            if round_index <= prunings:
                keep = round_nonzeros(round_index, prunings, run.total_weights, budget)
                masks = magnitude_masks(run, keep, masks)
                kept.append(keep)
                run.model.load_state_dict(rewind_point)  # the next round's masks zero the pruned ones
        return SparseResult(masks, self.rounds * run.training.epochs, {"nonzeros_per_round": kept})
