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


def rank_codes(values: np.ndarray) -> np.ndarray:
    """Dense ranks 0..k-1 of ``values``: equal values (0.0 and -0.0 too) share a code, larger values get larger ones."""
    return np.unique(np.asarray(values, dtype=float), return_inverse=True)[1].ravel().astype(np.int64)


def _inversions_at_bit(high: np.ndarray, bit: np.ndarray) -> int:
    """Pairs i < j inside one run of equal ``high`` (runs are contiguous) where ``bit`` is 1 at i and 0 at j."""
    n = len(high)
    run_starts = np.empty(n, dtype=bool)
    run_starts[0] = True
    np.not_equal(high[1:], high[:-1], out=run_starts[1:])
    first = np.maximum.accumulate(np.where(run_starts, np.arange(n), 0))  # where each element's run starts
    ones_before = np.cumsum(bit) - bit  # set bits before each element in the whole array ...
    ones_before -= ones_before[first]  # ... and in its own run
    return int(np.dot(1 - bit, ones_before))


def count_inversions(codes: np.ndarray) -> int:
    """Pairs i < j with ``codes[i] > codes[j]`` (strictly), for integer codes 0..k-1, in O(n log n) time and O(n)
    memory.

    Radix counting from the highest bit down, a merge sort on the bits: a pair is out of order exactly at the
    highest bit where its codes differ, so at each bit, among codes that agree on every higher bit (kept in their
    original order), each 1 that comes before a 0 is one inversion. Equal codes are never counted.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) < 2:
        return 0
    top = int(codes.max()).bit_length()
    total = 0
    for bit in range(top - 1, -1, -1):
        high = codes >> (bit + 1)
        # a stable sort groups equal high bits in their original order (a linear radix sort for 16-bit keys)
        order = np.argsort(high.astype(np.uint16) if top - bit - 1 <= 16 else high, kind="stable")
        total += _inversions_at_bit(high[order], (codes[order] >> bit) & 1)
    return total


def discordant_pairs(gx: np.ndarray, gy: np.ndarray) -> int:
    """Unordered pairs where one point has the strictly larger ``gx`` and the strictly smaller ``gy``, in
    O(n log n) time and O(n) memory.

    Sorted by ``gx`` with ties broken by ascending ``gy``, a pair is discordant exactly when its ``gy`` values are
    strictly out of order (a pair tied in ``gx`` is in order, one tied in ``gy`` is not strictly out of order).
    """
    gx, gy = np.asarray(gx, dtype=float), np.asarray(gy, dtype=float)
    return count_inversions(rank_codes(gy)[np.lexsort((gy, gx))])


def count_counterexamples(x: np.ndarray, y: np.ndarray, x_higher_is_better: bool, y_higher_is_better: bool) -> int:
    """Unordered pairs where one trial has the strictly better x but the strictly worse y.

    Ties in x or in y are never counterexamples. O(n log n) time and O(n) memory (:func:`discordant_pairs` of
    the values oriented so that larger is better).
    """
    return discordant_pairs(_goodness(x, x_higher_is_better), _goodness(y, y_higher_is_better))


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
