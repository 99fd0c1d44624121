"""The structured mask of a criterion at some ratios, under an allocation — what ``hfprune prune structured``, a
study or any caller asks for:

    mask = structured_mask(model, groups, {"heads": 0.25, "ffn": 0.5}, "wanda", batches=batches)

Everything that can be wrong (unknown keys, a ratio that removes every head or does not split over the key/value
groups, a criterion that needs calibration data without it or cannot score a kind, a per-group ratio with a global
allocation) is an HfpruneError before any forward pass. Calibration batches are any iterable of model inputs
(``{input_ids, attention_mask}`` for a language model, plus the image tensors for a VLM, ``pixel_values`` for an
encoder); criteria that need a loss use :func:`token_loss` unless given one.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.activation import owned_linears
from hfprune.pruning.structured.allocation import check_allocation, global_counts, owl_counts
from hfprune.pruning.structured.criterion import Importance, LossFn, select_top
from hfprune.pruning.structured.groups import Group, StructuredMask, expand_ratios, kept_counts
from hfprune.pruning.structured.importance import RandomImportance, get_importance
from hfprune.pruning.structured.statistics import input_statistics
from hfprune.pruning.unstructured.calibration import reiterable
from hfprune.seeding import stable_seed

OUTLIER_M, LAMBDA = 5.0, 0.08  # OWL's defaults


def token_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The causal-LM loss of a calibration batch: its ``labels``, else its tokens (padding and image placeholders
    left out)."""
    if "labels" in batch:
        return model(**batch).loss
    if "input_ids" not in batch:
        raise HfpruneError("a criterion that needs a loss needs batches with labels (or input_ids of a language "
                           "model); give loss_fn for other models")
    labels = batch["input_ids"].clone()
    if isinstance(batch.get("attention_mask"), torch.Tensor):
        labels[batch["attention_mask"] == 0] = -100
    config = getattr(model, "config", None)
    for key in ("image_token_id", "image_token_index", "video_token_id"):
        token = getattr(config, key, None)
        if isinstance(token, int):
            labels[labels == token] = -100
    return model(**batch, labels=labels).loss


def _block_of(group: Group, blocks: tuple[str, ...]) -> str | None:
    return next((block for block in blocks if any(piece.param.startswith(f"{block}.") for piece in group.owned)),
                None)


def outlier_ratios(model: nn.Module, groups: Mapping[str, Group], names: Iterable[str], batches: Iterable[dict],
                   outlier_m: float = OUTLIER_M) -> dict[str, float]:
    """Per group, its block's OWL outlier ratio: the share of the Wanda scores |W|·‖X‖₂ of the block's Linears that
    exceed ``outlier_m`` × their mean."""
    layers = next((group for group in groups.values() if group.modules), None)
    if layers is None:
        raise HfpruneError("--allocation owl needs a model whose blocks hfprune finds (a transformers model)")
    owners = {name: _block_of(groups[name], layers.modules) for name in names}
    modules = dict(model.named_modules())
    linears = {block: [name for name in owned_linears(model, {"layers": layers}, ["layers"])
                       if name.startswith(f"{block}.")] for block in set(owners.values())}
    stats = input_statistics(model, [name for found in linears.values() for name in found], batches)
    ratios = {}
    with torch.no_grad():
        for block, found in linears.items():
            scores = [modules[name].weight.detach().double().abs() * stats[name].norms[None, :].to(
                modules[name].weight.device) for name in found]
            mean = sum(float(score.sum()) for score in scores) / sum(score.numel() for score in scores)
            above = sum(int((score > outlier_m * mean).sum()) for score in scores)
            ratios[block] = above / sum(score.numel() for score in scores)
    return {name: ratios[block] for name, block in owners.items()}


def _random_scores(groups: Mapping[str, Group], names: Iterable[str], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator()
    return {name: torch.rand(groups[name].size, generator=generator.manual_seed(
        stable_seed("random-criterion", seed, name) % (1 << 63)), dtype=torch.float64) for name in names}


def criterion_scores(method: str | Importance, model: nn.Module, groups: Mapping[str, Group],
                     names: Iterable[str] | None = None, *, batches: Iterable[dict] | None = None,
                     loss_fn: LossFn | None = None, options: Mapping[str, Any] | None = None,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Per unit of every group in ``names`` (default: all), the criterion's score (higher = more important)."""
    importance = method if isinstance(method, Importance) else get_importance(method, options)
    names = list(names if names is not None else groups)
    importance.check(groups, names, has_calibration=batches is not None)
    if isinstance(importance, RandomImportance):
        return _random_scores(groups, names, seed)
    return importance.scores(model, groups, names, batches=reiterable(batches), loss_fn=loss_fn or token_loss)


def _check_overlaps(groups: Mapping[str, Group], names: list[str]) -> None:
    """Two groups that slice the same weights along the same dimension (a block's query heads and its key/value
    groups) cannot both be pruned."""
    owner: dict[tuple[str, int], str] = {}
    for name in names:
        for piece in groups[name].owned:
            if piece.unit is not None:  # whole parameters of a layer: pruning inside it as well is fine
                continue
            other = owner.setdefault((piece.param, piece.dim), name)
            if other != name:
                raise HfpruneError(f"{other} and {name} prune the same weights ({piece.param}); prune one of them "
                                   f"(e.g. heads=... or kv_groups=..., not both)")


def check_request(groups: Mapping[str, Group], ratios: Mapping[str, float], importance: Importance,
                  allocation: str, has_calibration: bool) -> list[str]:
    """The groups a request prunes; an HfpruneError for anything wrong with it, before any work."""
    check_allocation(groups, ratios, allocation)
    names = [name for name, ratio in expand_ratios(groups, ratios).items() if ratio]
    if not names:
        raise HfpruneError("the structure prunes nothing (every ratio is 0); give a ratio above 0, e.g. heads=0.25")
    _check_overlaps(groups, names)
    importance.check(groups, names, has_calibration=has_calibration)
    if allocation == "owl" and not has_calibration:
        raise HfpruneError("--allocation owl needs calibration data (its outlier ratios are Wanda scores)")
    return names


def structured_mask(
    model: nn.Module,
    groups: Mapping[str, Group],
    ratios: Mapping[str, float],
    method: str | Importance = "l1",
    *,
    options: Mapping[str, Any] | None = None,
    allocation: str = "uniform",
    batches: Iterable[dict] | None = None,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    outlier_m: float = OUTLIER_M,
    lam: float = LAMBDA,
    adjust: bool = True,
) -> StructuredMask:
    """The mask ``method`` picks at ``ratios`` (kinds, sets or group names → fraction removed) under ``allocation``
    (uniform, global, owl). With ``adjust``, the criterion's change to the model for that mask is made in place
    (FLAP's bias compensation), so pruning ``model`` by the mask gives the compensated model."""
    importance = method if isinstance(method, Importance) else get_importance(method, options)
    names = check_request(groups, ratios, importance, allocation, batches is not None)
    batches = reiterable(batches)
    loss_fn = loss_fn or token_loss
    if allocation == "uniform":
        counts = kept_counts(groups, ratios)
        mask = importance.select(model, groups, counts, seed=seed, batches=batches, loss_fn=loss_fn)
    else:
        scores = criterion_scores(importance, model, groups, names, batches=batches, loss_fn=loss_fn, seed=seed)
        if allocation == "global":
            counts = global_counts(groups, ratios, importance.global_scores(scores))
        else:
            counts = owl_counts(groups, ratios, outlier_ratios(model, groups, names, batches, outlier_m), lam)
        mask = select_top(scores, counts, groups)
    if adjust:
        importance.adjust(model, groups, mask)
    return mask
