"""How sure a study's statistics are: seeded bootstrap confidence intervals over its candidates.

A study's points (one per mask, repeats averaged) are resampled with replacement; every statistic is
recomputed on each resample; the interval is the percentile interval of the resampled values. A finding is
*within noise* when its interval reaches the line it is judged by (docs/studies.md, "How sure the statistics
are").

Cost: each resample of n points takes O(n log n) time and O(n) memory (Kendall tau by merge sort, the
counterexamples from it, the anomaly ratio in one pass). An interval over n points uses ``resamples`` resamples
(1,000 by default) but no more than ``POINT_BUDGET`` / n of them, and never fewer than ``MIN_RESAMPLES``: 1,000
resamples up to 2,000 points, 400 at 5,000, 100 from 20,000 points on, so one interval costs
O(max(2·10⁶, 100·n) · log n); each result says how many resamples it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy import stats

from hfprune.report.stats import VALID_TAU, anomaly_ratio, expected_sign, rank_codes

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0
DIRECT_LIMIT = 400  # up to this many points, pairs are compared directly
POINT_BUDGET = 2_000_000  # resamples × points of one interval, unless that leaves fewer than MIN_RESAMPLES
MIN_RESAMPLES = 100
CHANCE_RATIO = 0.5  # an anomaly or counterexample ratio a criterion unrelated to the outcome gives


@dataclass(frozen=True)
class Bootstrap:
    """Resamples, confidence level and seed of every interval in one report."""

    resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = DEFAULT_SEED

    def resamples_for(self, n: int) -> int:
        """How many resamples an interval over ``n`` points uses: ``resamples``, cut to ``POINT_BUDGET`` / n (at
        least ``MIN_RESAMPLES``) so that an interval costs at most max(POINT_BUDGET, MIN_RESAMPLES · n) points."""
        return min(self.resamples, max(MIN_RESAMPLES, POINT_BUDGET // max(n, 1)))

    def indices(self, n: int) -> Iterator[np.ndarray]:
        """``resamples_for(n)`` index sets of ``n`` draws with replacement, one at a time (O(n) memory), the same
        for every statistic of one pair."""
        rng = np.random.default_rng(self.seed)
        for _ in range(self.resamples_for(n)):
            yield rng.integers(0, n, size=n)

    def interval(self, values: np.ndarray) -> list[float] | None:
        """The percentile interval of the finite resampled ``values`` (None when there are none)."""
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return None
        tail = (1 - self.level) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return [float(low), float(high)]


def _tie_pairs(codes: np.ndarray) -> int:
    """Pairs sharing a value, for integer codes 0..k-1."""
    counts = np.bincount(codes)
    return int((counts * (counts - 1) // 2).sum())


def _tau_b(cx: np.ndarray, cy: np.ndarray, untied_x: int, untied_y: int) -> float:
    """Kendall tau-b of integer codes: a sign matrix for small inputs (far quicker than scipy's per-call overhead),
    scipy's O(n log n) merge sort beyond ``DIRECT_LIMIT`` points."""
    if len(cx) > DIRECT_LIMIT:
        return float(stats.kendalltau(cx, cy).statistic)
    signs = np.sign(cx[:, None] - cx[None, :]) * np.sign(cy[:, None] - cy[None, :])
    return float(signs.sum()) / 2 / math.sqrt(untied_x * untied_y)


def _tau_and_discordant(cx: np.ndarray, cy: np.ndarray, cxy: np.ndarray) -> tuple[float, int]:
    """Kendall tau-b and the discordant pairs of integer-coded columns (``cxy`` codes the (x, y) pairs), in
    O(n log n) time and O(n) memory.

    From tau-b = (C − D) / sqrt((n0 − n1)(n0 − n2)) and C + D = n0 − n1 − n2 + n3 (n0 all pairs, n1 / n2 pairs
    tied in x / y, n3 in both).
    """
    n = len(cx)
    n0 = n * (n - 1) // 2
    n1, n2, n3 = _tie_pairs(cx), _tie_pairs(cy), _tie_pairs(cxy)
    if n1 == n0 or n2 == n0:  # a constant column: every pair is tied
        return math.nan, 0
    tau = _tau_b(cx, cy, n0 - n1, n0 - n2)
    untied = n0 - n1 - n2 + n3
    return tau, int(round((untied - tau * math.sqrt((n0 - n1) * (n0 - n2))) / 2))


def pair_intervals(x: np.ndarray, y: np.ndarray, x_higher_is_better: bool, y_higher_is_better: bool,
                   bootstrap: Bootstrap = Bootstrap()) -> dict:
    """Intervals of Kendall tau, the anomaly ratio and the counterexample ratio of one (x, y) pair, and
    whether each finding is within noise (all None for fewer than 3 points), and the resamples they rest on
    (:meth:`Bootstrap.resamples_for`)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3:
        return {"tau_ci": None, "anomaly_ci": None, "counterexample_ci": None, "within_noise": None,
                "resamples": 0}
    # rank codes oriented so that larger is better; resampling a code column resamples the values
    cx, cy = rank_codes(x if x_higher_is_better else -x), rank_codes(y if y_higher_is_better else -y)
    cxy = rank_codes(cx * (int(cy.max()) + 1) + cy)  # one code per distinct (x, y): ties in both
    resamples = bootstrap.resamples_for(n)
    taus, anomalies, counter = (np.empty(resamples) for _ in range(3))
    for b, index in enumerate(bootstrap.indices(n)):
        rx, ry = cx[index], cy[index]
        taus[b], discordant = _tau_and_discordant(rx, ry, cxy[index])
        anomalies[b] = anomaly_ratio(rx, ry, True, True)[0]
        counter[b] = discordant / (n * (n - 1) / 2)
    # taus were computed on oriented values: turn them back into tau(x, y)
    taus *= 1 if x_higher_is_better == y_higher_is_better else -1
    result = {"tau_ci": bootstrap.interval(taus), "anomaly_ci": bootstrap.interval(anomalies),
              "counterexample_ci": bootstrap.interval(counter), "resamples": resamples}
    result["within_noise"] = within_noise(result, expected_sign(x_higher_is_better, y_higher_is_better))
    return result


def _reaches(interval: list[float] | None, line: float) -> bool | None:
    return None if interval is None else bool(interval[0] <= line <= interval[1])


def within_noise(intervals: dict, sign: int) -> dict:
    """Which findings the data cannot settle: validity when sign·tau's interval reaches 0.2; 'better than
    chance' when the anomaly or counterexample interval reaches 50%."""
    tau = intervals["tau_ci"]
    signed = None if tau is None else sorted(sign * t for t in tau)
    return {"validity": _reaches(signed, VALID_TAU),
            "anomaly_ratio": _reaches(intervals["anomaly_ci"], CHANCE_RATIO),
            "counterexample_ratio": _reaches(intervals["counterexample_ci"], CHANCE_RATIO)}


def statistic_interval(statistic: Callable[[np.ndarray], float], n: int,
                       bootstrap: Bootstrap = Bootstrap()) -> list[float] | None:
    """The interval of ``statistic(indices)`` over :meth:`Bootstrap.indices` of ``n`` candidates."""
    if n < 2:
        return None
    return bootstrap.interval(np.array([statistic(index) for index in bootstrap.indices(n)], dtype=float))


def repeat_spread(values_by_mask: dict[str, list[float]]) -> dict | None:
    """How much repeats of one mask differ: the mean over masks of the standard deviation (ddof 1) of their
    repeats, beside the standard deviation of the per-mask means; None without repeats."""
    repeated = [np.asarray(v, dtype=float) for v in values_by_mask.values() if len(v) >= 2]
    if not repeated:
        return None
    means = np.array([np.mean(v) for v in values_by_mask.values()], dtype=float)
    return {"masks_with_repeats": len(repeated),
            "mean_repeat_std": float(np.mean([np.std(v, ddof=1) for v in repeated])),
            "between_mask_std": float(np.std(means, ddof=1)) if len(means) >= 2 else math.nan}
