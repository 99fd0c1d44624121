"""The combinatorial search of the sparse-MLP studies (STUDY §5b), enumerated as the paper's search does it.

The network is 2 → d1 → d2 → d3 → 1 inside a model 2 → w → w → w → 1 (parameters ``layers.{i}.weight`` and
``layers.{i}.bias``, ``layers.0`` on the input side); units beyond the active widths are masked off entirely.

- **Phase 1** (structured): every tuple of active widths; a candidate keeps the dense top-left block
  ``d_{i+1} × d_i`` of each layer and the active units' biases, so it holds 2·d1 + d1·d2 + d2·d3 + d3 nonzero
  weights (biases are never counted).
- **Phase 2** (unstructured, for chosen widths): every hidden layer (input→d1, d1→d2, d2→d3) takes each nonzero
  count from max(rows, cols) to rows·cols and each canonical valid support of that count
  (:mod:`hfprune.study.sparse.supports`); the classifier d3 → 1 stays dense within its active width, as in the
  reference. Candidates come in the reference's order: layer counts (first layer slowest), then support indices
  (last layer fastest).

Everything is lazy: the phase-2 space grows as the product of the layers' support counts, so it is counted by
formula (:func:`count_phase2`, pure Python in :mod:`hfprune.study.sparse.space`) and walked one candidate at
a time; a layer with many supports is indexed by unranking, so a sampled candidate of wide widths still gets its
exact masks (about a second per support at 10 columns, tens of seconds at 16).
"""

from __future__ import annotations

import random
import re
from bisect import bisect_left
from dataclasses import dataclass
from itertools import product
from math import prod
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.study.sparse.space import (INPUT_SIZE, NUM_OUTPUTS, Restriction, Widths, check_limit, check_widths,
                                        count_groups, count_phase1, count_phase2, layer_shapes, phase1_model_nonzeros,
                                        phase1_nonzeros, widths_per_layer)
from hfprune.study.sparse.supports import count_supports, support_rows, unrank_support

__all__ = ["INPUT_SIZE", "NUM_OUTPUTS", "SearchCandidate", "count_phase1", "count_phase2", "count_supports",
           "layer_shapes", "phase1_candidates", "phase1_nonzeros", "phase2_candidates", "smallest_widths",
           "valid_supports"]


def as_tensor(bit_rows: tuple[int, ...], cols: int) -> torch.Tensor:
    """A support's row bit sets as a bool ``rows × cols`` tensor."""
    return torch.tensor([[bool(bits >> column & 1) for column in range(cols)] for bits in bit_rows], dtype=torch.bool)


def valid_supports(rows: int, cols: int, nnz: int) -> list[torch.Tensor]:
    """Every canonical valid support of a ``rows × cols`` layer with ``nnz`` ones, as bool tensors, in order."""
    return [as_tensor(bit_rows, cols) for bit_rows in support_rows(rows, cols, nnz)]


ENUMERATE_UP_TO = 50_000  # layers with more supports than this are indexed by unranking, never listed


def support(rows: int, cols: int, nnz: int, index: int) -> torch.Tensor:
    """The ``index``-th canonical valid support (the order of :func:`valid_supports`); a layer with many supports
    is unranked directly (:func:`unrank_support`) instead of listed."""
    total = count_supports(rows, cols, nnz)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < total:
        raise HfpruneError(f"support index {index!r} is out of range: a {rows}×{cols} layer with {nnz} nonzeros "
                           f"has {total} supports (0..{total - 1})")
    if total > ENUMERATE_UP_TO:
        return as_tensor(unrank_support(rows, cols, nnz, index), cols)
    return as_tensor(support_rows(rows, cols, nnz)[index], cols)


@dataclass(frozen=True)
class SearchCandidate:
    """One candidate of the search: active widths and, in phase 2, one support per hidden layer.

    ``layers`` holds, per hidden layer (input side first), ``(nnz, support index)`` into
    :func:`valid_supports` of that layer's active block; None in phase 1 (every block dense).
    """

    phase: int
    widths: Widths
    layers: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", check_widths(self.widths))
        if self.phase not in (1, 2):
            raise HfpruneError(f"search phase must be 1 or 2, got {self.phase!r}")
        if self.phase == 1:
            if self.layers is not None:
                raise HfpruneError("a phase-1 search candidate keeps dense blocks: give no per-layer supports")
            return
        layers = tuple(tuple(layer) for layer in (self.layers or ()))
        if len(layers) != len(self.widths):
            raise HfpruneError(f"a phase-2 candidate of widths {list(self.widths)} needs one (nnz, support) pair "
                               f"per hidden layer, got {len(layers)}")
        for (rows, cols), (nnz, index) in zip(layer_shapes(self.widths), layers):
            if not 0 <= index < count_supports(rows, cols, nnz):
                raise HfpruneError(f"support index {index} is out of range for a {rows}×{cols} layer with "
                                   f"{nnz} nonzeros ({count_supports(rows, cols, nnz)} supports)")
        object.__setattr__(self, "layers", layers)

    @property
    def nonzeros(self) -> int:
        """Nonzero weights of the candidate (biases not counted)."""
        if self.layers is None:
            return phase1_nonzeros(self.widths)
        return sum(nnz for nnz, _ in self.layers) + self.widths[-1] * NUM_OUTPUTS

    @property
    def mask_id(self) -> str:
        """A stable id: ``w3-3-3`` (phase 1) or ``w3-3-3:n4-6-5:s0-11-3`` (phase 2: counts, support indices)."""
        text = "w" + "-".join(map(str, self.widths))
        if self.layers is not None:
            text += ":n" + "-".join(str(nnz) for nnz, _ in self.layers)
            text += ":s" + "-".join(str(index) for _, index in self.layers)
        return text

    @classmethod
    def from_mask_id(cls, mask_id: str) -> "SearchCandidate":
        """The candidate a :attr:`mask_id` names (the inverse of ``mask_id``)."""
        match = re.fullmatch(r"w(\d+(?:-\d+)*)(?::n(\d+(?:-\d+)*):s(\d+(?:-\d+)*))?", mask_id.strip())
        if not match:
            raise HfpruneError(f"'{mask_id}' is not a search mask id; expected e.g. 'w3-3-3' or "
                               f"'w3-3-3:n4-6-5:s0-11-3'")
        widths = tuple(int(d) for d in match.group(1).split("-"))
        if match.group(2) is None:
            return cls(1, widths)
        counts = [int(n) for n in match.group(2).split("-")]
        indices = [int(s) for s in match.group(3).split("-")]
        if len(counts) != len(indices):
            raise HfpruneError(f"mask id '{mask_id}' gives {len(counts)} counts but {len(indices)} support indices")
        return cls(2, widths, tuple(zip(counts, indices)))

    def facts(self) -> dict[str, Any]:
        """What a trial record keeps of the candidate."""
        facts: dict[str, Any] = {"phase": self.phase, "widths": list(self.widths), "nonzeros": self.nonzeros}
        if self.layers is not None:
            facts["layer_nonzeros"] = [nnz for nnz, _ in self.layers]
            facts["layer_supports"] = [index for _, index in self.layers]
        return facts

    def blocks(self) -> list[torch.Tensor]:
        """The bool support of every layer's active block, input side first (classifier dense)."""
        shapes = layer_shapes(self.widths)
        if self.layers is None:
            return [torch.ones(rows, cols, dtype=torch.bool) for rows, cols in shapes]
        searched = [support(rows, cols, nnz, index) for (rows, cols), (nnz, index) in zip(shapes, self.layers)]
        rows, cols = shapes[-1]
        return searched + [torch.ones(rows, cols, dtype=torch.bool)]

    def masks(self, model_width_or_shapes: int | Sequence[int] | Mapping[str, Any] | nn.Module
              ) -> dict[str, torch.Tensor]:
        """Bool masks (True = kept) for ``layers.{i}.weight`` / ``layers.{i}.bias`` of the whole model.

        The model is given by its hidden width ``w`` (2 → w → w → w → 1), its hidden sizes, a mapping of parameter
        names to shapes or tensors (e.g. a state dict), or the model itself. Outside the active blocks everything
        is False; the active units' biases are True.
        """
        hidden = _hidden_sizes(model_width_or_shapes, len(self.widths))
        if any(d > h for d, h in zip(self.widths, hidden)):
            raise HfpruneError(f"search candidate {self.mask_id} needs hidden sizes of at least "
                               f"{list(self.widths)}; the model has {list(hidden)}: widen the model")
        masks: dict[str, torch.Tensor] = {}
        for i, ((rows, cols), block) in enumerate(zip(layer_shapes(hidden), self.blocks())):
            weight = torch.zeros(rows, cols, dtype=torch.bool)
            weight[:block.shape[0], :block.shape[1]] = block
            bias = torch.zeros(rows, dtype=torch.bool)
            bias[:block.shape[0]] = True
            masks[f"layers.{i}.weight"], masks[f"layers.{i}.bias"] = weight, bias
        return masks


def _hidden_sizes(model: int | Sequence[int] | Mapping[str, Any] | nn.Module, depth: int) -> Widths:
    """Hidden sizes of a 2 → ... → 1 model given as a width, hidden sizes, parameter shapes or a module."""
    if isinstance(model, int) and not isinstance(model, bool):
        return check_widths([model] * depth, "model width")
    if isinstance(model, nn.Module):
        model = dict(model.named_parameters())
    if isinstance(model, Mapping):
        shapes = {name: tuple(value.shape if hasattr(value, "shape") else value) for name, value in model.items()}
        names = [f"layers.{i}.weight" for i in range(depth + 1)]
        missing = [name for name in names if name not in shapes]
        if missing:
            raise HfpruneError(f"the model has no parameter {missing[0]}; the search masks a model whose Linear "
                               f"layers are layers.0 .. layers.{depth}")
        weights = [shapes[name] for name in names]
        chain_ok = all(len(s) == 2 for s in weights) and all(weights[i][0] == weights[i + 1][1]
                                                              for i in range(depth))
        if not chain_ok or weights[0][1] != INPUT_SIZE or weights[-1][0] != NUM_OUTPUTS:
            raise HfpruneError(f"the search masks a {INPUT_SIZE} → ... → {NUM_OUTPUTS} MLP with {depth} hidden "
                               f"layers; the model's weights have shapes {weights}")
        return tuple(shape[0] for shape in weights[:-1])
    hidden = check_widths(model, "model hidden sizes")
    if len(hidden) != depth:
        raise HfpruneError(f"the model has {len(hidden)} hidden layers, the candidate {depth}: give hidden sizes "
                           f"for every layer")
    return hidden


def phase1_candidates(width_ranges: Sequence[int] | Sequence[Sequence[int]] = range(1, 17),
                      depth: int = 3, max_model_nonzeros: int | None = None) -> Iterator[SearchCandidate]:
    """Every tuple of active widths (d1 slowest, the last layer fastest), each a dense-block candidate; with
    ``max_model_nonzeros``, only those with at most that many weights + active biases."""
    for widths in product(*widths_per_layer(width_ranges, depth)):
        if max_model_nonzeros is None or phase1_model_nonzeros(widths) <= max_model_nonzeros:
            yield SearchCandidate(1, widths)


def _uniform_subset(rng: random.Random, size: int, count: int) -> list[int]:
    """A uniform random ``count``-subset of ``range(size)``, sorted; ``size`` may exceed a machine integer."""
    if 2 * count >= size:
        return sorted(rng.sample(range(size), count))
    chosen: set[int] = set()
    while len(chosen) < count:  # rejection keeps every subset equally likely; at most half are ever taken
        chosen.add(rng.randrange(size))
    return sorted(chosen)


def _sampled(widths: Widths, per_budget_limit: int, seed: int,
             restriction: Restriction = Restriction()) -> dict[tuple[int, ...], list[int] | None]:
    """Per group of layer counts, the sorted positions kept within it (None: all of it).

    Each total nonzero count T keeps a uniform sample of at most ``per_budget_limit`` of its candidates, drawn by a
    generator seeded from ``(seed, T)`` alone, so a budget's sample does not depend on which other budgets run.
    """
    by_total: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    everything = Restriction(None, restriction.max_nonzeros, restriction.limits)
    for counts, sizes in count_groups(widths, everything):
        total = sum(counts) + widths[-1] * NUM_OUTPUTS
        by_total.setdefault(total, []).append((counts, prod(sizes)))
    kept: dict[tuple[int, ...], list[int] | None] = {}
    for total, groups in by_total.items():
        size = sum(group_size for _, group_size in groups)
        if size <= per_budget_limit:
            kept.update({counts: None for counts, _ in groups})
            continue
        picks = _uniform_subset(random.Random(f"hfprune-search:{seed}:{total}"), size, per_budget_limit)
        starts = [0]
        for _, group_size in groups:
            starts.append(starts[-1] + group_size)
        for (counts, _), start, stop in zip(groups, starts, starts[1:]):
            kept[counts] = [p - start for p in picks[bisect_left(picks, start):bisect_left(picks, stop)]]
    return kept


def _unravel(position: int, sizes: list[int]) -> list[int]:
    """Per-layer support indices of the ``position``-th combination (the last layer fastest)."""
    indices = []
    for size in reversed(sizes):
        position, index = divmod(position, size)
        indices.append(index)
    return indices[::-1]


def phase2_candidates(widths: Sequence[int], budgets: Iterable[int] | None = None,
                      per_budget_limit: int | None = None, seed: int = 0, max_nonzeros: int | None = None,
                      support_limits: Sequence[int | None] | None = None) -> Iterator[SearchCandidate]:
    """Every phase-2 candidate of these active widths, lazily, in the reference's order.

    ``budgets`` keeps only candidates whose total nonzeros are listed, ``max_nonzeros`` those with at most that
    many; ``support_limits`` keeps, per searched layer, the first k supports of each count (the reference's
    restriction of its 99.5% search); ``per_budget_limit`` keeps a seeded uniform sample of at most that many
    candidates per total nonzero count (the order stays the reference's).
    """
    widths, restriction = check_widths(widths), Restriction.of(budgets, max_nonzeros, support_limits)
    check_limit(per_budget_limit)
    kept = None if per_budget_limit is None else _sampled(widths, per_budget_limit, seed, restriction)
    for counts, sizes in count_groups(widths, restriction):
        positions = None if kept is None else kept[counts]
        for position in (range(prod(sizes)) if positions is None else positions):
            yield SearchCandidate(2, widths, tuple(zip(counts, _unravel(position, sizes))))


def smallest_widths(records: Iterable[Mapping[str, Any]], target_acc: float) -> Widths | None:
    """From phase-1 records, the widths with the fewest nonzeros whose best ``final_test_acc`` (over its records:
    repeats, hyperparameters) reaches ``target_acc``; ties go to fewer units in all, then the smaller widths in
    lexicographic order. None when no widths reach it. Records of another phase or without an accuracy are
    skipped."""
    best: dict[Widths, tuple[float, int]] = {}
    for record in records:
        record = record.to_json() if hasattr(record, "to_json") else record  # a TrialRecord or its JSON line
        if record.get("phase", 1) != 1 or record.get("final_test_acc") is None or record.get("widths") is None:
            continue
        widths = check_widths(record["widths"], "record widths")
        nonzeros = record.get("nonzeros")
        nonzeros = phase1_nonzeros(widths) if nonzeros is None else int(nonzeros)
        acc = float(record["final_test_acc"])
        if widths not in best or acc > best[widths][0]:
            best[widths] = (acc, nonzeros)
    reaching = [(nonzeros, sum(widths), widths) for widths, (acc, nonzeros) in best.items() if acc >= target_acc]
    return min(reaching)[2] if reaching else None
