"""What every structured criterion shares: its options (a pydantic model, as each unstructured method owns its knobs),
which kinds of group it scores, whether it needs calibration data, and the mask that keeps the best units.

- :class:`Importance` — scores per unit (higher = more important); :meth:`Importance.select` keeps the ``counts[g]``
  best units of each group ``g`` (within each partition of a grouped-query-attention group, equally many);
- :func:`select_top` — that selection from scores;
- :func:`unit_sums` — Σ of a per-element score tensor over what each unit owns (its slices of every parameter,
  or whole parameters for units that are modules), the aggregation every weight-based criterion uses.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable, Mapping

import torch
from torch import nn

from hfprune.config.schema import Section
from hfprune.errors import HfpruneError
from hfprune.pruning.structured.groups import Group, ParamSlice, StructuredMask

LossFn = Callable[[nn.Module, dict], torch.Tensor]
ElementScore = Callable[[str, torch.Tensor], "torch.Tensor | None"]  # (parameter name, parameter) -> per element


def _order(score: torch.Tensor, units: range) -> list[int]:
    """``units`` (a range) best first (ties: lower index first)."""
    part = score[units.start:units.stop]
    return (torch.sort(-part, stable=True).indices + units.start).tolist()


def select_top(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int],
               groups: Mapping[str, Group] | None = None) -> StructuredMask:
    """Keep the ``counts[g]`` highest-scoring units of each group (ties: lower index first); a group with
    partitions keeps ``counts[g] / partitions`` in each."""
    mask = {}
    for name, keep in counts.items():
        score = scores[name].detach().double().cpu()
        group = groups[name] if groups is not None else None
        if group is None or group.partitions == 1:
            mask[name] = tuple(sorted(_order(score, range(len(score)))[:keep]))
            continue
        per_part, size = keep // group.partitions, group.part_size
        mask[name] = tuple(sorted(unit for part in range(group.partitions)
                                  for unit in _order(score, range(part * size, (part + 1) * size))[:per_part]))
    return mask


def piece_sum(group: Group, piece: ParamSlice, element: torch.Tensor) -> torch.Tensor:
    """Per unit of ``group``, Σ of ``element`` (shaped as the piece's parameter) over the unit's slice."""
    total = torch.zeros(group.size, dtype=torch.float64)
    if piece.unit is not None:
        total[piece.unit] = element.double().sum().cpu()
        return total
    part = element.narrow(piece.dim, piece.offset, group.size * piece.span).movedim(piece.dim, 0)
    return part.reshape(group.size, -1).double().sum(1).cpu()


def unit_sums(model: nn.Module, groups: Mapping[str, Group], names: Iterable[str],
              element: ElementScore) -> dict[str, torch.Tensor]:
    """Per unit, Σ over the slices it owns of ``element(parameter name, parameter)`` (None: the parameter does not
    count, e.g. a bias for an activation score)."""
    params = dict(model.named_parameters())
    scores = {}
    for name in names:
        group = groups[name]
        total = torch.zeros(group.size, dtype=torch.float64)
        for piece in group.owned:
            if piece.param not in params:
                continue
            value = element(piece.param, params[piece.param])
            if value is not None:
                total += piece_sum(group, piece, value)
        scores[name] = total
    return scores


class Importance(Section):
    """A structured criterion: its options are its fields; it scores units of the kinds in ``kinds`` (None: all)."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False
    needs_loss: ClassVar[bool] = False  # calibration batches must give a loss (labels, or a language model)
    kinds: ClassVar[tuple[str, ...] | None] = None

    def check(self, groups: Mapping[str, Group], names: Iterable[str], *, has_calibration: bool) -> None:
        """An HfpruneError before any work when this criterion cannot score ``names`` or lacks its data."""
        if self.needs_calibration and not has_calibration:
            raise HfpruneError(f"method {self.name} needs calibration data (--calibration-data FILE, or calibration "
                               "batches in the API); or choose l1, l2 or random")
        if self.kinds is not None:
            other = sorted({groups[name].kind for name in names} - set(self.kinds))
            if other:
                raise HfpruneError(f"method {self.name} scores {', '.join(self.kinds)}, not {', '.join(other)}; "
                                   f"choose another --method for {', '.join(other)}")

    def scores(self, model: nn.Module, groups: Mapping[str, Group], names: Iterable[str], *,
               batches: Iterable[dict] | None, loss_fn: LossFn | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def global_scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scores as a global allocation compares them across groups (as they are, unless a criterion's paper
        says otherwise)."""
        return dict(scores)

    def select(self, model: nn.Module, groups: Mapping[str, Group], counts: Mapping[str, int], *, seed: int = 0,
               batches: Iterable[dict] | None = None, loss_fn: LossFn | None = None,
               scores: Mapping[str, torch.Tensor] | None = None) -> StructuredMask:
        """Keep the ``counts[g]`` most important units of each group ``g`` (``scores``: already computed)."""
        if scores is None:
            self.check(groups, counts, has_calibration=batches is not None)
            scores = self.scores(model, groups, list(counts), batches=batches, loss_fn=loss_fn)
        return select_top(scores, counts, groups)

    def adjust(self, model: nn.Module, groups: Mapping[str, Group], mask: StructuredMask) -> None:
        """Change ``model`` for ``mask`` before the pruned units go (none by default; FLAP's bias compensation)."""
