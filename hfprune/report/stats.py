"""Correlation statistics of an oracle-pruning study (docs/studies.md §1), on plain numpy arrays.

Every function takes finite 1-D arrays of equal length; callers drop missing values first.
"Better" follows each column's direction: for a higher-is-better column larger is better,
for a lower-is-better one (a loss) smaller is better.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from scipy import stats

from hfprune.errors import HfpruneError

VALID_TAU = 0.2
VALID_P = 0.05

HIGHER_IS_BETTER_WORDS = frozenset({"acc", "accuracy", "top1", "top5", "f1", "score", "precision", "recall"})
LOWER_IS_BETTER_WORDS = frozenset({"loss", "error", "err", "ppl", "perplexity"})
# Criteria measured on the *pruned* parameters: removing more important weights is worse.
KNOWN_DIRECTIONS = {"pruned_l1": False, "pruned_taylor_fo": False}


def infer_higher_is_better(column: str, flag: str = "--higher-is-better / --lower-is-better") -> bool:
    """Direction of ``column`` from its name (``final_test_acc`` → True, ``pruned_train_loss`` → False)."""
    if column in KNOWN_DIRECTIONS:
        return KNOWN_DIRECTIONS[column]
    words = set(re.split(r"[^a-z0-9]+", column.lower()))
    higher, lower = bool(words & HIGHER_IS_BETTER_WORDS), bool(words & LOWER_IS_BETTER_WORDS)
    if higher != lower:
        return higher
    reason = "both an accuracy-like and a loss-like word" if higher else "no accuracy- or loss-like word"
    raise HfpruneError(f"cannot tell whether higher '{column}' is better (its name has {reason}); "
                       f"say so with {flag}")


def _goodness(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Values oriented so that larger is always better (negation is exact for floats)."""
    values = np.asarray(values, dtype=float)
    return values if higher_is_better else -values


def kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall tau-b and its two-sided p-value; NaN for fewer than 2 points or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def anomaly_ratio(x: np.ndarray, y: np.ndarray, x_higher_is_better: bool,
                  y_higher_is_better: bool) -> tuple[float, int | None, np.ndarray]:
    """Share of trials whose y is strictly better than the oracle's; returns (ratio, oracle index, anomaly mask).

    The oracle is the trial with the best x. When several trials tie for the best x, the oracle is the
    tied trial with the best y, so the ratio does not depend on the order of the trials. Ties with the
    oracle's y are not anomalies. An empty input gives (NaN, None, empty mask).
    """
    gx, gy = _goodness(x, x_higher_is_better), _goodness(y, y_higher_is_better)
    if len(gx) == 0:
        return math.nan, None, np.zeros(0, dtype=bool)
    tied = np.flatnonzero(gx == gx.max())
    oracle = int(tied[np.argmax(gy[tied])])
    anomalies = gy > gy[oracle]
    return float(anomalies.sum()) / len(gx), oracle, anomalies


def count_counterexamples(x: np.ndarray, y: np.ndarray, x_higher_is_better: bool, y_higher_is_better: bool,
                          chunk_elements: int = 4_000_000) -> int:
    """Unordered pairs where one trial has the strictly better x but the strictly worse y.

    Ties in x or in y are never counterexamples. Works in row chunks of about ``chunk_elements``
    comparisons, so 20,000 trials never allocate an n×n matrix.
    """
    gx, gy = _goodness(x, x_higher_is_better), _goodness(y, y_higher_is_better)
    rows = max(1, chunk_elements // max(len(gx), 1))
    count = 0
    for start in range(0, len(gx), rows):
        # Ordered pairs (i, j) where i has the strictly better x and the strictly worse y:
        # each unordered counterexample appears in exactly one order.
        better_x = gx[start:start + rows, None] > gx[None, :]
        worse_y = gy[start:start + rows, None] < gy[None, :]
        count += int(np.count_nonzero(better_x & worse_y))
    return count


def counterexample_ratio(x: np.ndarray, y: np.ndarray, x_higher_is_better: bool, y_higher_is_better: bool) -> float:
    """Counterexamples over all n(n-1)/2 unordered pairs; NaN for fewer than 2 trials."""
    return _pair_share(count_counterexamples(x, y, x_higher_is_better, y_higher_is_better), len(x))


def _pair_share(count: int, n: int) -> float:
    return count / (n * (n - 1) / 2) if n >= 2 else math.nan


def expected_sign(x_higher_is_better: bool, y_higher_is_better: bool) -> int:
    """+1 when x and y share a direction (loss vs. loss, acc vs. acc), else -1 (loss vs. acc)."""
    return 1 if x_higher_is_better == y_higher_is_better else -1


def validity(tau: float, p: float, x_higher_is_better: bool, y_higher_is_better: bool) -> bool:
    """Def. 3.1 generalised: valid iff sign·tau > 0.2 and p < 0.05 (NaN is never valid)."""
    sign = expected_sign(x_higher_is_better, y_higher_is_better)
    return bool(sign * tau > VALID_TAU and p < VALID_P)


def correlate(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, x_higher_is_better: bool,
              y_higher_is_better: bool, ids: Sequence[str] | None = None) -> dict:
    """All statistics of one (criterion x, outcome y) pair; ``higher_is_better`` is y's direction."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tau, p = kendall(x, y)
    ratio, oracle, anomalies = anomaly_ratio(x, y, x_higher_is_better, y_higher_is_better)
    n_counter = count_counterexamples(x, y, x_higher_is_better, y_higher_is_better)
    return {
        "x": x_name,
        "y": y_name,
        "n": len(x),
        "kendall_tau": tau,
        "p_value": p,
        "valid": validity(tau, p, x_higher_is_better, y_higher_is_better),
        "expected_sign": expected_sign(x_higher_is_better, y_higher_is_better),
        "anomaly_ratio": ratio,
        "n_anomalies": int(anomalies.sum()),
        "counterexample_ratio": _pair_share(n_counter, len(x)),
        "n_counterexamples": n_counter,
        "higher_is_better": y_higher_is_better,
        "x_higher_is_better": x_higher_is_better,
        "oracle_index": oracle,
        "oracle_id": None if oracle is None or ids is None else str(ids[oracle]),
        "oracle_x": None if oracle is None else float(x[oracle]),
        "oracle_y": None if oracle is None else float(y[oracle]),
    }
