"""First-order Taylor criteria: what the loss would lose with a unit, from gradients on calibration batches (model
in eval mode).

- ``taylor_fo`` — |∂L/∂gate| of the unit's gate (:class:`~hfprune.pruning.structured.gates.UnitGates`), summed over
  the calibration batches (Molchanov et al. 2019).
- ``llm_pruner_taylor`` — LLM-Pruner's (Ma et al. 2023) first-order importance: the gradient G = Σ over the
  calibration batches of ∂L/∂W, then per weight the first-order term W·G; ``variant: element`` (LLM-Pruner's
  ``param_first``, its default) sums |W_k·G_k| over the unit's weights in each Linear, ``variant: vector`` (its
  ``vectorize``) takes |Σ_k W_k·G_k| per Linear; both sum over the unit's Linears (the group's coupled layers).
"""

from __future__ import annotations

from typing import Iterable, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.structured.criterion import Importance, LossFn, piece_sum
from hfprune.pruning.structured.gates import UnitGates
from hfprune.pruning.structured.groups import Group
from hfprune.pruning.unstructured.calibration import to_device


def _loss_batches(model: nn.Module, batches: Iterable[dict] | None, loss_fn: LossFn | None, name: str):
    if batches is None or loss_fn is None:
        raise HfpruneError(f"method {name} needs calibration data and a loss (e.g. --calibration-data FILE)")
    device = next(model.parameters()).device
    return (to_device(batch, device) for batch in batches)


def taylor_fo_scores(
    model: nn.Module,
    groups: Mapping[str, Group],
    batches: Iterable[dict],
    loss_fn: LossFn,
    names: Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per unit, Σ over batches of |∂L/∂gate| (gates at 1: the dense model), model in eval mode."""
    names = list(names if names is not None else groups)
    was_training = model.training
    model.eval()
    scores = {name: torch.zeros(groups[name].size, dtype=torch.float64) for name in names}
    seen = 0
    with UnitGates(model, {name: groups[name] for name in names}, requires_grad=True) as gates:
        for batch in _loss_batches(model, batches, loss_fn, "taylor_fo"):
            gates.zero_grad()
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, [gates.gates[name] for name in names])
            for name, grad in zip(names, grads):
                scores[name] += grad.detach().abs().double().cpu()
            seen += 1
    model.train(was_training)
    if not seen:
        raise HfpruneError("taylor_fo needs calibration data: give at least one batch")
    return scores


def accumulated_gradients(model: nn.Module, params: list[str], batches: Iterable[dict], loss_fn: LossFn,
                          name: str) -> dict[str, torch.Tensor]:
    """Σ over the calibration batches of ∂L/∂p for every parameter named in ``params``, model in eval mode."""
    named = dict(model.named_parameters())
    tensors = [named[param] for param in params]
    total = [torch.zeros_like(tensor, dtype=torch.float64) for tensor in tensors]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in _loss_batches(model, batches, loss_fn, name):
            grads = torch.autograd.grad(loss_fn(model, batch), tensors, allow_unused=True)
            for acc, grad in zip(total, grads):
                if grad is not None:
                    acc += grad.detach().double()
            seen += 1
    finally:
        model.train(was_training)
    if not seen:
        raise HfpruneError(f"{name} needs calibration data: give at least one batch")
    return dict(zip(params, total))


class TaylorFOImportance(Importance):
    name = "taylor_fo"
    summary = "Σ over batches of |dL/dgate| of the unit's gate (Molchanov et al.)"
    needs_calibration = True
    needs_loss = True

    def scores(self, model, groups, names, *, batches, loss_fn):
        return taylor_fo_scores(model, groups, batches, loss_fn, names)


class LLMPrunerTaylor(Importance):
    name = "llm_pruner_taylor"
    summary = "first-order Taylor W·G of the unit's weights, as LLM-Pruner computes it (variant element|vector)"
    needs_calibration = True
    needs_loss = True

    variant: Literal["element", "vector"] = Field(
        "element", description="element: Σ|W·G| per weight (LLM-Pruner's param_first); vector: |Σ W·G| per Linear "
                               "(its vectorize)")

    def scores(self, model, groups, names, *, batches, loss_fn):
        names = list(names)
        weights = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        owned = list(dict.fromkeys(piece.param for name in names for piece in groups[name].owned
                                   if piece.param.rpartition(".")[0] in weights
                                   and piece.param.endswith(".weight")))
        grads = accumulated_gradients(model, owned, batches, loss_fn, self.name)
        params = dict(model.named_parameters())
        scores = {}
        for name in names:
            group = groups[name]
            total = torch.zeros(group.size, dtype=torch.float64)
            for piece in group.owned:
                if piece.param not in grads:
                    continue
                salience = params[piece.param].detach().double() * grads[piece.param]
                if self.variant == "element":
                    total += piece_sum(group, piece, salience.abs())
                else:
                    total += piece_sum(group, piece, salience).abs()
            scores[name] = total
        return scores
