"""How an unstructured method spreads its sparsity over the target Linears (its budgets).

- :class:`Uniform` — every target at the same ratio S;
- :class:`Global` — one budget round(S·N) over all targets together (one global threshold of the score);
- :class:`OutlierProfile` (after OWL, Yin et al. 2024) — per decoder layer from its outlier ratio D_l, the share
  of its target weights whose score exceeds M × the layer's mean score;
- :class:`PcaProfile` (our reading of the study's PNP) — per decoder layer from its PCA share: the number of
  principal components needed to explain ``variance`` of the variance of a matrix's rows (columns centred,
  singular values in float32) / min(out, in), size-weighted over the layer's matrices.

The profiles map a higher layer score to a lower sparsity with :func:`spread_ratios`. A decoder layer is every
target inside one block (one item of the outermost ``nn.ModuleList`` it lies in); a target in no block is its
own group. Inside a Linear, k = round(ratio·n) (round half up) weights go, so the total pruned is round(S·N)
within ±1 per Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured.calibration import current_residency
from hfprune.pruning.unstructured.scores import ScoreFn, Scoring, WeightScore
from hfprune.pruning.unstructured.targets import group_by_layer


@dataclass(frozen=True)
class Budget:
    """Prune ``count`` weights, the lowest-scoring over ``names`` together; ``ratio`` is the sparsity of a
    one-Linear budget (None for a budget over several)."""

    names: tuple[str, ...]
    count: int
    ratio: float | None = None


@dataclass
class Allocated:
    budgets: list[Budget]
    layer_ratios: dict[str, float] | None = None  # None: read the achieved ratios off the masks
    group_scores: dict[str, float] = field(default_factory=dict)


def progress_over(items, description: str, enabled: bool):
    return tqdm(items, desc=description, leave=False) if enabled else items


class Allocation:
    """Budgets of a sparsity over the target Linears."""

    def allocate(self, targets: Mapping[str, nn.Linear], sparsity: float, scoring: Scoring,
                 progress: bool = False) -> Allocated:
        raise NotImplementedError


class LayerRatios(Allocation):
    """Gives every target Linear a sparsity ratio; prunes round(ratio·n) of its lowest scores."""

    def ratios(self, targets, sparsity, scoring, progress) -> tuple[dict[str, float], dict[str, float]]:
        """Per-Linear ratios and per-group scores (empty when the allocation has none)."""
        raise NotImplementedError

    def allocate(self, targets, sparsity, scoring, progress=False) -> Allocated:
        ratios, scores = self.ratios(targets, sparsity, scoring, progress)
        budgets = [Budget((name,), num_pruned(linear.weight.numel(), ratios[name]), ratios[name])
                   for name, linear in targets.items()]
        return Allocated(budgets, ratios, scores)


class Uniform(LayerRatios):
    def ratios(self, targets, sparsity, scoring, progress):
        return {name: sparsity for name in targets}, {}


class Global(Allocation):
    def allocate(self, targets, sparsity, scoring, progress=False) -> Allocated:
        total = sum(linear.weight.numel() for linear in targets.values())
        return Allocated([Budget(tuple(targets), num_pruned(total, sparsity))])


@dataclass(frozen=True)
class LayerProfile(LayerRatios):
    """Scores each decoder layer; a higher score gets a lower sparsity, spread over [S − lam, S + lam]."""

    lam: float

    def group_score(self, layers: list[tuple[str, nn.Linear]], scoring: Scoring) -> float:
        raise NotImplementedError

    def ratios(self, targets, sparsity, scoring, progress):
        groups = group_by_layer(targets, scoring.model)
        scores = current_residency().group_scores(self, groups, targets, scoring, progress)
        sizes = {group: sum(targets[name].weight.numel() for name in names) for group, names in groups.items()}
        group_ratios = spread_ratios(scores, sizes, sparsity, self.lam)
        return {name: group_ratios[group] for group, names in groups.items() for name in names}, scores


@dataclass(frozen=True)
class OutlierProfile(LayerProfile):
    outlier_m: float
    score: WeightScore

    def group_score(self, layers, scoring) -> float:
        return outlier_ratio(layers, scoring(self.score), self.outlier_m)


@dataclass(frozen=True)
class PcaProfile(LayerProfile):
    variance: float

    def group_score(self, layers, scoring) -> float:
        return layer_pca_share(layers, self.variance)


def spread_ratios(scores: Mapping[str, float], sizes: Mapping[str, int], sparsity: float,
                  lam: float) -> dict[str, float]:
    """Per-group sparsities: scores mapped linearly by min-max onto [S−λ, S+λ] (highest score → S−λ), shifted
    so that their size-weighted mean is S (as OWL centres its ratios), then clipped to [0, 1].

    Equal scores give every group S. The shift keeps the spread (max − min = 2λ) but can move the ends
    out of [S−λ, S+λ] when the scores are skewed; clipping (only when S is within 2λ of 0 or 1) moves the mean.
    """
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {group: sparsity for group in scores}
    ratios = {group: sparsity + lam - 2 * lam * (score - low) / (high - low) for group, score in scores.items()}
    total = sum(sizes[group] for group in ratios)
    shift = sparsity - sum(ratio * sizes[group] for group, ratio in ratios.items()) / total
    return {group: min(1.0, max(0.0, ratio + shift)) for group, ratio in ratios.items()}


def outlier_ratio(layers: Iterable[tuple[str, nn.Linear]], score: ScoreFn, outlier_m: float) -> float:
    """D_l: the share of the layer's weights whose score exceeds ``outlier_m`` × the layer's mean score."""
    layers = list(layers)
    count = sum(linear.weight.numel() for _, linear in layers)
    mean = sum(float(score(name, linear).sum(dtype=torch.float64)) for name, linear in layers) / count
    above = sum(int(torch.count_nonzero(score(name, linear) > outlier_m * mean)) for name, linear in layers)
    return above / count


def pca_share(weight: torch.Tensor, variance: float) -> float:
    """Principal components needed to explain ``variance`` of the variance of ``weight``'s rows, / min(out, in)."""
    matrix = weight.detach().float()
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    explained = torch.linalg.svdvals(centred).double().square()
    total = float(explained.sum())
    if total == 0.0:
        return 0.0
    needed = int(torch.searchsorted(explained.cumsum(0) / total, torch.tensor(variance, dtype=torch.float64))) + 1
    return min(needed, explained.numel()) / min(matrix.shape)


def layer_pca_share(layers: Iterable[tuple[str, nn.Linear]], variance: float) -> float:
    """The size-weighted mean :func:`pca_share` of a layer's matrices."""
    weighted = [(pca_share(linear.weight, variance), linear.weight.numel()) for _, linear in layers]
    return sum(share * size for share, size in weighted) / sum(size for _, size in weighted)
