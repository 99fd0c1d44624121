"""The Cubist Spiral, checked against its definition (STUDY §5b) and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from hfprune.data.spiral import PointSet, cubist_spiral, load_spiral, spiral_vertices
from hfprune.errors import HfpruneError


def test_vertices_follow_the_formula_at_hand_computed_angles():
    class0, class1 = spiral_vertices()
    assert class0.shape == class1.shape == (17, 2)
    # vertex 0: θ = π + 0.4π = 1.4π; r = 14π + π = 15π; cos 1.4π = −cos 0.4π, sin 1.4π = −sin 0.4π
    theta, r = 1.4 * math.pi, 15 * math.pi
    c, s = -math.cos(0.4 * math.pi), -math.sin(0.4 * math.pi)
    np.testing.assert_allclose(class0[0], [(r + 15) * c, (r + 15) * s], atol=1e-9)
    np.testing.assert_allclose(class1[0], [(r - 15) * c, (r - 15) * s], atol=1e-9)
    # vertex 16: θ = 5π + 0.4π = 5.4π (same direction as 1.4π); r = 54π + π = 55π
    np.testing.assert_allclose(class0[16], [(55 * math.pi + 15) * c, (55 * math.pi + 15) * s], atol=1e-9)
    # vertex 8: θ = 3π + 0.4π = 3.4π, also the direction of 1.4π; r = 35π
    np.testing.assert_allclose(class1[8], [(35 * math.pi - 15) * c, (35 * math.pi - 15) * s], atol=1e-9)
    # vertex 1: θ = 1.4π + π/4 = 1.65π; r = 16.5π + π = 17.5π
    theta = 1.65 * math.pi
    np.testing.assert_allclose(class0[1], (17.5 * math.pi + 15) * np.array([math.cos(theta), math.sin(theta)]),
                               atol=1e-9)


def test_class_offsets_are_plus_and_minus_15_along_the_radius():
    class0, class1 = spiral_vertices()
    theta = np.linspace(math.pi, 5 * math.pi, 17) + 0.4 * math.pi
    direction = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    centre = (class0 + class1) / 2
    np.testing.assert_allclose(class0 - centre, 15 * direction, atol=1e-9)
    np.testing.assert_allclose(class1 - centre, -15 * direction, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(centre, axis=1), 10 * theta + math.pi, atol=1e-9)


def _expected_counts(vertices, points):
    """int(share * points / 2) per segment, share = segment length / polyline length."""
    lengths = [math.dist(a, b) for a, b in zip(vertices[:-1], vertices[1:])]
    return [int(length / sum(lengths) * points / 2) for length in lengths]


@pytest.mark.parametrize("points", [50_000, 1_000])
def test_point_count_and_balance_follow_the_rounding_rule(points):
    x, y = cubist_spiral(points)
    class0, class1 = spiral_vertices()
    n0, n1 = sum(_expected_counts(class0, points)), sum(_expected_counts(class1, points))
    assert x.shape == (n0 + n1, 2) and y.shape == (n0 + n1,)
    assert x.dtype == y.dtype == torch.float32
    assert int((y == 0).sum()) == n0 and int((y == 1).sum()) == n1
    assert set(y.unique().tolist()) == {0.0, 1.0}
    # truncation loses less than one point per segment and class
    assert points / 2 - 16 < n0 <= points / 2 and points / 2 - 16 < n1 <= points / 2
    if points == 50_000:
        # the lengths of both polylines are nearly equal: hand check of the reference's 24,991 points per class
        assert n0 == n1 == 24_991


def _distance_to_polyline(points, vertices):
    """Smallest distance of each point to the segments of ``vertices``."""
    a, b = torch.from_numpy(vertices[:-1]), torch.from_numpy(vertices[1:])
    ab = b - a
    t = (((points[:, None, :] - a) * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0, 1)
    nearest = a + t[..., None] * ab
    return (points[:, None, :] - nearest).norm(dim=-1).min(dim=1).values


def _raw_points(points):
    """The unstandardised points by the definition, in float64: per class, per segment i, n_i points
    t·v_i + (1 − t)·v_{i+1}, t = 0 … 1 (so from vertex i+1 back to vertex i); class 0 first."""
    raw = []
    for vertices in spiral_vertices():
        for i, n in enumerate(_expected_counts(vertices, points)):
            t = np.linspace(0, 1, n)[:, None]
            raw.append(t * vertices[i] + (1 - t) * vertices[i + 1])
    return torch.from_numpy(np.concatenate(raw))


def test_points_lie_on_their_class_segments_and_are_standardised():
    x, y = cubist_spiral(4_000)
    x64 = x.double()
    assert x64.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(x64.std(0), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    raw = _raw_points(4_000)
    back = x64 * raw.std(0) + raw.mean(0)  # undo the standardisation (mean, unbiased std of the raw points)
    class0, class1 = spiral_vertices()
    assert _distance_to_polyline(back[y == 0], class0).max() < 1e-3  # raw scale: radii ~50..190
    assert _distance_to_polyline(back[y == 1], class1).max() < 1e-3
    assert _distance_to_polyline(back[y == 0], class1).min() > 5  # the classes are 30 apart


def test_points_run_from_each_segment_end_back_to_its_start():
    x, y = cubist_spiral(4_000)
    raw = _raw_points(4_000)
    back = x.double() * raw.std(0) + raw.mean(0)
    torch.testing.assert_close(back, raw, atol=1e-3, rtol=0)  # same points in the same order
    class0, class1 = spiral_vertices()
    n_first = _expected_counts(class0, 4_000)[0]
    np.testing.assert_allclose(back[0].numpy(), class0[1], atol=1e-3)  # t = 0: the segment's end vertex
    np.testing.assert_allclose(back[n_first - 1].numpy(), class0[0], atol=1e-3)  # t = 1: its start
    np.testing.assert_allclose(back[int((y == 0).sum())].numpy(), class1[1], atol=1e-3)  # class 1 follows


def test_deterministic_and_bad_counts_refused():
    a, b = cubist_spiral(2_000), cubist_spiral(2_000)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(HfpruneError, match="points"):
        cubist_spiral(10)


def test_point_set_returns_whole_batches_and_load_spiral_tests_on_the_train_points():
    data = load_spiral(2_000)
    assert data.test is data.train
    batch = data.train[[0, 5, 7]]
    assert batch["inputs"].shape == (3, 2) and batch["labels"].shape == (3,)
    assert torch.equal(data.train.__getitems__([0, 5, 7])["inputs"], batch["inputs"])
    small = load_spiral(2_000, train_limit=100, seed=3)
    assert len(small.train) == len(small.test) == 100
    assert int(small.train.y.sum()) == 50  # stratified: the classes are equal in size
    again = load_spiral(2_000, train_limit=100, seed=3)
    assert torch.equal(small.train.x, again.train.x)
    assert not torch.equal(small.train.x, load_spiral(2_000, train_limit=100, seed=4).train.x)
    with pytest.raises(HfpruneError, match="train_limit"):
        load_spiral(2_000, train_limit=0)


def test_registered_as_a_binary_classification_dataset():
    from hfprune.data.registry import DATASETS, TASK_DATA

    spec = DATASETS["cubist_spiral"]
    assert spec.task == "binary_classification" and "binary_classification" in TASK_DATA
    data = spec.bundled(train_limit=64, limit_seed=0)
    assert len(data.train) == 64 and isinstance(data.train, PointSet)


def test_plot_writes_a_png(tmp_path):
    from hfprune.report.spiral_plot import plot_spiral

    x, y = cubist_spiral(1_000)
    plot_spiral(x, y, tmp_path / "spiral.png")
    assert (tmp_path / "spiral.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
