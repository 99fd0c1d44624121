"""What the trials of a study prune: sampled structured masks, or one unstructured method each.

A plan lists the study's trials in a fixed order that depends only on the recipe, turns one trial into
parameter masks (True = kept) on a model plus the facts its record keeps about them, and gives the model a
finished trial exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from transformers import PreTrainedModel

from hfprune.study.oracle.recipe import OracleRecipe
from hfprune.models.base import StructuredAdapter
from hfprune.pruning.structured.importance import MASK_CRITERIA, PrunedTaylorFO
from hfprune.pruning.structured.groups import Group, expand_kinds, parameter_masks
from hfprune.pruning.structured.samplers import MaskCandidate, candidates_for
from hfprune.pruning.unstructured import UnstructuredMethod, list_targets
from hfprune.report.sparsity import mask_counts, sparsity_facts
from hfprune.study.spec import TrialSpec
from hfprune.study.sweep import PLAIN, runs, variants

ParameterMasks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MethodCandidate:
    """An unstructured method at the study's sparsity: its masks come from the dense weights."""

    setting: str
    method: UnstructuredMethod

    @property
    def mask_id(self) -> str:
        return self.method.mask_id

    def facts(self) -> dict[str, Any]:
        pattern = {"pattern": self.method.pattern} if self.method.pattern else {}
        return {"method": self.method.name, "method_options": self.method.options(), **pattern}


class Plan(Protocol):
    def trials(self) -> list[TrialSpec]:
        """Every trial of the study, in a fixed order."""

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        """The trial's parameter masks on ``model`` and the facts its record keeps about them."""

    def exported(self, spec: TrialSpec, model: PreTrainedModel) -> PreTrainedModel:
        """The model a finished trial saves: physically pruned where the family can shrink."""

    def shrinker(self, spec: TrialSpec) -> Callable[[PreTrainedModel], PreTrainedModel] | None:
        """What turns the trial's masked model into the physically pruned one; None where nothing can shrink."""


class StructuredPlan:
    """Settings × candidate masks (exhaustive or sampled) × repeats.

    Where the task has calibration data, each mask's facts carry its ``pruned_taylor_fo`` criterion (on
    ``pruning.calibration_samples`` training images), recorded next to ``pruned_l1``.
    """

    def __init__(self, adapter: StructuredAdapter, groups: dict[str, Group], recipe: OracleRecipe, task=None):
        self.adapter, self.groups, self.recipe, self.task = adapter, groups, recipe, task
        calibration = getattr(task, "calibration_batches", None)
        self.taylor_fo = PrunedTaylorFO(groups, calibration, task.loss_fn()) if calibration else None

    def trials(self) -> list[TrialSpec]:
        recipe, candidates = self.recipe, []
        for setting in recipe.pruning.settings:
            candidates += candidates_for(self.groups, expand_kinds(self.groups, setting.ratios), setting.label,
                                         setting.candidates.mode, setting.candidates.num, recipe.seed)
        return expand(recipe, candidates)

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        candidate: MaskCandidate = spec.candidate
        masks = parameter_masks(self.groups, candidate.mask, dict(model.named_parameters()))
        if self.taylor_fo is None:
            return masks, {}
        return masks, {MASK_CRITERIA: {self.taylor_fo.name: self.taylor_fo(model, candidate.mask)}}

    def exported(self, spec: TrialSpec, model: PreTrainedModel) -> PreTrainedModel:
        return model if self.is_shrunk(model) else self.adapter.prune_physically(model, spec.candidate.mask)

    def shrinker(self, spec: TrialSpec) -> Callable[[PreTrainedModel], PreTrainedModel]:
        mask = spec.candidate.mask
        return lambda model: self.adapter.prune_physically(model, mask)

    def is_shrunk(self, model: PreTrainedModel) -> bool:
        """Whether ``model`` is already physically pruned (retrained so): some group has fewer units."""
        groups = self.adapter.groups(model.config)
        return any(name not in groups or groups[name].size != group.size for name, group in self.groups.items())

    def iterative(self, spec: TrialSpec) -> bool:
        """Whether ``spec``'s setting prunes in rounds (retraining between them)."""
        setting = next(s for s in self.recipe.pruning.settings if s.label == spec.candidate.setting)
        return self.recipe.pruning.rounds_of(setting) is not None

    def run_rounds(self, spec: TrialSpec, model: torch.nn.Module, record, seed: int, progress: bool = False):
        """The iterative pipeline's rounds before the last, on ``model`` in place (see
        :mod:`hfprune.study.oracle.iterative`); returns the setting's schedule, or None for a one-shot setting."""
        from hfprune.study.oracle.iterative import run_earlier_rounds

        setting = next(s for s in self.recipe.pruning.settings if s.label == spec.candidate.setting)
        schedule = self.recipe.pruning.rounds_of(setting)
        sweep = self.recipe.sweep
        if schedule is not None and spec.variant is not None and sweep is not None and sweep.applies_to == "rounds":
            schedule = schedule.model_copy(update={"retrain": spec.variant.apply(schedule.retrain)})
        if schedule is not None:
            run_earlier_rounds(model, self.groups, spec.candidate.mask, schedule, self.task, record, seed, progress)
        return schedule


class UnstructuredPlan:
    """One trial per method (× repeats), all at ``pruning.sparsity`` over the same target Linears."""

    def __init__(self, recipe: OracleRecipe, task):
        self.recipe, self.task = recipe, task

    def trials(self) -> list[TrialSpec]:
        pruning = self.recipe.pruning
        methods = [MethodCandidate(pruning.unstructured_setting, method) for method in pruning.methods]
        return expand(self.recipe, methods)

    def masks(self, spec: TrialSpec, model: torch.nn.Module) -> tuple[ParameterMasks, dict[str, Any]]:
        pruning, method = self.recipe.pruning, spec.candidate.method
        calibration = self.task.calibration_batches(next(model.parameters()).device) \
            if method.needs_calibration else None
        # The model is the trial's own copy: a method that updates the kept weights (SparseGPT) does so here,
        # and the trial measures and retrains those weights.
        result = method.masks(model, pruning.sparsity, targets=pruning.targets, ignore=pruning.ignore,
                              calibration=calibration)
        blocks = {f"{target.name}.weight": target.block
                  for target in list_targets(model, pruning.targets, pruning.ignore)}
        return result.masks, sparsity_facts(mask_counts(result.masks), blocks)

    def exported(self, spec: TrialSpec, model: PreTrainedModel) -> PreTrainedModel:
        return model  # unstructured masks keep every shape: the masked model is the checkpoint

    def shrinker(self, spec: TrialSpec) -> None:
        return None


def expand(recipe: OracleRecipe, candidates: list) -> list[TrialSpec]:
    """Every candidate at every point of the recipe's sweep, × its runs (or ``pruning.repeats``)."""
    points = variants(recipe.sweep)
    return [TrialSpec(candidate, repeat, None if variant is PLAIN else variant) for candidate in candidates
            for variant in points for repeat in range(runs(recipe.sweep, recipe.pruning.repeats))]


def plan_for(recipe: OracleRecipe, adapter, groups: dict[str, Group], task) -> Plan:
    """The plan of a recipe's pruning section: structured masks where the recipe prunes structures (its family's
    default, or the ``pruning.structure`` it chose), else unstructured methods."""
    if isinstance(adapter, StructuredAdapter) and recipe.structure != "unstructured":
        return StructuredPlan(adapter, groups, recipe, task)
    return UnstructuredPlan(recipe, task)
