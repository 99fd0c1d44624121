"""Saliency scores of the pruning-at-initialisation methods, and scores -> masks of an exact budget.

Every score here is computed on a copy of the model, never on the run's model, and returned per weight name in
float64 on the CPU. Scores become masks through :func:`keep_highest` (which wraps
:func:`hfprune.pruning.unstructured.radix.prune_smallest`): exactly the asked number kept, ties pruned in
tensor order, then flat index.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from hfprune.pruning.sparse_training.base import LossFn
from hfprune.pruning.unstructured.radix import prune_smallest

Scores = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]


# -- scores -> masks --------------------------------------------------------------------------------------------
def keep_highest(scores: Scores, keep: int, alive: Masks | None = None) -> Masks:
    """Masks keeping exactly the ``keep`` highest (non-negative) scores; with ``alive``, only among its True
    entries (what is pruned stays pruned)."""
    names = list(scores)
    pool = [scores[name].detach().double().cpu().reshape(-1) for name in names]
    if alive is not None:
        pool = [values[alive[name].cpu().reshape(-1)] for values, name in zip(pool, names)]
    available = sum(values.numel() for values in pool)
    if not 0 <= keep <= available:
        raise ValueError(f"cannot keep {keep} of {available} weights")
    if min((float(values.min()) for values in pool if values.numel()), default=0.0) < 0:
        raise ValueError("keep_highest needs non-negative scores; use keep_lowest for signed ones")
    # prune_smallest orders float32 values: scale to [0, 1] first so tiny float64 scores do not underflow
    top = max((float(values.max()) for values in pool if values.numel()), default=0.0)
    if top > 0:
        pool = [values / top for values in pool]
    selection = prune_smallest(pool, available - keep)
    masks = {}
    for name, kept in zip(names, selection.masks):
        if alive is None:
            masks[name] = kept.reshape(scores[name].shape)
        else:
            mask = torch.zeros(scores[name].numel(), dtype=torch.bool)
            mask[alive[name].cpu().reshape(-1)] = kept
            masks[name] = mask.reshape(scores[name].shape)
    return masks


def keep_lowest(scores: Scores, keep: int) -> Masks:
    """Masks keeping exactly the ``keep`` lowest (signed) scores (GraSP's rule)."""
    top = max(float(values.max()) for values in scores.values())
    return keep_highest({name: top - values.double() for name, values in scores.items()}, keep)


def exponential_keeps(total: int, budget: int, steps: int) -> list[int]:
    """How many weights each of ``steps`` rounds keeps: total·(budget/total)^((t+1)/steps), rounded, ending at
    exactly ``budget`` (the exponential schedule of iterative SNIP, FORCE and SynFlow)."""
    ratio = budget / total
    keeps = [round(total * ratio ** ((step + 1) / steps)) for step in range(steps - 1)]
    return [min(total, max(budget, keep)) for keep in keeps] + [budget]


# -- helpers ----------------------------------------------------------------------------------------------------
def scoring_copy(model: nn.Module, names: Iterable[str], dtype: torch.dtype | None = None
                 ) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A deep copy of ``model`` (in ``dtype`` if given) and its parameters of ``names``."""
    clone = copy.deepcopy(model)
    if dtype is not None:
        clone = clone.to(dtype)
    parameters = dict(clone.named_parameters())
    return clone, {name: parameters[name] for name in names}


def to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` with its tensors on ``device``."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def average_gradients(model: nn.Module, weights: dict[str, nn.Parameter], loss_fn: LossFn,
                      batches: Sequence[dict]) -> Scores:
    """∂L/∂w of each weight, averaged over ``batches`` (gradients only; nothing is updated)."""
    device = next(iter(weights.values())).device
    totals = {name: torch.zeros_like(weight, dtype=torch.float64) for name, weight in weights.items()}
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, to_device(batch, device)), list(weights.values()),
                                    allow_unused=True)
        for name, grad in zip(weights, grads):
            if grad is not None:
                totals[name] += grad.double()
    return {name: (total / len(batches)).cpu() for name, total in totals.items()}


# -- SNIP / iterative SNIP / FORCE --------------------------------------------------------------------------------
def connection_sensitivity(model: nn.Module, weights: dict[str, nn.Parameter], loss_fn: LossFn,
                           batches: Sequence[dict], masks: Masks | None = None,
                           scale: Scores | None = None) -> Scores:
    """|∂L/∂w ⊙ w|, with the gradient averaged over ``batches`` (SNIP's |∂L/∂c| at c = 1).

    ``masks`` evaluates the gradient at the pruned point w ⊙ m (on a copy); ``scale`` multiplies by these weights
    instead of the pruned ones (FORCE: the original weights, so that pruned weights can come back)."""
    clone, clone_weights = scoring_copy(model, weights)
    if masks is not None:
        with torch.no_grad():
            for name, weight in clone_weights.items():
                weight.mul_(masks[name].to(weight.device, weight.dtype))
    grads = average_gradients(clone, clone_weights, loss_fn, batches)
    factors = scale if scale is not None else {name: weight.detach().double().cpu()
                                              for name, weight in clone_weights.items()}
    return {name: (grads[name] * factors[name].double()).abs() for name in grads}


# -- GraSP ------------------------------------------------------------------------------------------------------
def _scaled_output(output, temperature: float):
    if isinstance(output, torch.Tensor):
        return output / temperature
    if dataclasses.is_dataclass(output) and not isinstance(output, dict):
        return dataclasses.replace(output, logits=output.logits / temperature)
    scaled = copy.copy(output)
    scaled.logits = output.logits / temperature
    return scaled


@contextmanager
def tempered(model: nn.Module, temperature: float) -> Iterator[None]:
    """Within the block, ``model``'s logits are divided by ``temperature`` (GraSP's T)."""
    handle = model.register_forward_hook(lambda module, args, output: _scaled_output(output, temperature))
    try:
        yield
    finally:
        handle.remove()


def hessian_gradient_scores(model: nn.Module, weights: dict[str, nn.Parameter], loss_fn: LossFn,
                            parts: Sequence[dict], temperature: float) -> Scores:
    """GraSP's −w ⊙ Hg: g = Σ_parts ∇L_part, Hg = Σ_parts ∇(g·∇L_part), on logits divided by ``temperature``.

    Derivatives are taken in the weights only (biases held fixed). Signed; GraSP keeps the lowest. The
    temperature acts on the model's ``logits``: a ``loss_fn`` that reads a loss the model computed itself is not
    tempered."""
    clone, clone_weights = scoring_copy(model, weights)
    tensors = list(clone_weights.values())
    device = tensors[0].device
    with tempered(clone, temperature):
        gradient = [torch.zeros_like(weight) for weight in tensors]
        for part in parts:
            grads = torch.autograd.grad(loss_fn(clone, to_device(part, device)), tensors)
            gradient = [total + grad.detach() for total, grad in zip(gradient, grads)]
        products = [torch.zeros_like(weight) for weight in tensors]
        for part in parts:
            grads = torch.autograd.grad(loss_fn(clone, to_device(part, device)), tensors, create_graph=True)
            inner = sum((g * grad).sum() for g, grad in zip(gradient, grads))
            hessian_products = torch.autograd.grad(inner, tensors)
            products = [total + hg for total, hg in zip(products, hessian_products)]
    return {name: (-weight.detach() * hg).double().cpu()
            for (name, weight), hg in zip(clone_weights.items(), products)}


# -- SynFlow ----------------------------------------------------------------------------------------------------
class LinearisedCopy:
    """SynFlow's linearised network, made once per pruning: a float64 copy in evaluation mode with every parameter
    replaced by its absolute value (biases too, as the reference does); :func:`synflow_scores` masks a fresh copy
    of its weights for each round."""

    def __init__(self, model: nn.Module, weights: dict[str, nn.Parameter]):
        self.clone, self.weights = scoring_copy(model, weights, dtype=torch.float64)
        self.clone.eval()
        with torch.no_grad():
            for parameter in self.clone.parameters():
                parameter.abs_()
        self.absolute = {name: weight.detach().clone() for name, weight in self.weights.items()}

    def masked(self, masks: Masks | None) -> tuple[nn.Module, dict[str, nn.Parameter]]:
        """The copy with its weights |w| ⊙ ``masks`` (all of them without masks)."""
        with torch.no_grad():
            for name, weight in self.weights.items():
                weight.copy_(self.absolute[name])
                if masks is not None:
                    weight.mul_(masks[name].to(weight.device, weight.dtype))
        return self.clone, self.weights


def synflow_scores(model: nn.Module | LinearisedCopy, weights: dict[str, nn.Parameter], input_shape: Sequence[int],
                   masks: Masks | None = None) -> Scores:
    """|∂R/∂w ⊙ w| with R the summed output of the linearised network, in float64: every parameter replaced by
    its absolute value (biases too, as the reference does), pruned weights (``masks``) at zero, one all-ones
    input of ``input_shape``, evaluation mode (ReLUs are kept; on positive values they pass everything). A
    :class:`LinearisedCopy` of the model serves every round of one pruning (one copy instead of one per round)."""
    linearised = model if isinstance(model, LinearisedCopy) else LinearisedCopy(model, weights)
    clone, clone_weights = linearised.masked(masks)
    device = next(iter(clone_weights.values())).device
    output = clone(torch.ones(1, *input_shape, dtype=torch.float64, device=device))
    logits = output if isinstance(output, torch.Tensor) else output.logits
    grads = torch.autograd.grad(logits.sum(), list(clone_weights.values()))
    return {name: (grad * weight.detach()).abs().cpu() for (name, weight), grad in zip(clone_weights.items(), grads)}


# -- ProsPr -----------------------------------------------------------------------------------------------------
class _LossOf(nn.Module):
    """``loss_fn(model, batch)`` as a module, so that :func:`torch.func.functional_call` can swap the model's
    parameters for tensors of a graph."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def meta_gradient_scores(model: nn.Module, weights: dict[str, nn.Parameter], loss_fn: LossFn,
                         batches: Sequence[dict], lr: float, momentum: float) -> Scores:
    """ProsPr's |∂L(θ_K(c))/∂c| at c = 1: masks c on the weights, K = len(batches) − 1 differentiable SGD steps
    (lr, momentum; no weight decay, as the reference) on batches[0..K−1], the loss of batches[K] after them.

    As the reference, the first step's momentum buffer is a detached copy of its gradient (with momentum > 0 the
    meta-gradient does not flow through the first step's gradient)."""
    clone = copy.deepcopy(model)
    clone.train()
    objective = _LossOf(clone, loss_fn)
    device = next(clone.parameters()).device
    parameters = dict(clone.named_parameters())
    gates = {name: torch.ones_like(parameters[name], requires_grad=True) for name in weights}
    names = [name for name, _ in clone.named_parameters()]
    fast = [parameter.detach() * gates[name] if name in gates else parameter.detach().clone().requires_grad_(True)
            for name, parameter in clone.named_parameters()]
    buffers: list[torch.Tensor | None] = [None] * len(fast)

    def loss_at(params: list[torch.Tensor], batch: dict) -> torch.Tensor:
        return torch.func.functional_call(objective, {f"model.{name}": p for name, p in zip(names, params)},
                                          (to_device(batch, device),))

    for batch in batches[:-1]:
        grads = torch.autograd.grad(loss_at(fast, batch), fast, create_graph=True)
        updated = []
        for index, (param, grad) in enumerate(zip(fast, grads)):
            if momentum:
                buffers[index] = grad.detach().clone() if buffers[index] is None else buffers[index] * momentum + grad
                grad = buffers[index]
            updated.append(param - lr * grad)
        fast = updated
    meta = torch.autograd.grad(loss_at(fast, batches[-1]), list(gates.values()))
    return {name: grad.abs().double().cpu() for name, grad in zip(gates, meta)}

