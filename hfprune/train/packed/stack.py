"""The pack's weights as one flat ``[K, N]`` tensor (job k's trained parameters one after another in row k), its
buffers stacked ``[K, ...]``, and every job's model pointed at its own slices while the pack trains.

One flat tensor makes the optimizer's and the masks' work a handful of whole-pack operations per step whatever
the number of parameters; a job's parameter is a contiguous slice of its row, so its own code (masks, callbacks)
reads and writes it as an ordinary tensor.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attribute = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attribute


class FlatStack:
    """Parameters of K models of one architecture, stacked on ``device``.

    ``flat`` ([K, N]) holds the parameters that train (``requires_grad``), in ``named_parameters`` order; ``fixed``
    and ``buffers`` hold the others, stacked ``[K, ...]``. With ``autograd`` the flat tensor is a leaf that
    records gradients (the generic engine); otherwise gradients are written into :attr:`grad` by hand.
    """

    def __init__(self, models: list[nn.Module], device: torch.device, autograd: bool):
        self.models, self.device, self.size = models, device, len(models)
        named = [dict(model.named_parameters()) for model in models]
        self.trained = [name for name, param in named[0].items() if param.requires_grad]
        self.fixed_names = [name for name, param in named[0].items() if not param.requires_grad]
        self.offsets: dict[str, tuple[int, torch.Size]] = {}
        offset = 0
        for name in self.trained:
            shape = named[0][name].shape
            self.offsets[name] = (offset, shape)
            offset += math.prod(shape)
        self.numel = offset
        dtype = named[0][self.trained[0]].dtype
        with torch.no_grad():
            self.flat = torch.empty(self.size, offset, dtype=dtype, device=device)
            for k, params in enumerate(named):
                for name in self.trained:
                    self.row_view(self.flat, k, name).copy_(params[name].detach())
            self.fixed = {name: torch.stack([params[name].detach() for params in named]).to(device)
                          for name in self.fixed_names}
            self.buffers = {name: torch.stack([dict(model.named_buffers())[name].detach() for model in models])
                            .to(device) for name, _ in models[0].named_buffers()}
        if autograd:
            self.flat.requires_grad_(True)
        self.grad = torch.zeros_like(self.flat, requires_grad=False)
        self._originals: list[dict] = []

    # -- views ------------------------------------------------------------------------------------------------
    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        """Parameter ``name`` of every job, ``[K, *shape]``, as a view of ``flat`` (the weights or :attr:`grad`)."""
        offset, shape = self.offsets[name]
        return flat[:, offset:offset + math.prod(shape)].view(self.size, *shape)

    def row_view(self, flat: torch.Tensor, k: int, name: str) -> torch.Tensor:
        """Job ``k``'s parameter ``name``: a contiguous view of row ``k`` of ``flat``."""
        offset, shape = self.offsets[name]
        return flat[k, offset:offset + math.prod(shape)].view(shape)

    def parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter of every job, ``[K, ...]`` (views of the flat weights, differentiable under autograd)."""
        return {**{name: self.view(self.flat, name) for name in self.trained}, **self.fixed}

    # -- the jobs' models ---------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Point every job's parameters and buffers at its slices of the stacked tensors (keeping the originals)."""
        weights = self.flat.detach()
        for k, model in enumerate(self.models):
            originals: dict = {"params": {}, "buffers": {}}
            self._originals.append(originals)  # first: release() restores what a failure part way left bound
            for name, param in model.named_parameters():
                originals["params"][name] = param.data
                param.data = (self.row_view(weights, k, name) if name in self.offsets else self.fixed[name][k])
            for name, _ in model.named_buffers():
                module, attribute = _owner(model, name)
                originals["buffers"][name] = module._buffers[attribute]
                module._buffers[attribute] = self.buffers[name][k]

    @torch.no_grad()
    def release(self) -> None:
        """Give every job's model its own tensors back, holding its trained values (on the pack's device)."""
        for model, originals in zip(self.models, self._originals):
            for name, param in model.named_parameters():
                if name not in originals["params"]:
                    continue
                original, now = originals["params"][name], param.data
                param.data = original.copy_(now) if original.device == now.device else now.clone()
            for name, _ in model.named_buffers():
                if name not in originals["buffers"]:
                    continue
                module, attribute = _owner(model, name)
                original, now = originals["buffers"][name], module._buffers[attribute]
                module._buffers[attribute] = original.copy_(now) if original.device == now.device else now.clone()
        self._originals.clear()
