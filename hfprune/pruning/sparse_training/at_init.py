"""Pruning at initialisation: SNIP, iterative SNIP, FORCE, GraSP, SynFlow and ProsPr (STUDY §5b baselines).

Each method scores the weights of the untrained model (:mod:`.saliency`), keeps exactly the budget, and trains
the model under those masks (:func:`.loop.train_masked`) from its initial weights — re-initialised
xavier-normal first where the sparse-MLP study's reference code does so (SNIP, GraSP). Settings follow that
reference code (its ``main_loop`` and ``pruning_methods``); where it differs from the papers or leaves things
open, the class docstring says which reading is taken. Two departures hold for all of them: the budget is met
exactly (the reference's strict ``>`` thresholds keep one weight fewer, or fewer on ties), and biases are never
masked (the reference zeroes the biases of neurons left with no outgoing weight, which changes no output).

Batches for scoring come from one shuffled stream of the training set seeded from ``run.seed``: the same seed
gives the same batches, hence the same masks.
"""

from __future__ import annotations

import numbers
import time
from typing import ClassVar, Iterator, Literal, Optional

import torch
from pydantic import Field

from hfprune.errors import HfpruneError
from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.phases import Phases
from hfprune.pruning.sparse_training.saliency import (
    LinearisedCopy,
    Masks,
    connection_sensitivity,
    exponential_keeps,
    hessian_gradient_scores,
    keep_highest,
    keep_lowest,
    meta_gradient_scores,
    synflow_scores,
)
from hfprune.train.trainer import make_loader


# -- shared pieces ----------------------------------------------------------------------------------------------
def check_budget(run: SparseRun, budget: int) -> None:
    """One clear error unless 0 < ``budget`` < the run's number of prunable weights."""
    total = run.total_weights
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or not 0 < budget < total:
        raise HfpruneError(f"budget must be a whole number of nonzero weights in [1, {total - 1}] (the model has "
                           f"{total} prunable weights), got {budget!r}; choose a budget below the dense count")


def batch_stream(run: SparseRun) -> Iterator[dict]:
    """Training batches of ``run.training.batch_size``, shuffled by a generator seeded from ``run.seed``, epoch
    after epoch without end."""
    loader = make_loader(run.train_set, run.training.batch_size, shuffle=True, seed=run.seed)
    if len(loader) == 0:
        raise HfpruneError("the training set is empty; pruning at initialisation needs batches to score on")
    while True:
        yield from loader


def reinitialise_xavier_normal(run: SparseRun) -> None:
    """Draw every prunable weight of ``run.model`` afresh, xavier-normal, from a generator seeded by ``run.seed``."""
    generator = torch.Generator().manual_seed(run.seed)
    with torch.no_grad():
        for weight in run.weights.values():
            fresh = torch.empty(weight.shape, dtype=torch.float32)
            torch.nn.init.xavier_normal_(fresh, generator=generator)
            weight.copy_(fresh)


def input_shape(run: SparseRun) -> torch.Size:
    """The shape of one training input (without the batch dimension); its values are not read."""
    first = next(iter(make_loader(run.train_set, 1, shuffle=False, seed=0)))
    return first[getattr(run.model, "main_input_name", "inputs")].shape[1:]


class AtInitialisationMethod(SparseTrainingMethod):
    """A method that chooses its masks before any training (:meth:`prune`), then trains under them."""

    at_initialisation: ClassVar[bool] = True

    def prune(self, run: SparseRun, budget: int) -> Masks:
        """The masks (True = kept, exactly ``budget`` over ``run.weights``), chosen on the untrained model; may
        re-initialise ``run.model``'s weights first (SNIP, GraSP)."""
        raise NotImplementedError

    def phases(self, run: SparseRun, budget: int) -> Phases:
        """Prune ``run.model`` at initialisation to ``budget`` nonzero weights, then train it under the masks."""
        check_budget(run, budget)
        start = time.perf_counter()
        masks = self.prune(run, int(budget))
        scoring_seconds = time.perf_counter() - start
        trained = yield run.phase(masks, description=self.name)
        return SparseResult(masks, epochs=run.training.epochs, facts={"last_epoch_loss": trained.last_epoch_loss},
                            timings={"masks_s": scoring_seconds, "masked_train_s": trained.seconds})


# -- the methods ------------------------------------------------------------------------------------------------
class Snip(AtInitialisationMethod):
    """SNIP (Lee et al., 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"), pruning at
    initialisation: score |∂L/∂w ⊙ w| (= |∂L/∂c| at c = 1) on ``batches`` training batches, keep the highest
    ``budget`` over all layers together.

    As the reference, the prunable weights are re-initialised xavier-normal before scoring (``reinit``) and the
    model trains from those. With several batches (the reference uses one) the gradient is averaged over them
    before the absolute value (our reading)."""

    name: Literal["snip"] = "snip"
    batches: int = Field(1, gt=0, le=1 << 16, description="training batches the gradient is averaged over")
    reinit: bool = Field(True, description="re-initialise the prunable weights xavier-normal before scoring")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        if self.reinit:
            reinitialise_xavier_normal(run)
        stream = batch_stream(run)
        batches = [next(stream) for _ in range(self.batches)]
        scores = connection_sensitivity(run.model, run.weights, run.loss_fn, batches)
        return keep_highest(scores, budget)


class IterSnip(AtInitialisationMethod):
    """Iterative SNIP (de Jorge et al., 2021, "Progressive Skeletonization: Trimming More Fat from a Network at
    Initialization"), pruning at initialisation: ``steps`` rounds keeping total·(budget/total)^(t/steps) weights;
    each round scores |∂L/∂w ⊙ w| of the pruned network on fresh batches and prunes only among the weights still
    kept (what is pruned stays pruned).

    The reference calls it with 10 exponential steps and one batch per step, without re-initialising; with one
    step it is SNIP without re-initialisation. Its per-step batch is the first of a fresh shuffle; ours is the
    next batch of one seeded stream (the same kind of random batch)."""

    name: Literal["iter_snip"] = "iter_snip"
    reference_shortfall: ClassVar[int] = 1  # its last round keeps the scores strictly above the budget-th
    steps: int = Field(10, gt=0, le=1 << 12, description="pruning rounds of the exponential schedule")
    batches: int = Field(1, gt=0, le=1 << 16, description="training batches each round's gradient averages over")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        stream = batch_stream(run)
        kept: Masks | None = None
        for keep in exponential_keeps(run.total_weights, budget, self.steps):
            batches = [next(stream) for _ in range(self.batches)]
            scores = connection_sensitivity(run.model, run.weights, run.loss_fn, batches, masks=kept)
            kept = keep_highest(scores, keep, alive=kept)
        return kept


class Force(AtInitialisationMethod):
    """FORCE (de Jorge et al., 2021, "Progressive Skeletonization"), pruning at initialisation: as iterative
    SNIP, but each round scores |w₀ ⊙ ∂L/∂w| at the pruned point w₀ ⊙ m with the *original* weights w₀ and
    chooses among all weights, so pruned weights can come back.

    The reference calls it with 10 exponential steps and one batch per step, without re-initialising; with one
    step it is SNIP without re-initialisation."""

    name: Literal["force"] = "force"
    reference_shortfall: ClassVar[int] = 1  # its last round keeps the scores strictly above the budget-th
    steps: int = Field(10, gt=0, le=1 << 12, description="pruning rounds of the exponential schedule")
    batches: int = Field(1, gt=0, le=1 << 16, description="training batches each round's gradient averages over")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        stream = batch_stream(run)
        original = {name: weight.detach().double().cpu() for name, weight in run.weights.items()}
        kept: Masks | None = None
        for keep in exponential_keeps(run.total_weights, budget, self.steps):
            batches = [next(stream) for _ in range(self.batches)]
            scores = connection_sensitivity(run.model, run.weights, run.loss_fn, batches, masks=kept, scale=original)
            kept = keep_highest(scores, keep)
        return kept


class Grasp(AtInitialisationMethod):
    """GraSP (Wang et al., 2020, "Picking Winning Tickets Before Training by Preserving Gradient Flow"), pruning
    at initialisation: score −w ⊙ Hg and keep the ``budget`` *lowest* scores (the reference's sign convention:
    it removes the highest).

    As the reference: weights re-initialised xavier-normal first (``reinit``); ``samples_per_class`` (25)
    samples of each of ``num_classes`` classes, the first met in a seeded shuffle, concatenated class after
    class and cut into two halves (so with two classes each half holds one class); g is the sum of the halves'
    gradients, Hg the sum of the halves' Hessian-vector products; logits divided by ``temperature`` (200). With
    one output logit the reference passes max(2, out_dim) = 2 classes, read from the 0/1 labels."""

    name: Literal["grasp"] = "grasp"
    reinit: bool = Field(True, description="re-initialise the prunable weights xavier-normal before scoring")
    samples_per_class: int = Field(25, gt=0, le=1 << 16)
    num_classes: Optional[int] = Field(None, ge=2, le=1 << 16, description="classes the labels take "
                                       "(0..num_classes-1) [default: the model's labels; 2 for one logit]")
    temperature: float = Field(200.0, gt=0, description="logits are divided by this while scoring (GraSP's T)")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        if self.reinit:
            reinitialise_xavier_normal(run)
        scores = hessian_gradient_scores(run.model, run.weights, run.loss_fn, self.halves(run), self.temperature)
        return keep_lowest(scores, budget)

    def classes(self, run: SparseRun) -> int:
        """``num_classes``, else the model's: its config's label count, 2 for a one-logit binary classifier."""
        if self.num_classes is not None:
            return self.num_classes
        return max(2, getattr(getattr(run.model, "config", None), "num_labels", 2) or 2)

    def halves(self, run: SparseRun) -> list[dict]:
        """The class-balanced sample, class after class, cut into two halves."""
        num_classes = self.classes(run)
        chosen: list[list[dict]] = [[] for _ in range(num_classes)]
        loader = make_loader(run.train_set, run.training.batch_size, shuffle=True, seed=run.seed)
        for batch in loader:
            for index in range(len(batch["labels"])):
                label = float(batch["labels"][index])
                if label != int(label) or not 0 <= label < num_classes:
                    raise HfpruneError(f"grasp: label {label} is not a class in 0..{num_classes - 1}; set "
                                       "grasp's num_classes to the number of classes of the labels")
                if len(chosen[int(label)]) < self.samples_per_class:
                    chosen[int(label)].append({key: value[index] for key, value in batch.items()})
            if all(len(samples) == self.samples_per_class for samples in chosen):
                break
        else:
            counts = [len(samples) for samples in chosen]
            raise HfpruneError(f"grasp: the training set has fewer than samples_per_class={self.samples_per_class} "
                               f"samples of some class (found {counts}); lower grasp's samples_per_class")
        samples = [sample for samples in chosen for sample in samples]
        middle = len(samples) // 2
        return [{key: torch.stack([sample[key] for sample in part]) for key in part[0]}
                for part in (samples[:middle], samples[middle:])]


class Synflow(AtInitialisationMethod):
    """SynFlow (Tanaka et al., 2020, "Pruning neural networks without any data by iteratively conserving
    synaptic flow"), pruning at initialisation without data: ``iterations`` (100) rounds of the exponential
    schedule, each scoring |∂R/∂w ⊙ w| of the linearised network (all parameters, biases included, replaced by
    their absolute values; ReLUs kept; one all-ones input; R the summed output) and pruning among the weights
    still kept. Computed in float64 so that tiny budgets do not underflow. The model keeps its initial weights
    (the reference does not re-initialise)."""

    name: Literal["synflow"] = "synflow"
    reference_shortfall: ClassVar[int] = 1  # keeps the scores strictly above its (N − budget)-th smallest
    iterations: int = Field(100, gt=0, le=1 << 12, description="pruning rounds of the exponential schedule")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        shape = input_shape(run)
        linearised = LinearisedCopy(run.model, run.weights)
        kept: Masks | None = None
        for keep in exponential_keeps(run.total_weights, budget, self.iterations):
            kept = keep_highest(synflow_scores(linearised, run.weights, shape, masks=kept), keep, alive=kept)
        return kept


class Prospr(AtInitialisationMethod):
    """ProsPr (Alizadeh et al., 2022, "Prospect Pruning: Finding Trainable Weights at Initialization using
    Meta-Gradients"), pruning at initialisation: masks c on the weights, ``steps`` (3) differentiable SGD steps
    of the masked model with the run's lr and momentum (no weight decay, as the reference), each on a new batch;
    score |∂L/∂c| of the loss on the next batch, through those steps; keep the highest ``budget``.

    As the reference: the full (second-order) meta-gradient, no re-initialisation, training mode, and the first
    step's momentum buffer detached (see :func:`.saliency.meta_gradient_scores`). With 0 steps it is SNIP without
    re-initialisation."""

    name: Literal["prospr"] = "prospr"
    steps: int = Field(3, ge=0, le=1 << 10, description="differentiable SGD steps the meta-gradient goes through")

    def prune(self, run: SparseRun, budget: int) -> Masks:
        check_budget(run, budget)
        stream = batch_stream(run)
        batches = [next(stream) for _ in range(self.steps + 1)]
        optimizer = run.training.optimizer
        scores = meta_gradient_scores(run.model, run.weights, run.loss_fn, batches, optimizer.lr, optimizer.momentum)
        return keep_highest(scores, budget)


AT_INITIALISATION_METHODS = (Snip, IterSnip, Force, Grasp, Synflow, Prospr)
