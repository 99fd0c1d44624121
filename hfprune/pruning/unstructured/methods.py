"""Unstructured magnitude pruning of Linear weights: UMP, GMP, ONP, PNP (STUDY.md §3).

Every method prunes the smallest |w| with :func:`~hfprune.pruning.unstructured.selection.prune_smallest`;
they differ only in how they allocate the pruning budget:

- ``ump`` — every target Linear at the same ratio S;
- ``gmp`` — one budget round(S·N) over all targets together (one global |w| threshold);
- ``onp`` — per decoder layer from its outlier ratio (OWL), spread over [S−λ, S+λ];
- ``pnp`` — per decoder layer from its PCA share, spread over [S−λ, S+λ].

A decoder layer is every target under one ``layers.N.``; a target without a layer index is its own group.
Inside a Linear, k = round(ratio·n) (round half up) weights go, so the total pruned is round(S·N) within ±1
per Linear (GMP: exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.groups import num_pruned
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured.allocation import (
    activation_norms,
    activation_score,
    layer_pca_share,
    outlier_ratio,
    spread_ratios,
    weight_score,
)
from hfprune.pruning.unstructured.selection import prune_smallest
from hfprune.pruning.unstructured.targets import group_by_layer, select_targets

SCORES = ("weight", "activation")


@dataclass(frozen=True)
class Options:
    """The knobs of the non-uniform methods (see :func:`unstructured_masks`)."""

    lam: float = 0.08
    outlier_m: float = 5.0
    score: str = "weight"
    variance: float = 0.9
    calibration: Iterable[Mapping] | None = None
    progress: bool = False


@dataclass(frozen=True)
class Budget:
    """Prune ``count`` weights, the smallest |w| over ``names`` together."""

    names: tuple[str, ...]
    count: int


@dataclass
class Allocation:
    budgets: list[Budget]
    layer_ratios: dict[str, float] | None = None  # None: read the achieved ratios off the masks
    group_scores: dict[str, float] = field(default_factory=dict)


def _progress(items, description: str, enabled: bool):
    return tqdm(items, desc=description, leave=False) if enabled else items


class UnstructuredMethod:
    """Magnitude pruning of Linear weights; subclasses only decide the budgets (how many weights go where)."""

    name = ""

    def allocate(self, model: nn.Module, targets: dict[str, nn.Linear], sparsity: float,
                 options: Options) -> Allocation:
        raise NotImplementedError


class LayerRatioMethod(UnstructuredMethod):
    """Gives every target Linear a sparsity ratio; prunes round(ratio·n) of its smallest |w|."""

    def ratios(self, model: nn.Module, targets: dict[str, nn.Linear], sparsity: float,
               options: Options) -> tuple[dict[str, float], dict[str, float]]:
        """Per-Linear ratios and per-group scores (empty when the method has none)."""
        raise NotImplementedError

    def allocate(self, model, targets, sparsity, options) -> Allocation:
        ratios, scores = self.ratios(model, targets, sparsity, options)
        budgets = [Budget((name,), num_pruned(linear.weight.numel(), ratios[name])) for name, linear in targets.items()]
        return Allocation(budgets, ratios, scores)


class UniformMagnitude(LayerRatioMethod):
    name = "ump"

    def ratios(self, model, targets, sparsity, options):
        return {name: sparsity for name in targets}, {}


class GlobalMagnitude(UnstructuredMethod):
    name = "gmp"

    def allocate(self, model, targets, sparsity, options) -> Allocation:
        total = sum(linear.weight.numel() for linear in targets.values())
        return Allocation([Budget(tuple(targets), num_pruned(total, sparsity))])


class GroupScoreMethod(LayerRatioMethod):
    """Scores each decoder layer; a higher score gets a lower sparsity (:func:`spread_ratios`)."""

    def group_score(self, layers: list[tuple[str, nn.Linear]], options: Options, context) -> float:
        raise NotImplementedError

    def prepare(self, model: nn.Module, targets: dict[str, nn.Linear], options: Options):
        """Whatever the group scores need, computed once (e.g. activation norms)."""
        return None

    def ratios(self, model, targets, sparsity, options):
        context = self.prepare(model, targets, options)
        groups = group_by_layer(targets)
        scores = {group: self.group_score([(name, targets[name]) for name in names], options, context)
                  for group, names in _progress(groups.items(), f"{self.name} scores", options.progress)}
        sizes = {group: sum(targets[name].weight.numel() for name in names) for group, names in groups.items()}
        group_ratios = spread_ratios(scores, sizes, sparsity, options.lam)
        return {name: group_ratios[group] for group, names in groups.items() for name in names}, scores


class OutlierNonUniform(GroupScoreMethod):
    name = "onp"

    def prepare(self, model, targets, options):
        if options.score == "weight":
            return weight_score
        if options.calibration is None:
            raise HfpruneError("onp with score='activation' needs calibration batches (calibration=...)")
        return activation_score(activation_norms(model, targets, options.calibration))

    def group_score(self, layers, options, context) -> float:
        return outlier_ratio(layers, context, options.outlier_m)


class PcaNonUniform(GroupScoreMethod):
    name = "pnp"

    def group_score(self, layers, options, context) -> float:
        return layer_pca_share(layers, options.variance)


UNSTRUCTURED_METHODS: dict[str, UnstructuredMethod] = {
    method.name: method for method in (UniformMagnitude(), GlobalMagnitude(), OutlierNonUniform(), PcaNonUniform())
}


@dataclass
class UnstructuredResult:
    """Masks keyed by parameter name (True = kept, on CPU) and how the method allocated them."""

    method: str
    sparsity: float
    masks: dict[str, torch.Tensor]
    layer_ratios: dict[str, float]      # target module name → the sparsity it was given (GMP: achieved)
    group_scores: dict[str, float]      # ONP: outlier ratio D_l, PNP: PCA share, per decoder layer
    threshold: float | None = None      # the k-th smallest |w| when one budget spans every target (GMP)

    @property
    def total(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    @property
    def pruned(self) -> int:
        return sum(mask.numel() - int(torch.count_nonzero(mask)) for mask in self.masks.values())

    @property
    def achieved_sparsity(self) -> float:
        return self.pruned / self.total

    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` in place."""
        MaskedParameters(model, self.masks).apply()


def _check_options(method: str, sparsity: float, options: Options) -> UnstructuredMethod:
    if method not in UNSTRUCTURED_METHODS:
        raise HfpruneError(f"unknown unstructured method {method!r}; choose one of {', '.join(UNSTRUCTURED_METHODS)}")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise HfpruneError(f"sparsity must be a number strictly between 0 and 1, got {sparsity!r}")
    if not (math.isfinite(options.lam) and options.lam >= 0):
        raise HfpruneError(f"lam must be a finite number >= 0, got {options.lam!r}")
    if not (math.isfinite(options.outlier_m) and options.outlier_m > 0):
        raise HfpruneError(f"outlier_m must be a finite number > 0, got {options.outlier_m!r}")
    if not 0 < options.variance <= 1:
        raise HfpruneError(f"variance must lie in (0, 1], got {options.variance!r}")
    if options.score not in SCORES:
        raise HfpruneError(f"unknown score {options.score!r}; choose one of {', '.join(SCORES)}")
    if options.score != "weight" and method != "onp":
        raise HfpruneError(f"score={options.score!r} applies to onp only, not {method}")
    return UNSTRUCTURED_METHODS[method]


@torch.no_grad()
def unstructured_masks(model: nn.Module, method: str, sparsity: float, *, targets: str | Iterable[str] | None = None,
                       ignore: str | Iterable[str] = (), lam: float = 0.08, outlier_m: float = 5.0,
                       score: str = "weight", variance: float = 0.9, calibration: Iterable[Mapping] | None = None,
                       progress: bool = False) -> UnstructuredResult:
    """Masks pruning ``sparsity`` of the target Linear weights with ``method`` (ump, gmp, onp, pnp).

    ``targets``/``ignore`` are regexes over module names (default: the decoder Linears of a HF Llava's
    language model); ``lam`` is the spread λ of onp/pnp, ``outlier_m`` onp's M, ``score`` onp's outlier score
    ("weight" = |w|, "activation" = |w|·‖x‖₂ over ``calibration`` batches), ``variance`` pnp's explained
    variance. The model is not modified; use :meth:`UnstructuredResult.apply`.
    """
    options = Options(lam, outlier_m, score, variance, calibration, progress)
    chosen = _check_options(method, sparsity, options)
    linears = select_targets(model, targets, ignore)
    allocation = chosen.allocate(model, linears, float(sparsity), options)
    masks: dict[str, torch.Tensor] = {}
    threshold = None
    for budget in _progress(allocation.budgets, f"{chosen.name} masks", progress):
        selection = prune_smallest([linears[name].weight for name in budget.names], budget.count)
        masks.update((f"{name}.weight", mask) for name, mask in zip(budget.names, selection.masks))
        if len(budget.names) == len(linears) and selection.threshold is not None:
            threshold = selection.threshold.value
    ratios = allocation.layer_ratios
    if ratios is None:
        ratios = {name: 1 - int(torch.count_nonzero(masks[f"{name}.weight"])) / linear.weight.numel()
                  for name, linear in linears.items()}
    return UnstructuredResult(chosen.name, float(sparsity), masks, ratios, allocation.group_scores, threshold)
