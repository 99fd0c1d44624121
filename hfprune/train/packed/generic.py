"""Any model of one architecture trained as one: ``torch.func.vmap`` over ``functional_call`` with every job's
parameters and buffers (BatchNorm's running statistics stay per job), the jobs' own loss function unchanged."""

from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from hfprune.errors import HfpruneError
from hfprune.train.packed.stack import FlatStack


class _Functional:
    """What a loss function sees as the model: calls run ``base`` on one job's parameters and buffers."""

    def __init__(self, base: torch.nn.Module, params: dict, buffers: dict):
        self._base, self._state = base, (params, buffers)

    def __call__(self, *args, **kwargs):
        return functional_call(self._base, self._state, args, kwargs)

    def __getattr__(self, name):
        return getattr(self._base, name)


class VmappedModel:
    """Gradients of every job's loss on its batch, written into ``stack.grad``; returns the K losses."""

    def __init__(self, stack: FlatStack, loss_fn):
        self.stack, self.loss_fn, self.base = stack, loss_fn, stack.models[0]
        self._losses = vmap(self._loss, randomness="error")

    def _loss(self, params: dict, buffers: dict, batch: dict) -> torch.Tensor:
        return self.loss_fn(_Functional(self.base, params, buffers), batch)

    def gradients(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        stack = self.stack
        with torch.enable_grad():
            try:
                losses = self._losses(stack.parameters(), stack.buffers, batch)
            except RuntimeError as error:
                if "randomness" not in str(error):
                    raise
                raise HfpruneError("train_packed: the model or loss draws random numbers during training (dropout, "
                                   "mixup, augmentation inside the loss); pass augmentation as batch_transform, or "
                                   "train these jobs alone") from None
            (grad,) = torch.autograd.grad(losses.sum(), stack.flat)
        stack.grad.copy_(grad)
        return losses.detach()
