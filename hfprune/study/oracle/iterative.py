"""The iterative pipeline (paper App. B.2): a candidate mask's units are removed over several rounds.

*(our reading)* The candidate mask is the end point: round k of R has removed ``round(n·k/R)`` of the ``n``
units each group loses, in a seeded order per group, so rounds are nested and the last round is exactly the
candidate (the asked total sparsity; 5 rounds × 10% of the units for ratio 0.5). After each round but the
last the model is retrained (masks exact) with the schedule's round section, each round with a fresh optimiser
and its own LR schedule (LR1/LR2); the trial then prunes the last round and retrains it as usual. Every round's
pruned train loss is recorded, ``pruned_train_loss_round{k}`` (the last equals ``pruned_train_loss``).
"""

from __future__ import annotations

import numpy as np
import torch

from hfprune.study.oracle.recipe import RoundsSection
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.groups import Group, StructuredMask, parameter_masks
from hfprune.seeding import stable_seed
from hfprune.records.record import TrialRecord
from hfprune.train.trainer import train

ROUND_LOSS = "pruned_train_loss_round{}"


def round_masks(groups: dict[str, Group], mask: StructuredMask, rounds: int, seed: int) -> list[StructuredMask]:
    """The kept units after each of ``rounds`` rounds that end at ``mask`` (nested; the last is ``mask``)."""
    order = {}
    for name, kept in mask.items():
        removed = sorted(set(range(groups[name].size)) - set(kept))
        order[name] = np.random.default_rng(stable_seed("rounds", seed, name)).permutation(removed).tolist()
    out = []
    for k in range(1, rounds + 1):
        out.append({name: tuple(sorted(set(range(groups[name].size)) - set(removed[:round(len(removed) * k / rounds)])))
                    for name, removed in order.items()})
    return out


def run_earlier_rounds(model: torch.nn.Module, groups: dict[str, Group], mask: StructuredMask,
                       schedule: RoundsSection, task, record: TrialRecord, seed: int,
                       progress: bool = False) -> None:
    """Rounds 1..R-1 on ``model`` in place: prune, record the pruned train loss, retrain (masks exact)."""
    loss_fn = task.loss_fn(schedule.retrain)
    for k, kept in enumerate(round_masks(groups, mask, schedule.rounds, seed)[:-1], start=1):
        masked = MaskedParameters(model, parameter_masks(groups, kept, dict(model.named_parameters())))
        masked.apply()
        record.add(ROUND_LOSS.format(k), task.evaluate(model, "train")["loss"], higher_is_better=False)
        train(model, task.train_set, schedule.retrain, loss_fn, seed=stable_seed(seed, "round", k), masks=masked,
              progress=progress, description=f"round {k} retrain", find_unused_parameters=task.find_unused_parameters)
        record.facts[f"round{k}_mask_violations"] = masked.violations()


def record_last_round(record: TrialRecord, schedule: RoundsSection) -> None:
    """The last round's pruned train loss is the trial's ``pruned_train_loss``: record it under its round too."""
    record.add(ROUND_LOSS.format(schedule.rounds), record.metrics["pruned_train_loss"], higher_is_better=False)

