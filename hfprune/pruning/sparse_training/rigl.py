"""RigL, the rigged lottery (Evci et al., 2020): a sparse mask from the start, rewired during training."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.sparse_training.base import SparseResult, SparseRun, SparseTrainingMethod
from hfprune.pruning.sparse_training.loop import total_steps
from hfprune.pruning.sparse_training.masks import Masks, check_budget, top_k
from hfprune.pruning.sparse_training.phases import Phases, TrainPhase


def erk_densities(shapes: list[torch.Size], density: float, power: float = 1.0) -> list[float]:
    """Erdős–Rényi-kernel densities: layer l keeps ε·((Σ shape)/(Π shape))^power of its weights, ε set so the
    overall density is ``density``; a layer whose density would pass 1 is made dense and ε found again."""
    sizes = [math.prod(shape) for shape in shapes]
    dense: set[int] = set()
    while True:
        raw = [None if index in dense else (sum(shape) / size) ** power
               for index, (shape, size) in enumerate(zip(shapes, sizes))]
        free = sum(size for index, size in enumerate(sizes) if index not in dense) * density
        free -= sum(size * (1 - density) for index, size in enumerate(sizes) if index in dense)
        epsilon = free / sum(r * size for r, size in zip(raw, sizes) if r is not None)
        largest = max(r for r in raw if r is not None)
        if largest * epsilon <= 1:
            return [1.0 if r is None else r * epsilon for r in raw]
        dense.update(index for index, r in enumerate(raw) if r == largest)


def erk_counts(shapes: list[torch.Size], budget: int, power: float = 1.0) -> list[int]:
    """Whole numbers of weights per layer, summing to exactly ``budget``, as close to the ERK shares as can be.

    Each layer gets its share rounded down, at least one weight when the budget has one for every layer (the
    reference rounds every share up, which can overshoot a tiny budget); the rest go to the largest remainders
    (ties: the earlier layer), an excess from the minimum of one comes off the layers furthest above their share.
    """
    sizes = [math.prod(shape) for shape in shapes]
    shares = [d * size for d, size in zip(erk_densities(shapes, budget / sum(sizes), power), sizes)]
    counts = [min(size, math.floor(share)) for share, size in zip(shares, sizes)]
    if budget >= len(shapes):
        counts = [max(1, count) for count in counts]
    layers = range(len(shapes))
    while sum(counts) > budget:
        index = max((l for l in layers if counts[l] > 1), key=lambda l: (counts[l] - shares[l], -l))
        counts[index] -= 1
    while sum(counts) < budget:
        index = max((l for l in layers if counts[l] < sizes[l]), key=lambda l: (shares[l] - counts[l], -l))
        counts[index] += 1
    return counts


def erk_random_masks(run: SparseRun, budget: int, power: float, generator: torch.Generator) -> Masks:
    """Per layer, :func:`erk_counts` weights kept uniformly at random."""
    shapes = [weight.shape for weight in run.weights.values()]
    masks = {}
    for (name, weight), keep in zip(run.weights.items(), erk_counts(shapes, budget, power)):
        flat = torch.zeros(weight.numel(), dtype=torch.bool)
        flat[torch.randperm(weight.numel(), generator=generator)[:keep]] = True
        masks[name] = flat.view(weight.shape)
    return masks


def rewire(mask: torch.Tensor, weight: torch.Tensor, gradient: torch.Tensor, fraction: float) -> torch.Tensor:
    """One layer's RigL update: drop the ``int(fraction · kept)`` smallest |w| among the kept weights, grow as
    many where |dense gradient| is largest among the rest (a weight just dropped may come back)."""
    kept = int(mask.sum())
    drop = int(kept * fraction)
    if drop == 0:
        return mask
    below = torch.tensor(-1.0)  # under every |score|: never chosen
    survivors = top_k(torch.where(mask, weight.abs(), below), kept - drop)
    grown = top_k(torch.where(survivors, below, gradient.abs()), drop)
    return survivors | grown


class RigL(SparseTrainingMethod):
    """RigL (Evci et al., "Rigging the Lottery: Making All Tickets Winners", 2020), as the reference runs it.

    Prunes at initialisation to a random mask of exactly the budget spread over the layers by ERK
    (:func:`erk_counts`), then every ``delta`` steps until ``t_end`` of training rewires each layer
    (:func:`rewire`) with drop fraction alpha/2 · (1 + cos(π t / T_end)); each layer keeps its count, so the
    budget holds at every step. Grown weights start at 0. The dense gradient is that of the step's batch
    (``gradient``): ``after_update`` (our reading) takes it after this step's update; ``before_update`` (the
    reference) skips the update of a rewiring step, so the gradient is at the weights the batch saw and that batch
    trains nothing. ``reset_momentum`` (the reference) zeroes the momentum of pruned weights after every step, so a
    grown weight starts without momentum; without it a pruned weight's momentum decays by the momentum factor each
    step it stays pruned (≥ ``delta`` steps before it can be grown). With ``before_update`` or ``reset_momentum``
    (SGD only) the trial trains through the packed engine, alone or packed.
    """

    name: Literal["rigl"] = "rigl"
    delta: int = Field(100, ge=1, le=1_000_000, description="steps between mask updates (paper: 100)")
    alpha: float = Field(0.3, gt=0, le=1, description="initial drop fraction, cosine-decayed (paper: 0.3)")
    t_end: float = Field(0.75, gt=0, le=1, description="share of training after which the mask is fixed (paper: 0.75)")
    erk_power: float = Field(1.0, ge=0, le=10, description="ERK exponent on (fan-in + fan-out)/size (paper: 1)")
    gradient: Literal["after_update", "before_update"] = Field(
        "after_update", description="dense gradient of a rewiring step: after its update, or before it with the "
                                    "update skipped (the reference)")
    reset_momentum: bool = Field(False, description="zero the momentum of pruned weights after every step (the "
                                                    "reference; SGD)")
    packs: ClassVar[str] = "yes: each model rewires from its own weights and the batch of the step inside the pack"

    def drop_fraction(self, step: int, end: int) -> float:
        return self.alpha / 2 * (1 + math.cos(step * math.pi / end))

    def rewires(self, step: int, end: int) -> bool:
        """Whether the mask changes after step ``step`` (counted from 1)."""
        return step % self.delta == 0 and step < end

    def phases(self, run: SparseRun, budget: int) -> Phases:
        check_budget(run, budget, self.name)
        end = int(self.t_end * total_steps(run))
        masked = MaskedParameters(run.model, erk_random_masks(run, budget, self.erk_power,
                                                              torch.Generator().manual_seed(run.seed)))
        counts = {"updates": 0, "grown": 0}
        phase: TrainPhase

        def update(step: int) -> None:
            if not self.rewires(step, end):
                return
            gradients = dense_gradients(run, masked, phase.step_model, phase.step_batch)
            fraction = self.drop_fraction(step, end)
            old = dict(zip(masked.names, masked.masks))
            new = {name: rewire(old[name], weight.detach().cpu(), gradients[name], fraction)
                   for name, weight in run.weights.items()}
            counts["grown"] += sum(int((new[name] & ~old[name]).sum()) for name in new)
            counts["updates"] += 1
            masked.update(new)

        skip = (lambda step: self.rewires(step, end)) if self.gradient == "before_update" else None
        phase = run.phase(masked, description=self.name, on_step=update, skip_update=skip,
                          reset_momentum=self.reset_momentum)
        yield phase
        masks = dict(zip(masked.names, masked.masks))
        return SparseResult(masks, run.training.epochs, {"updates": counts["updates"], "grown": counts["grown"],
                                                         "update_end_step": end})


def dense_gradients(run: SparseRun, masked: MaskedParameters, model, batch) -> dict[str, torch.Tensor]:
    """Gradients of every prunable weight on ``batch``, pruned ones included (the mask hooks set aside); under
    DDP, of this process's batch, computed on the wrapped module outside DDP's reducer."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    masked.detach()
    try:
        with torch.enable_grad():
            loss = run.loss_fn(model, batch)
            gradients = torch.autograd.grad(loss, list(run.weights.values()))
    finally:
        masked.attach()
    return {name: gradient.detach().cpu() for name, gradient in zip(run.weights, gradients)}
