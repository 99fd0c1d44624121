"""Bootstrap intervals of the report: coverage on studies drawn from a known distribution, the counts they
rest on, and what report.md says about noise."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from hfprune.records.store import TrialStore
from hfprune.report.bootstrap import (MIN_RESAMPLES, POINT_BUDGET, Bootstrap, _tau_and_discordant, pair_intervals,
                                      repeat_spread, within_noise)
from hfprune.report.stats import anomaly_ratio, count_counterexamples, rank_codes
from hfprune.study.registry import report_study

RHO = -0.5  # pruned train loss vs. final accuracy: a negative correlation, as a useful criterion has
TAU = 2 / math.pi * math.asin(RHO)  # Kendall's tau of a bivariate normal (Greiner's relation)


def _study(rng, n):
    """n candidates: x a loss (lower is better), y an accuracy (higher is better), correlated RHO."""
    z = rng.multivariate_normal([0, 0], [[1, RHO], [RHO, 1]], size=n)
    return z[:, 0], z[:, 1]


@pytest.mark.parametrize("n", [60, 450])  # both sides of the direct-comparison limit
def test_each_resample_counts_the_discordant_pairs_and_tau_of_its_points_with_ties(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        x, y = rng.integers(0, 6, n).astype(float), rng.integers(0, 4, n).astype(float)
        index = rng.integers(0, n, n)  # a resample, duplicates and all
        cx, cy = rank_codes(x), rank_codes(y)
        tau, discordant = _tau_and_discordant(cx[index], cy[index], rank_codes(cx * 10 + cy)[index])
        assert discordant == count_counterexamples(x[index], y[index], True, True)
        assert tau == pytest.approx(stats.kendalltau(x[index], y[index]).statistic)
    constant = rank_codes(np.ones(5))
    assert _tau_and_discordant(constant, rank_codes(np.arange(5.0)), rank_codes(np.arange(5.0)))[1] == 0


@pytest.mark.parametrize("n, expected", [(3, 1000), (2_000, 1000), (5_000, 400), (20_000, MIN_RESAMPLES),
                                         (100_000, MIN_RESAMPLES), (10**7, MIN_RESAMPLES)])
def test_resamples_are_bounded_by_the_point_budget(n, expected):
    """The docstring's bound: 1,000 resamples up to 2,000 points, 400 at 5,000, never fewer than 100."""
    assert (POINT_BUDGET, MIN_RESAMPLES) == (2_000_000, 100)
    assert Bootstrap().resamples_for(n) == expected
    assert Bootstrap(resamples=40).resamples_for(n) == 40  # a smaller request is kept


def test_index_sets_come_one_at_a_time_and_match_the_seeded_draws():
    bootstrap = Bootstrap(resamples=4, seed=7)
    drawn = list(bootstrap.indices(9))
    expected = np.random.default_rng(7).integers(0, 9, size=(4, 9))  # the same stream as one block
    assert [d.tolist() for d in drawn] == expected.tolist()


def test_intervals_say_how_many_resamples_they_used(monkeypatch):
    monkeypatch.setattr("hfprune.report.bootstrap.POINT_BUDGET", 100_000)
    monkeypatch.setattr("hfprune.report.bootstrap.MIN_RESAMPLES", 10)
    x, y = _study(np.random.default_rng(8), 2_000)
    result = pair_intervals(x.round(2), y.round(2), False, True)
    assert result["resamples"] == 50
    assert result["tau_ci"][0] <= stats.kendalltau(x.round(2), y.round(2)).statistic <= result["tau_ci"][1]
    assert pair_intervals(x[:2], y[:2], False, True)["resamples"] == 0


def test_a_resample_of_many_distinct_points_needs_memory_linear_in_them():
    """100,000 distinct x and y: ties in both are counted without a table of every (x, y) code pair (the old
    count wanted 74.5 GiB) and without holding every resample at once."""
    import tracemalloc

    x, y = _study(np.random.default_rng(9), 100_000)
    tracemalloc.start()
    result = pair_intervals(x, y, False, True, Bootstrap(resamples=2))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result["resamples"] == 2 and result["tau_ci"] is not None
    assert peak < 100 * 2**20


def test_intervals_cover_the_statistics_of_the_known_distribution_reasonably_often():
    """Over 40 seeds, the 95% intervals cover the population tau and counterexample ratio (1 + tau) / 2 (lower
    loss but lower accuracy = a concordant pair of (x, y)) about 95% of the time; the anomaly ratio of a fresh
    study drawn from the same distribution, which adds its own sampling noise, still well over half the time."""
    seeds, hits = 40, np.zeros(3)
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        x, y = _study(rng, 60)
        ci = pair_intervals(x, y, False, True, Bootstrap(resamples=200, seed=seed))
        fresh = anomaly_ratio(*_study(rng, 60), False, True)[0]
        hits += [ci["tau_ci"][0] <= TAU <= ci["tau_ci"][1],
                 ci["counterexample_ci"][0] <= (1 + TAU) / 2 <= ci["counterexample_ci"][1],
                 ci["anomaly_ci"][0] <= fresh <= ci["anomaly_ci"][1]]
    coverage = hits / seeds
    assert coverage[0] >= 0.85 and coverage[1] >= 0.85
    assert coverage[2] >= 0.55
    # and an interval is not the whole range: with 60 points tau is pinned to well within ±0.25
    assert ci["tau_ci"][1] - ci["tau_ci"][0] < 0.5


def test_intervals_are_seeded_and_shrink_with_more_candidates():
    rng = np.random.default_rng(0)
    x, y = _study(rng, 200)
    first, again = (pair_intervals(x, y, False, True, Bootstrap(100, seed=3)) for _ in range(2))
    assert first == again
    assert pair_intervals(x, y, False, True, Bootstrap(100, seed=4))["tau_ci"] != first["tau_ci"]
    small = pair_intervals(x[:20], y[:20], False, True, Bootstrap(100, seed=3))
    width = lambda ci: ci["tau_ci"][1] - ci["tau_ci"][0]  # noqa: E731
    assert width(first) < width(small)
    assert pair_intervals(x[:2], y[:2], False, True)["tau_ci"] is None


def test_within_noise_reads_each_finding_against_its_line():
    clear = {"tau_ci": [-0.6, -0.3], "anomaly_ci": [0.0, 0.1], "counterexample_ci": [0.2, 0.3]}
    assert within_noise(clear, sign=-1) == {"validity": False, "anomaly_ratio": False, "counterexample_ratio": False}
    noisy = {"tau_ci": [-0.3, -0.1], "anomaly_ci": [0.2, 0.6], "counterexample_ci": [0.45, 0.55]}
    assert within_noise(noisy, sign=-1) == {"validity": True, "anomaly_ratio": True, "counterexample_ratio": True}


def test_repeat_spread_is_the_mean_std_of_repeats_beside_the_spread_of_masks():
    spread = repeat_spread({"a": [1.0, 3.0], "b": [2.0, 2.0], "c": [5.0]})
    assert spread["masks_with_repeats"] == 2
    assert spread["mean_repeat_std"] == pytest.approx((math.sqrt(2) + 0) / 2)
    assert spread["between_mask_std"] == pytest.approx(np.std([2.0, 2.0, 5.0], ddof=1))
    assert repeat_spread({"a": [1.0], "b": [2.0]}) is None


def test_report_gives_intervals_and_says_when_a_finding_is_within_noise(tmp_path):
    """Ten masks, two repeats, criterion unrelated to the outcome: intervals in report.json, noise in report.md."""
    rng = np.random.default_rng(5)
    store = TrialStore(tmp_path)
    for m in range(10):
        loss = float(rng.random())
        for repeat in range(2):
            store.append({"trial_id": f"s:m{m}:r{repeat}", "setting": "conv1@0.5", "mask_id": f"m{m}",
                          "repeat": repeat, "seed": repeat, "pruned_train_loss": loss,
                          "final_test_acc": float(rng.random()),
                          "higher_is_better": {"pruned_train_loss": False, "final_test_acc": True}})
    summary = report_study(tmp_path, pairs=[("pruned_train_loss", "final_test_acc")], plots=False,
                           bootstrap=Bootstrap(200, seed=1))
    (result,) = summary["results"]
    assert result["tau_ci"][0] <= result["kendall_tau"] <= result["tau_ci"][1]
    assert result["within_noise"]["validity"] is True
    assert result["repeat_spread"]["masks_with_repeats"] == 10
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["bootstrap"] == {"resamples": 200, "level": 0.95, "seed": 1}
    markdown = (tmp_path / "report.md").read_text()
    assert "tau CI" in markdown and "within noise at 95% confidence: validity" in markdown
    assert "repeats of one mask differ by" in markdown


def _selection_rows():
    """Five fully retrained masks; final accuracies 0.90 (m0) > 0.85 > 0.80 > 0.75 > 0.70 (m4)."""
    acc = [0.90, 0.85, 0.80, 0.75, 0.70]
    loss = [0.3, 0.1, 0.2, 0.4, 0.5]  # oracle picks m1 (regret 0.05, 2nd of 5)
    l1 = [2.0, 1.0, 1.0, 3.0, 4.0]  # m1 and m2 tie: a draw between 0.85 and 0.80
    short = [0.5, 0.4, 0.3, 0.2, 0.1]  # picks m0
    return [{"trial_id": f"m{m}", "setting": "s", "mask_id": f"m{m}", "repeat": 0, "pruned_train_loss": loss[m],
             "pruned_l1": l1[m], "short_test_acc": short[m], "final_test_acc": acc[m],
             "higher_is_better": {"pruned_train_loss": False, "pruned_l1": False, "short_test_acc": True,
                                  "final_test_acc": True}} for m in range(5)]


def test_regret_table_by_hand_with_ties_random_and_epochs(tmp_path):
    from hfprune.report.regret import regret_table

    rows = [{k: v for k, v in r.items() if k != "higher_is_better"} for r in _selection_rows()]
    directions = {"pruned_train_loss": False, "pruned_l1": False, "short_test_acc": True, "final_test_acc": True}
    table = {r["criterion"]: r for r in regret_table(rows, directions, "t", "final_test_acc", full_epochs=30,
                                                     short_epochs=3, bootstrap=Bootstrap(50, seed=0))}
    assert list(table) == ["pruned_train_loss", "pruned_l1", "short_test_acc", "random"]
    assert table["pruned_train_loss"]["regret"] == pytest.approx(0.05) and table["pruned_train_loss"]["top"] == 0.4
    assert table["pruned_l1"]["regret"] == pytest.approx((0.05 + 0.10) / 2)
    assert table["pruned_l1"]["top"] == pytest.approx((0.4 + 0.6) / 2)
    assert table["short_test_acc"]["regret"] == pytest.approx(0.0) and table["short_test_acc"]["top"] == 0.2
    assert table["random"]["regret"] == pytest.approx(0.90 - 0.80) and table["random"]["top"] == pytest.approx(0.6)
    assert table["short_test_acc"]["epochs"] == 5 * 3 + 30 and table["pruned_train_loss"]["epochs"] == 30
    assert all(r["exhaustive_epochs"] == 150 for r in table.values())
    for r in table.values():
        low, high = r["regret_ci"]
        assert 0.0 <= low <= high <= 0.20  # a regret is never negative nor above best − worst


def test_study_report_has_the_regret_table_with_epochs_from_its_recipe(tmp_path):
    store = TrialStore(tmp_path)
    for record in _selection_rows():
        store.append(record)
    (tmp_path / "recipe.yaml").write_text("retrain: {epochs: 4, batch_size: 8, optimizer: {name: sgd, lr: 0.1}, "
                                          "short_fraction: 0.25}\n")
    summary = report_study(tmp_path, plots=False, bootstrap=Bootstrap(50, seed=0))
    oracle = next(r for r in summary["selection"] if r["criterion"] == "pruned_train_loss")
    assert oracle["regret"] == pytest.approx(0.05) and oracle["epochs"] == 4
    short = next(r for r in summary["selection"] if r["criterion"] == "short_test_acc")
    assert short["epochs"] == 5 * 1 + 4 and short["exhaustive_epochs"] == 20
    markdown = (tmp_path / "report.md").read_text()
    assert "## Selection by criterion" in markdown and "| s | random | 5 | 0.100 |" in markdown
