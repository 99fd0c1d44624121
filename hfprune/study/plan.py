"""What the trials of a study prune: sampled structured masks, or one unstructured method each.

A plan lists the study's trials in a fixed order that depends only on the recipe, and turns one trial
into parameter masks (True = kept) on a model plus the facts its record keeps about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from hfprune.pruning.structured.importance import expand_kinds
from hfprune.pruning.structured.groups import Group, StructuredMask, parameter_masks
from hfprune.pruning.structured.samplers import Candidate, candidates_for
from hfprune.config.recipe import Recipe
from hfprune.study.trial import TrialSpec

ParameterMasks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MethodCandidate:
    """An unstructured method at the study's sparsity: its masks come from the dense weights."""

    setting: str
    method: str
    mask: StructuredMask = field(default_factory=dict)  # nothing is removed structurally

    @property
    def mask_id(self) -> str:
        return self.method


class Plan(Protocol):
    def trials(self) -> list[TrialSpec]:
        """Every trial of the study, in a fixed order."""

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        """The trial's parameter masks on ``model`` and the facts its record keeps about them."""


class StructuredPlan:
    """Settings × candidate masks (exhaustive or sampled) × repeats."""

    def __init__(self, groups: dict[str, Group], recipe: Recipe | None = None):
        self.groups, self.recipe = groups, recipe  # the recipe lists the trials; masks need only the groups

    def trials(self) -> list[TrialSpec]:
        recipe, specs = self.recipe, []
        for setting in recipe.pruning.settings:
            candidates = candidates_for(self.groups, expand_kinds(self.groups, setting.ratios), setting.label,
                                        setting.candidates.mode, setting.candidates.num, recipe.seed)
            specs += [TrialSpec(candidate, repeat) for candidate in candidates
                      for repeat in range(recipe.pruning.repeats)]
        return specs

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        candidate: Candidate = spec.candidate
        masks = parameter_masks(self.groups, candidate.mask, dict(model.named_parameters()))
        return masks, {"mask": {name: list(kept) for name, kept in candidate.mask.items()}}


class UnstructuredPlan:
    """One trial per method (× repeats), all at ``pruning.sparsity`` over the same target Linears."""

    def __init__(self, recipe: Recipe, task):
        self.recipe, self.task = recipe, task

    def trials(self) -> list[TrialSpec]:
        pruning = self.recipe.pruning
        return [TrialSpec(MethodCandidate(pruning.unstructured_setting, method), repeat)
                for method in pruning.methods for repeat in range(pruning.repeats)]

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        from hfprune.pruning.unstructured import unstructured_masks

        pruning, method = self.recipe.pruning, spec.candidate.method
        needs_activations = method == "onp" and pruning.onp.score == "activation"
        calibration = self.task.calibration_batches(next(model.parameters()).device) if needs_activations else None
        lam = pruning.pnp.lam if method == "pnp" else pruning.onp.lam
        result = unstructured_masks(model, method, pruning.sparsity, targets=pruning.targets, ignore=pruning.ignore,
                                    lam=lam, outlier_m=pruning.onp.outlier_m,
                                    score=pruning.onp.score if method == "onp" else "weight",
                                    variance=pruning.pnp.variance, calibration=calibration)
        return result.masks, {"method": method, **sparsity_facts(result.masks)}


def sparsity_facts(masks: ParameterMasks) -> dict[str, Any]:
    """Overall sparsity over the masked weights and each one's own (the fraction that is pruned)."""
    pruned = {name: int((~mask).sum()) for name, mask in masks.items()}
    total = sum(mask.numel() for mask in masks.values())
    return {"sparsity": sum(pruned.values()) / total if total else 0.0, "target_weights": total,
            "layer_sparsity": {name: pruned[name] / masks[name].numel() for name in masks},
            "layer_weights": {name: masks[name].numel() for name in masks}}


def plan_for(recipe: Recipe, groups: dict[str, Group], task) -> Plan:
    """The plan of a recipe's pruning section."""
    if recipe.pruning.structure == "unstructured":
        return UnstructuredPlan(recipe, task)
    return StructuredPlan(groups, recipe)
