"""Structured groups: prunable units of one kind in one place, and what each unit owns.

A structured mask is ``{group name: sorted kept indices}``. It converts to per-parameter boolean
masks (for masked training) and to index selections (for physical surgery).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

StructuredMask = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class ParamSlice:
    """Unit ``i`` of a group owns indices ``[i*span, (i+1)*span)`` of ``param`` along ``dim``."""

    param: str
    dim: int
    span: int = 1


@dataclass(frozen=True)
class Group:
    """``size`` prunable units (filters, heads, neurons) named ``name``, of kind ``kind``.

    ``owned`` are the slices that disappear with a unit: its own weights and bias, its BN entries
    and the next layer's input channels.
    """

    name: str
    kind: str
    size: int
    owned: tuple[ParamSlice, ...] = field(default_factory=tuple)


def num_pruned(size: int, ratio: float) -> int:
    """Units removed from a group of ``size`` at ``ratio`` (round half up)."""
    return int(ratio * size + 0.5)


def _unit_indices(kept: tuple[int, ...], span: int) -> torch.Tensor:
    kept_tensor = torch.as_tensor(kept, dtype=torch.long)
    return (kept_tensor[:, None] * span + torch.arange(span)).flatten()


def parameter_masks(
    groups: dict[str, Group], mask: StructuredMask, parameters: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) for every parameter that ``mask`` touches (buffers such as
    BatchNorm running statistics are left to surgery)."""
    masks: dict[str, torch.Tensor] = {}
    for group_name, kept in mask.items():
        for piece in groups[group_name].owned:
            if piece.param not in parameters:
                continue
            param = parameters[piece.param]
            current = masks.get(piece.param)
            if current is None:
                current = torch.ones_like(param, dtype=torch.bool)
            keep_along_dim = torch.zeros(param.shape[piece.dim], dtype=torch.bool, device=param.device)
            keep_along_dim[_unit_indices(kept, piece.span).to(param.device)] = True
            shape = [1] * param.ndim
            shape[piece.dim] = -1
            masks[piece.param] = current & keep_along_dim.view(shape)
    return masks


def kept_index_selection(
    groups: dict[str, Group], mask: StructuredMask
) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """For physical surgery: per parameter, the ``(dim, kept indices)`` selections to apply."""
    selections: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for group_name, kept in mask.items():
        for piece in groups[group_name].owned:
            selections.setdefault(piece.param, []).append((piece.dim, _unit_indices(kept, piece.span)))
    return selections
