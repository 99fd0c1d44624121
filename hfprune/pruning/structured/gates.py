"""Unit gates: structured masks applied on a live model through forward pre-hooks, without copies.

Every group's units feed one consumer layer (the ParamSlice along ``dim=1`` of a ``Linear`` or
``Conv2d`` weight: ViT's ``o_proj`` for heads and ``fc2`` for FFN neurons, LeNet's next conv for
filters). A pre-hook on that consumer multiplies its input by the group's gate (one entry per
unit, repeated over the unit's ``span``), which computes exactly what the physically pruned
model computes. Gates are plain tensors: swap masks by refilling them (K masks' pruned losses on
ONE model instance), or let them require grad (the gradient of the loss with respect to a gate
is the Taylor-FO importance of that unit).

A group whose units are whole modules (decoder layers, :attr:`Group.modules`) is gated on each module's output:
``gate · output + (1 − gate) · input`` — a pruned layer passes its hidden states through, as the model without it
computes.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from hfprune.pruning.structured.groups import Group, ParamSlice, StructuredMask


def consumer(group: Group, modules: dict[str, nn.Module]) -> tuple[str, nn.Module, ParamSlice]:
    """(name, module, slice) of the layer that reads ``group``'s units: a Linear/Conv2d weight sliced along dim 1."""
    for piece in group.owned:
        module_name, _, leaf = piece.param.rpartition(".")
        module = modules.get(module_name)
        if leaf == "weight" and piece.dim == 1 and piece.unit is None and isinstance(module, (nn.Linear, nn.Conv2d)):
            return module_name, module, piece
    raise ValueError(f"group '{group.name}' has no consumer layer (a Linear/Conv2d weight sliced along dim 1)")


def _hidden(output):
    """The hidden states of a module's output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_hidden(output, hidden):
    return type(output)((hidden, *output[1:])) if isinstance(output, (tuple, list)) else hidden


class UnitGates:
    """Gates for ``groups`` on ``model``; 1 = unit kept, 0 = unit pruned. Use as a context manager
    or call :meth:`remove` to take the hooks off again."""

    def __init__(self, model: nn.Module, groups: dict[str, Group], requires_grad: bool = False):
        modules = dict(model.named_modules())
        reference = next(model.parameters())
        self.groups = groups
        self.gates: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, group in groups.items():
            gate = torch.ones(group.size, device=reference.device, dtype=reference.dtype, requires_grad=requires_grad)
            self.gates[name] = gate
            if group.modules:
                for unit, module_name in enumerate(group.modules):
                    self._handles.append(modules[module_name].register_forward_hook(self._pass_through(gate, unit),
                                                                                     with_kwargs=True))
                continue
            _, module, piece = consumer(group, modules)
            channel_dim = -1 if isinstance(module, nn.Linear) else 1
            channels = module.weight.shape[1]
            self._handles.append(module.register_forward_pre_hook(self._hook(gate, piece, channels, channel_dim)))

    @staticmethod
    def _hook(gate: torch.Tensor, piece: ParamSlice, channels: int, channel_dim: int) -> Callable:
        def hook(module, args):
            x = args[0]
            scale = gate.repeat_interleave(piece.span) if piece.span > 1 else gate
            if scale.numel() != channels:  # the group reads a part of the layer's inputs: the others pass as they are
                rest = channels - piece.offset - scale.numel()
                scale = torch.cat([scale.new_ones(piece.offset), scale, scale.new_ones(rest)])
            shape = [1] * x.ndim
            shape[channel_dim] = -1
            return (x * scale.view(shape).to(x.dtype), *args[1:])

        return hook

    @staticmethod
    def _pass_through(gate: torch.Tensor, unit: int) -> Callable:
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            g = gate[unit].to(x.dtype)
            return _with_hidden(output, g * _hidden(output) + (1 - g) * x)

        return hook

    @torch.no_grad()
    def set_mask(self, mask: StructuredMask | None) -> None:
        """Gate every group to ``mask`` (groups it does not name, or ``None``: all units kept)."""
        for name, gate in self.gates.items():
            if mask is not None and name in mask:
                gate.zero_()
                gate[torch.as_tensor(mask[name], dtype=torch.long, device=gate.device)] = 1
            else:
                gate.fill_(1)

    def zero_grad(self) -> None:
        for gate in self.gates.values():
            gate.grad = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "UnitGates":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def pruned_losses(
    model: nn.Module,
    groups: dict[str, Group],
    masks: Iterable[StructuredMask],
    evaluate: Callable[[nn.Module], float],
) -> list[float]:
    """``evaluate(model)`` under each mask in turn, on this one model instance (no copies)."""
    with UnitGates(model, groups) as gates:
        losses = []
        for mask in masks:
            gates.set_mask(mask)
            losses.append(evaluate(model))
    return losses
