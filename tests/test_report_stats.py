"""Correlation statistics: hand-computed anomaly and counterexample ratios, Kendall tau, validity."""

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from hfprune.errors import HfpruneError
from hfprune.report.stats import (anomaly_ratio, correlate, count_counterexamples, count_inversions,
                                  counterexample_ratio, discordant_pairs, infer_higher_is_better, kendall, validity)


def _better(a, b, higher_is_better):
    """a is strictly better than b (STUDY.md: higher accuracy, or lower loss)."""
    return a > b if higher_is_better else a < b


def _brute_counterexamples(x, y, x_higher, y_higher):
    """STUDY.md §1: unordered pairs where one trial has the better pruned criterion but the strictly worse result."""
    return sum(1 for i, j in itertools.combinations(range(len(x)), 2)
               if (_better(x[i], x[j], x_higher) and _better(y[j], y[i], y_higher))
               or (_better(x[j], x[i], x_higher) and _better(y[i], y[j], y_higher)))


def _brute_anomalies(x, y, x_higher, y_higher):
    """STUDY.md §1 with docs/studies.md's tie rule: the oracle is the best x (among ties, the best y); anomalies
    are the trials whose y is strictly better than the oracle's."""
    candidates = [i for i in range(len(x)) if not any(_better(x[j], x[i], x_higher) for j in range(len(x)))]
    oracle = next(i for i in candidates if not any(_better(y[j], y[i], y_higher) for j in candidates))
    return sum(1 for i in range(len(x)) if _better(y[i], y[oracle], y_higher)), y[oracle]


def _tied_table(rng, n):
    """A seeded table with many ties (a handful of distinct values) and some negative zeros."""
    x = rng.integers(-3, 4, n).astype(float) / 2
    y = rng.integers(-2, 3, n).astype(float) / 4
    x[x == 0] *= rng.choice([-1.0, 1.0], size=int((x == 0).sum()))
    return x, y


def test_anomaly_ratio_by_hand_with_a_tie_in_y():
    loss = [0.1, 0.2, 0.3, 0.4, 0.5]
    acc = [0.80, 0.85, 0.80, 0.70, 0.90]  # index 2 ties the oracle's 0.80: no anomaly
    ratio, oracle, anomalies = anomaly_ratio(loss, acc, x_higher_is_better=False, y_higher_is_better=True)
    assert oracle == 0
    assert anomalies.tolist() == [False, True, False, False, True]
    assert ratio == pytest.approx(2 / 5)


def test_anomaly_oracle_among_tied_best_x_is_the_best_y_and_order_does_not_matter():
    loss = np.array([0.1, 0.1, 0.3, 0.4])
    acc = np.array([0.5, 0.7, 0.9, 0.6])
    ratio, oracle, anomalies = anomaly_ratio(loss, acc, False, True)
    assert oracle == 1 and ratio == pytest.approx(1 / 4) and anomalies.tolist() == [False, False, True, False]
    for order in itertools.permutations(range(4)):
        order = list(order)
        permuted_ratio, permuted_oracle, _ = anomaly_ratio(loss[order], acc[order], False, True)
        assert permuted_ratio == ratio and order[permuted_oracle] == 1


def test_anomaly_ratio_for_a_loss_outcome_and_a_higher_is_better_criterion():
    loss = [1.0, 2.0, 3.0]
    test_loss = [0.5, 0.4, 0.5]  # only index 1 is strictly lower than the oracle's 0.5
    assert anomaly_ratio(loss, test_loss, False, False)[:2] == (pytest.approx(1 / 3), 0)
    score = [0.2, 0.9, 0.5]  # higher is better: the oracle is index 1
    acc = [0.95, 0.90, 0.90]
    ratio, oracle, _ = anomaly_ratio(score, acc, True, True)
    assert oracle == 1 and ratio == pytest.approx(1 / 3)


def test_anomaly_ratio_of_nothing_is_nan():
    ratio, oracle, anomalies = anomaly_ratio([], [], False, True)
    assert math.isnan(ratio) and oracle is None and len(anomalies) == 0


def test_counterexample_ratio_by_hand_with_ties():
    loss = [1, 2, 3, 4]
    acc = [0.9, 0.8, 0.85, 0.85]
    # (1,2) and (1,3): lower loss but strictly lower acc. (2,3) ties in acc; the rest agree.
    assert count_counterexamples(loss, acc, False, True) == 2
    assert counterexample_ratio(loss, acc, False, True) == pytest.approx(2 / 6)
    # Ties in x: (0,1) tie, (0,2) is a counterexample, (1,2) agrees.
    assert counterexample_ratio([1, 1, 2], [0.5, 0.9, 0.7], False, True) == pytest.approx(1 / 3)
    # Same direction (loss vs. loss): a counterexample is lower pruned loss but higher test loss.
    assert count_counterexamples([1, 2, 3], [0.3, 0.2, 0.1], False, False) == 3
    assert count_counterexamples([1, 1, 1], [0.3, 0.2, 0.1], False, False) == 0


def test_counterexample_ratio_needs_two_trials():
    assert math.isnan(counterexample_ratio([1.0], [0.5], False, True))
    assert math.isnan(counterexample_ratio([], [], False, True))


def test_counterexamples_by_hand_all_reversed_and_all_agreeing():
    loss = [0.5, 0.4, 0.3, 0.2, 0.1]
    assert count_counterexamples(loss, [0.5, 0.6, 0.7, 0.8, 0.9], False, True) == 0  # lower loss, higher acc
    assert count_counterexamples(loss, [0.9, 0.8, 0.7, 0.6, 0.5], False, True) == 10  # every pair
    assert count_counterexamples(loss, [0.9, 0.8, 0.7, 0.6, 0.5], True, True) == 0  # x now higher-is-better
    assert count_counterexamples(loss, [0.7] * 5, False, True) == 0  # all tied in y
    assert count_counterexamples([0.3, 0.1, 0.2], [2.0, 3.0, 1.0], False, False) == 2  # (0.1, 3) vs both others


@pytest.mark.parametrize("x_higher, y_higher", [(False, True), (False, False), (True, True), (True, False)])
def test_fast_counts_match_the_brute_force_definitions_with_many_ties(x_higher, y_higher):
    rng = np.random.default_rng(0 if x_higher else 1)
    for n in [0, 1, 2, 3, 5, 17, 60, 250]:
        for _ in range(3):
            x, y = _tied_table(rng, n)
            expected = _brute_counterexamples(x, y, x_higher, y_higher)
            assert count_counterexamples(x, y, x_higher, y_higher) == expected
            if n == 0:
                continue
            result = correlate(x, y, "x", "y", x_higher, y_higher)
            n_anomalies, oracle_y = _brute_anomalies(x, y, x_higher, y_higher)
            assert (result["n_counterexamples"], result["n_anomalies"]) == (expected, n_anomalies)
            assert result["oracle_y"] == oracle_y


def test_count_inversions_matches_brute_force_for_any_codes():
    rng = np.random.default_rng(3)
    for n in [0, 1, 2, 9, 100, 400]:
        for k in [1, 2, 3, 8, 1000, 70_000]:  # one code ... codes wider than 16 bits
            codes = rng.integers(0, k, n)
            expected = sum(int(codes[i] > codes[j]) for i, j in itertools.combinations(range(n), 2))
            assert count_inversions(codes) == expected
    assert count_inversions(np.arange(5)[::-1]) == 10 and count_inversions([2, 2, 2]) == 0


def test_discordant_pairs_of_many_points_match_kendall_and_stay_linear_in_memory():
    """200,000 points: counted without an n × n matrix (the old code wanted tens of GiB), and C − D agrees with
    scipy's tau-b, which counts the same pairs."""
    import tracemalloc

    rng = np.random.default_rng(4)
    n = 200_000
    x, y = rng.integers(0, 50_000, n).astype(float), rng.random(n).round(3)  # ties in both
    tracemalloc.start()
    discordant = discordant_pairs(x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20
    pairs = n * (n - 1) // 2
    tie_pairs = lambda v: int(sum(c * (c - 1) // 2 for c in np.unique(v, return_counts=True)[1]))  # noqa: E731
    joint = tie_pairs(x * 10_000 + y * 1000)  # x integer, y three decimals: one value per (x, y)
    untied = pairs - tie_pairs(x) - tie_pairs(y) + joint
    tau = stats.kendalltau(x, y).statistic
    concordant_minus_discordant = tau * math.sqrt((pairs - tie_pairs(x)) * (pairs - tie_pairs(y)))
    assert untied - 2 * discordant == pytest.approx(concordant_minus_discordant, abs=0.5)


def test_counterexamples_of_twenty_thousand_trials_match_kendall_concordance():
    rng = np.random.default_rng(1)
    x, y = rng.random(20_000), rng.random(20_000)  # continuous: no ties
    pairs = 20_000 * 19_999 // 2
    tau = stats.kendalltau(x, y).statistic
    # Lower loss with lower accuracy is a concordant pair of the raw values.
    assert count_counterexamples(x, y, False, True) == round(pairs * (1 + tau) / 2)


def test_kendall_agrees_with_scipy_including_ties():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 6, 40), rng.random(40)
    expected = stats.kendalltau(x, y)
    assert kendall(x, y) == pytest.approx((expected.statistic, expected.pvalue))


def test_kendall_is_nan_without_warnings_for_degenerate_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in [([], []), ([1.0], [2.0]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [5, 5, 5])]:
            tau, p = kendall(np.array(x, dtype=float), np.array(y, dtype=float))
            assert math.isnan(tau) and math.isnan(p)


@pytest.mark.parametrize("x_higher, y_higher, tau, expected", [
    (False, True, -0.5, True),    # pruned train loss vs. final test accuracy: needs tau < -0.2
    (False, True, 0.5, False),
    (False, True, -0.2, False),   # the bound itself is not enough
    (False, False, 0.5, True),    # pruned train loss vs. final test loss: needs tau > 0.2
    (False, False, -0.5, False),
    (True, True, 0.3, True),      # short-retrain accuracy vs. final accuracy: needs tau > 0.2
    (True, True, -0.3, False),
    (True, False, -0.3, True),    # accuracy-like criterion vs. a loss: needs tau < -0.2
])
def test_validity_for_each_direction_combination(x_higher, y_higher, tau, expected):
    assert validity(tau, 0.01, x_higher, y_higher) is expected
    assert validity(tau, 0.06, x_higher, y_higher) is False
    assert validity(math.nan, math.nan, x_higher, y_higher) is False


def test_correlate_reports_every_statistic_consistently():
    loss = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    acc = np.array([0.90, 0.92, 0.88, 0.87, 0.85, 0.84, 0.80, 0.79])
    result = correlate(loss, acc, "pruned_train_loss", "final_test_acc", False, True, ids=list("abcdefgh"))
    tau, p = stats.kendalltau(loss, acc)
    assert result["n"] == 8 and result["x"] == "pruned_train_loss" and result["y"] == "final_test_acc"
    assert result["kendall_tau"] == pytest.approx(tau) and result["p_value"] == pytest.approx(p)
    assert result["valid"] is True and result["higher_is_better"] is True and result["x_higher_is_better"] is False
    assert (result["oracle_index"], result["oracle_id"], result["n_anomalies"]) == (0, "a", 1)
    assert result["anomaly_ratio"] == pytest.approx(1 / 8)
    assert result["n_counterexamples"] == 1  # only (a, b): a has the lower loss but the lower accuracy
    assert result["counterexample_ratio"] == pytest.approx(1 / 28)


@pytest.mark.parametrize("column, higher", [
    ("final_test_acc", True), ("top1", True), ("val_f1", True), ("mmvet_score", True), ("eval/accuracy", True),
    ("pruned_train_loss", False), ("test_error", False), ("wikitext_ppl", False), ("pruned_l1", False),
])
def test_direction_is_inferred_from_the_column_name(column, higher):
    assert infer_higher_is_better(column) is higher


@pytest.mark.parametrize("column", ["mask_violations", "acc_loss_ratio"])
def test_unknown_or_ambiguous_direction_asks_for_the_flag(column):
    with pytest.raises(HfpruneError, match=rf"'{column}'.*--higher-is-better / --lower-is-better"):
        infer_higher_is_better(column)


def test_points_on_one_spot_are_counted_for_the_scatter_plot():
    from hfprune.report.plots import multiplicity

    x = np.array([0.1, 0.1, 0.2, 0.1, 0.3])
    y = np.array([0.5, 0.5, 0.5, 0.6, 0.5])
    assert multiplicity(x, y).tolist() == [2, 2, 1, 1, 1]
    assert multiplicity(np.array([]), np.array([])).tolist() == []
