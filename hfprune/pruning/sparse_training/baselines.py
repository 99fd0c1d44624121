"""Two plain baselines: a random mask at initialisation, and magnitude pruning once after dense training."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.masks import check_budget, dense_masks, magnitude_masks, random_masks
from hfprune.pruning.sparse_training.phases import Phases
from hfprune.train.sections import TrainingSection


class RandomSparse(SparseTrainingMethod):
    """A uniformly random mask of exactly the budget over all prunable weights together, drawn at
    initialisation from the run's seed, then trained (the usual random-pruning baseline; not among the paper's
    pruning methods)."""

    name: Literal["random_at_init"] = "random_at_init"
    at_initialisation: ClassVar[bool] = True

    def phases(self, run: SparseRun, budget: int) -> Phases:
        check_budget(run, budget, self.name)
        masks = random_masks(run, budget, torch.Generator().manual_seed(run.seed))
        yield run.phase(masks, description=self.name)
        return SparseResult(masks, run.training.epochs)


class MagnitudeAfterTraining(SparseTrainingMethod):
    """The classic prune-after-training baseline (Han et al., 2015, one shot): train densely, keep the budget's
    largest |w| over all prunable weights together, fine-tune with that mask for as many epochs again. Not among
    the paper's pruning methods; its gradual and iterative relatives are ``gradual_magnitude`` and ``imp``."""

    name: Literal["magnitude"] = "magnitude"
    packs: ClassVar[str] = "yes: phase by phase (the dense training, then the fine-tuning)"

    def phase_count(self, run_training: TrainingSection) -> int:
        return 2

    def phases(self, run: SparseRun, budget: int) -> Phases:
        check_budget(run, budget, self.name)
        yield run.phase(dense_masks(run), description=f"{self.name} dense")
        masks = magnitude_masks(run, budget)
        yield run.phase(masks, description=f"{self.name} fine-tune")
        return SparseResult(masks, 2 * run.training.epochs)
