"""The Cubist Spiral (STUDY §5b): a generated 2-D two-class point set, bundled (nothing to download).

17 vertices at θ = linspace(π, 5π, 17) + 0.4π on the radius r = 10θ + π, v = r·(cos θ, sin θ); class 0 takes the
vertices v + 15·(cos θ, sin θ), class 1 the vertices v − 15·(cos θ, sin θ). Consecutive vertices are joined by
straight segments, and each class's points are spread over its 16 segments in proportion to segment length.

Our reading of the paper's public generator, followed here:

- segment ``i`` (from vertex ``i`` to vertex ``i+1``) gets ``int(share_i * points / 2)`` points (truncation, in
  float64), both endpoints included, so a shared vertex appears twice and a class has slightly fewer than
  ``points / 2`` points (24,991 each for 50,000);
- along a segment the points are ``t·v_i + (1 − t)·v_{i+1}`` for ``t = linspace(0, 1, n)`` (float32 ``t``): they
  run from vertex ``i+1`` back to vertex ``i``; segments follow in order, class 0's points before class 1's;
- the generator shifts both classes by their joint minimum before standardising (no effect after it, skipped
  here); coordinates are standardised over all points of both classes with the unbiased standard deviation
  (``torch.std``'s default), in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hfprune.data.transforms import stratified_subset
from hfprune.errors import HfpruneError

VERTICES = 17
OFFSET = 15.0
DEFAULT_POINTS = 50_000
MIN_POINTS = 200


def spiral_angles() -> np.ndarray:
    """θ of the 17 vertices: linspace(π, 5π, 17) + 0.4π."""
    return np.linspace(math.pi, 5 * math.pi, VERTICES) + 0.4 * math.pi


def spiral_vertices() -> tuple[np.ndarray, np.ndarray]:
    """The 17 vertices of class 0 and of class 1 (float64 ``[17, 2]`` each, not standardised)."""
    theta = spiral_angles()
    direction = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    centre = (10 * theta + math.pi)[:, None] * direction
    return centre + OFFSET * direction, centre - OFFSET * direction


def points_per_segment(vertices: np.ndarray, points: int) -> np.ndarray:
    """How many points each segment of one class gets: ``int(length share * points / 2)``."""
    lengths = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    return (lengths / lengths.sum() * points / 2).astype(np.int64)


def _sample_polyline(vertices: np.ndarray, points: int) -> torch.Tensor:
    """One class's points (float64 ``[n, 2]``), segment after segment, each from its end vertex to its start."""
    start, end = torch.from_numpy(vertices[:-1]), torch.from_numpy(vertices[1:])
    pieces = []
    for i, count in enumerate(points_per_segment(vertices, points)):
        t = torch.linspace(0, 1, int(count)).unsqueeze(1)  # float32, promoted to float64 below
        pieces.append(t * start[i] + (1 - t) * end[i])
    return torch.cat(pieces)


def cubist_spiral(points: int = DEFAULT_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """The Cubist Spiral: standardised float32 coordinates ``[N, 2]`` and float32 labels ``[N]`` in {0, 1}.

    Deterministic (no noise). ``N`` is a little under ``points`` (see the module docstring for the rounding).
    """
    if not isinstance(points, int) or isinstance(points, bool) or points < MIN_POINTS:
        raise HfpruneError(f"cubist_spiral: points must be a whole number of at least {MIN_POINTS} (so every "
                           f"segment gets two points or more), got {points!r}")
    class0, class1 = (_sample_polyline(v, points) for v in spiral_vertices())
    x = torch.cat([class0, class1]).float()
    x = (x - x.mean(dim=0, keepdim=True)) / x.std(dim=0, keepdim=True)
    y = torch.cat([torch.zeros(len(class0)), torch.ones(len(class1))])
    return x, y


class PointSet(torch.utils.data.Dataset):
    """Points ``[N, d]`` (float32) and binary labels ``[N]`` (float32) held in memory.

    Indexing with a list or tensor of indices returns a whole batch ``{"inputs", "labels"}`` at once, so the
    project's ``make_loader`` feeds it without per-sample collation.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        if x.ndim != 2:
            raise ValueError(f"points must be [N, d], got shape {tuple(x.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} points but {len(y)} labels")
        self.x = x.float().contiguous()
        self.y = y.float().reshape(-1).contiguous()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return {"inputs": self.x[index], "labels": self.y[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self[indices]


@dataclass
class SpiralData:
    """The spiral's train and test sets. As in the paper's code, the test set is the train set itself (accuracy
    is measured on the points trained on): ``test`` holds the very same points."""

    train: PointSet
    test: PointSet
    name: str = "cubist_spiral"

    @property
    def input_size(self) -> int:
        return self.train.x.shape[1]

    @property
    def training_set(self) -> torch.utils.data.Dataset:
        return self.train


def load_spiral(points: int = DEFAULT_POINTS, train_limit: int | None = None, seed: int = 0) -> SpiralData:
    """The Cubist Spiral as train = test sets; ``train_limit`` keeps a fixed class-stratified subset of that many
    points drawn with ``seed`` (for quick recipes), used for both."""
    if train_limit is not None and (not isinstance(train_limit, int) or train_limit <= 0):
        raise HfpruneError(f"dataset 'cubist_spiral': data.train_limit must be a positive number, got {train_limit!r}")
    x, y = cubist_spiral(points)
    keep = torch.from_numpy(stratified_subset(y.numpy(), train_limit, seed))
    points_set = PointSet(x[keep], y[keep])
    return SpiralData(train=points_set, test=points_set)


def load_bundled_spiral(image_size=None, train_limit: int | None = None, test_limit: int | None = None,
                        limit_seed: int = 0, points: int = DEFAULT_POINTS) -> SpiralData:
    """The registry's bundled-loader protocol (keywords as the image datasets'): ``image_size`` is unused and
    ``test_limit`` too, since the test set is the train set (``train_limit`` bounds both)."""
    return load_spiral(points, train_limit=train_limit, seed=limit_seed)
