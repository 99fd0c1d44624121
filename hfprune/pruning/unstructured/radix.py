"""Prune exactly the k smallest |w| of one or many weight tensors, without sorting or concatenating them.

Non-negative float32 values order like their int32 bit patterns, so the k-th smallest |w| is found by a
two-pass radix select over those patterns: a histogram of the top 16 bits over every tensor finds the bucket
holding the k-th value, a histogram of the low 16 bits of that bucket's values finds the value itself. Tensors
are read in chunks, so the only full-size allocation is the boolean masks. bf16/fp16 weights are upcast per
chunk (exactly); float64 weights are rounded to float32, which keeps their order but can create ties.

Ties at the threshold are pruned in a fixed order — tensor order, then flat index — so every method prunes
exactly the number of weights it asks for, reproducibly. Every unstructured method uses :func:`prune_smallest`.

Scores other than the weights themselves can be given as :class:`LazyScores`, computed one tensor at a time
each time a pass reads them, so that a budget over a whole model never holds all of its scores at once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import torch

CHUNK = 1 << 24  # elements read at a time: bounds the temporaries of a huge Linear (an LM head, a fused FFN)
BUCKETS = 1 << 16


@dataclass(frozen=True)
class LazyScores:
    """Non-negative scores of one tensor's shape, computed by ``compute()`` whenever they are read."""

    shape: torch.Size
    compute: Callable[[], torch.Tensor]

    def numel(self) -> int:
        return self.shape.numel()


Scores = Union[torch.Tensor, LazyScores]


@dataclass(frozen=True)
class Threshold:
    """The k-th smallest |w| as float32 bits, and how many |w| lie strictly below it."""

    bits: int
    below: int

    @property
    def value(self) -> float:
        return struct.unpack("<f", struct.pack("<i", self.bits))[0]


@dataclass(frozen=True)
class Selection:
    """Masks (True = kept, on CPU) of the tensors given, and the threshold used (None when nothing or everything
    was pruned)."""

    masks: list[torch.Tensor]
    threshold: Threshold | None


def abs_bits(weight: Scores, chunk: int | None = None) -> Iterator[torch.Tensor]:
    """The int32 bit patterns of ``|weight|`` as float32, flattened, ``chunk`` (default :data:`CHUNK`) elements
    at a time."""
    values = weight.compute() if isinstance(weight, LazyScores) else weight
    flat = values.detach().reshape(-1)
    for part in flat.split(chunk or CHUNK):
        yield part.abs().float().view(torch.int32)


def _histogram(weights: Sequence[Scores], digit: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    counts = torch.zeros(BUCKETS, dtype=torch.int64)
    for weight in weights:
        for bits in abs_bits(weight):
            counts += torch.bincount(digit(bits), minlength=BUCKETS).cpu()
    return counts


def _locate(counts: torch.Tensor, rank: int) -> tuple[int, int]:
    """The bucket holding the ``rank``-th smallest value (1-based), and how many values lie in lower buckets."""
    cumulative = counts.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, torch.tensor(rank)))
    return bucket, int(cumulative[bucket - 1]) if bucket else 0


def kth_smallest_abs(weights: Sequence[Scores], k: int) -> Threshold:
    """The exact ``k``-th smallest |w| (1-based) over all ``weights`` together, by a two-pass radix select."""
    total = sum(weight.numel() for weight in weights)
    if not 1 <= k <= total:
        raise ValueError(f"k must lie in [1, {total}], got {k}")
    high, below_high = _locate(_histogram(weights, lambda bits: bits >> 16), k)
    low, below_low = _locate(_histogram(weights, lambda bits: bits[(bits >> 16) == high] & 0xFFFF), k - below_high)
    return Threshold(bits=(high << 16) | low, below=below_high + below_low)


def _keep_mask(bits: torch.Tensor, threshold: int, ties_to_prune: int) -> tuple[torch.Tensor, int]:
    """Keep what lies above the threshold and the ties beyond the first ``ties_to_prune``; also return how many
    ties remain to be pruned after this chunk."""
    if ties_to_prune == 0:
        return bits >= threshold, 0
    keep, ties = bits > threshold, bits == threshold
    count = int(torch.count_nonzero(ties))
    if count <= ties_to_prune:
        return keep, ties_to_prune - count
    keep[ties.nonzero().squeeze(1)[ties_to_prune:]] = True
    return keep, 0


def prune_smallest(weights: Sequence[Scores], k: int) -> Selection:
    """Masks that prune exactly the ``k`` smallest |w| over ``weights`` taken together (one tensor: per-layer
    pruning; many: one global threshold). Ties are pruned in tensor order, then flat index."""
    total = sum(weight.numel() for weight in weights)
    if not 0 <= k <= total:
        raise ValueError(f"cannot prune {k} of {total} weights")
    if k in (0, total):
        return Selection([torch.full(weight.shape, k == 0, dtype=torch.bool) for weight in weights], None)
    threshold = kth_smallest_abs(weights, k)
    ties_to_prune = k - threshold.below
    masks = []
    for weight in weights:
        mask = torch.empty(weight.shape, dtype=torch.bool)
        flat, start = mask.view(-1), 0
        for bits in abs_bits(weight):
            keep, ties_to_prune = _keep_mask(bits, threshold.bits, ties_to_prune)
            flat[start:start + bits.numel()] = keep.cpu()
            start += bits.numel()
        masks.append(mask)
    return Selection(masks, threshold)
