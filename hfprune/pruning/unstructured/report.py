"""Measure the sparsity a model actually has (its live zeros), per parameter and overall."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.targets import layer_index


@dataclass(frozen=True)
class SparsityRow:
    """One parameter's measured sparsity (``name`` "overall" sums every row; its ``layer`` is None)."""

    name: str
    layer: int | None
    kept: int
    total: int

    @property
    def sparsity(self) -> float:
        return 1 - self.kept / self.total if self.total else 0.0


def _parameter(parameters: dict[str, nn.Parameter], name: str) -> tuple[str, nn.Parameter]:
    for candidate in (name, f"{name}.weight"):
        if candidate in parameters:
            return candidate, parameters[candidate]
    raise HfpruneError(f"the model has no parameter {name!r} (nor {name}.weight)")


@torch.no_grad()
def sparsity_table(model: nn.Module, names: Iterable[str]) -> list[SparsityRow]:
    """Kept (non-zero) and total entries of each named parameter (or module's ``.weight``) as the model holds
    them now, then an "overall" row."""
    parameters = dict(model.named_parameters())
    rows = []
    for name in names:
        name, parameter = _parameter(parameters, name)
        rows.append(SparsityRow(name, layer_index(name), int(torch.count_nonzero(parameter)), parameter.numel()))
    overall = SparsityRow("overall", None, sum(row.kept for row in rows), sum(row.total for row in rows))
    return [*rows, overall]


def format_sparsity_table(rows: Iterable[SparsityRow]) -> str:
    """A markdown table of :func:`sparsity_table` rows."""
    lines = ["| parameter | layer | kept | total | sparsity |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        layer = "" if row.layer is None else str(row.layer)
        name = f"**{row.name}**" if row.name == "overall" else f"`{row.name}`"
        lines.append(f"| {name} | {layer} | {row.kept:,} | {row.total:,} | {row.sparsity:.4f} |")
    return "\n".join(lines)
