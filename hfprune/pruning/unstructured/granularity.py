"""Which weights compete with each other inside a budget: the whole budget, each output row, or N:M groups.

- ``layer`` — the lowest-scoring ``count`` weights of the budget's tensors together (one Linear, or every target
  for a global budget), by the exact radix select of :func:`~.selection.prune_smallest`;
- ``row`` — every output row of a Linear loses the same round-half-up(ratio · in_features) lowest-scoring
  weights (Wanda's comparison group);
- ``N:M`` (e.g. ``2:4``) — in every group of M consecutive input weights of a row exactly N, the lowest-scoring,
  are pruned: the semi-structured pattern sparse tensor cores run; the Linear's sparsity is N/M.

Ties are pruned in a fixed order (the lower column first), so masks are reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured.radix import LazyScores, Scores, Selection, prune_smallest

_PATTERN = re.compile(r"(\d+):(\d+)")
GRANULARITY_HELP = ("which weights compete inside a layer's budget: 'layer' (the whole Linear), 'row' (every output "
                    "row loses the same share, as Wanda) or 'N:M' such as '2:4' (N of every M consecutive input "
                    "weights of a row; needs sparsity N/M)")


@dataclass(frozen=True)
class Granularity:
    """How a budget's weights are compared; ``n``/``m`` are set for an N:M pattern."""

    kind: str  # "layer", "row" or "n:m"
    n: int = 0
    m: int = 0

    @property
    def pattern(self) -> str | None:
        """``"N:M"`` for a semi-structured pattern, else None."""
        return f"{self.n}:{self.m}" if self.kind == "n:m" else None

    @property
    def per_linear(self) -> bool:
        """Whether the comparison needs one Linear and its ratio (not a budget spanning several Linears)."""
        return self.kind != "layer"

    def sparsity_problem(self, sparsity: float) -> str | None:
        """Why ``sparsity`` does not fit (an N:M pattern fixes it at N/M), or None."""
        if self.kind == "n:m" and abs(sparsity - self.n / self.m) > 1e-9:
            return (f"pattern {self.pattern} prunes exactly {self.n / self.m:g} of every target Linear; set the "
                    f"sparsity to {self.n / self.m:g} (got {sparsity:g})")
        return None

    def select(self, scores: Sequence[Scores], count: int, ratio: float | None) -> Selection:
        """Masks (True = kept, on CPU) of ``scores`` (one tensor unless ``kind`` is ``layer``) that prune the
        ``count`` lowest over them all (``layer``), or ``ratio`` of every row / N of every M."""
        if self.kind == "layer":
            return prune_smallest(scores, count)
        (score,) = scores
        values = score.compute() if isinstance(score, LazyScores) else score
        if self.kind == "row":
            keep = keep_per_row(values, num_pruned(values.shape[-1], ratio))
        else:
            keep = keep_n_of_m(values, self.n, self.m)
        return Selection([keep.cpu()], None)


LAYER = Granularity("layer")


def granularity_text(value):
    """A granularity as written; YAML 1.1 reads an unquoted ``2:4`` as the base-60 integer 124, read back here."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        return f"{value // 60}:{value % 60}"
    return value


def checked_granularity(text: str) -> str:
    """``text`` if :func:`parse_granularity` accepts it (a pydantic validator)."""
    parse_granularity(text)
    return text


def parse_granularity(text: str) -> Granularity:
    """``layer``, ``row`` or ``N:M`` (0 < N < M) as a :class:`Granularity`; ValueError says what is allowed."""
    if text in ("layer", "row"):
        return Granularity(text)
    match = _PATTERN.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"granularity must be 'layer', 'row' or an N:M pattern such as '2:4', got {text!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"an N:M pattern needs 0 < N < M, got {text!r}")
    return Granularity("n:m", n, m)


def _stable_order(values: torch.Tensor) -> torch.Tensor:
    """Indices that sort |values| along the last dimension ascending, ties by position (in float32, as
    :func:`~.selection.prune_smallest` compares)."""
    return torch.sort(values.detach().float().abs(), dim=-1, stable=True).indices


def keep_per_row(scores: torch.Tensor, pruned_per_row: int) -> torch.Tensor:
    """Keep all but the ``pruned_per_row`` lowest |scores| of every row (last dimension), on their device."""
    keep = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if pruned_per_row:
        keep.scatter_(-1, _stable_order(scores)[..., :pruned_per_row], False)
    return keep


def keep_n_of_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the ``n`` lowest |scores| of every group of ``m`` consecutive entries of each row."""
    rows, columns = scores.shape
    if columns % m:
        raise HfpruneError(f"pattern {n}:{m} needs a number of input features divisible by {m}; a Linear here has "
                           f"{columns}")
    return keep_per_row(scores.reshape(rows, columns // m, m), n).reshape(rows, columns)
