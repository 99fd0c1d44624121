"""The accuracy-vs-nonzeros frontier report on hand-made sparse-study records."""

from __future__ import annotations

import json
import struct

import pytest

from hfprune.errors import HfpruneError
from hfprune.records.record import TrialRecord
from hfprune.report.frontier import (best_at_most, disconnected_share, frontier, frontier_findings, frontier_json,
                                     frontier_markdown, frontier_plot, frontier_table, search_frontier, sparsest_at,
                                     target_finding)


def search(nonzeros, acc, phase=1):
    return {"trial_id": f"s{nonzeros}-{acc}", "setting": "search", "phase": phase, "method": "search",
            "budget": nonzeros, "widths": [1, 1, 1], "final_test_acc": acc, "final_test_loss": 1 - acc,
            "nonzeros": nonzeros, "effective_nonzeros": nonzeros, "repeat": 0}


def run(method, budget, acc, effective, repeat=0):
    return {"trial_id": f"{method}-{budget}-{repeat}", "setting": method, "method": method, "budget": budget,
            "final_test_acc": acc, "final_test_loss": 1 - acc, "nonzeros": budget, "effective_nonzeros": effective,
            "repeat": repeat}


RECORDS = [
    search(5, 0.60), search(7, 0.55), search(7, 0.70), search(10, 0.80), search(12, 0.75, phase=2),
    search(14, 0.95, phase=2),
    run("gmp", 7, 0.50, 6), run("gmp", 7, 0.60, 5, 1), run("gmp", 10, 0.70, 10), run("gmp", 10, 0.78, 8, 1),
    run("gmp", 14, 0.90, 14), run("gmp", 14, 0.92, 14, 1),
    run("snip", 4, 0.50, 3), run("snip", 7, 0.70, 7), run("snip", 12, 0.85, 9),
    {**run("snip", 12, 0.99, 12, 1), "final_test_acc": None},  # unfinished: left out
]
# The search's frontier by hand: 5 → 0.60; 7 → 0.70 (the better of the two at 7); 10 → 0.80; 12 (0.75) does not
# rise; 14 → 0.95.
FRONTIER = [(5, 0.60), (7, 0.70), (10, 0.80), (14, 0.95)]


def test_frontier_steps():
    assert frontier([(5, 0.6), (7, 0.55), (7, 0.7), (10, 0.8), (12, 0.75), (14, 0.95)]) == FRONTIER
    assert frontier([(3, 0.5), (3, None), (2, 0.5), (4, 0.5)]) == [(2, 0.5)]  # ties do not step
    assert frontier([]) == []
    assert search_frontier(RECORDS) == FRONTIER
    assert best_at_most(FRONTIER, 4) is None
    assert best_at_most(FRONTIER, 9) == 0.70
    assert best_at_most(FRONTIER, 100) == 0.95


def test_table_values():
    rows = {(r["method"], r["budget"]): r for r in frontier_table(RECORDS)}
    assert list(rows) == [("gmp", 7), ("gmp", 10), ("gmp", 14), ("snip", 4), ("snip", 7), ("snip", 12)]
    gmp7 = rows["gmp", 7]
    assert gmp7["runs"] == 2
    assert gmp7["mean_acc"] == pytest.approx(0.55) and gmp7["best_acc"] == 0.60
    assert gmp7["mean_nonzeros"] == 7 and gmp7["mean_effective_nonzeros"] == 5.5
    assert gmp7["search_best_acc"] == 0.70
    assert gmp7["gap"] == pytest.approx(0.10) and gmp7["gap_mean"] == pytest.approx(0.15)
    assert rows["gmp", 10]["gap"] == pytest.approx(0.80 - 0.78)
    assert rows["gmp", 10]["mean_effective_nonzeros"] == 9
    assert rows["snip", 4]["search_best_acc"] is None and rows["snip", 4]["gap"] is None
    assert rows["snip", 7]["gap"] == 0
    assert rows["snip", 12]["runs"] == 1 and rows["snip", 12]["gap"] == pytest.approx(0.80 - 0.85)


def test_finding_lines():
    findings = frontier_findings(frontier_table(RECORDS))
    assert findings["gmp"]["line"] == "search above gmp at every budget (3 budgets; gap +0.0200 to +0.1000 " \
                                      "against its best run)"
    assert findings["snip"]["below"] == [12] and findings["snip"]["level"] == [7]
    assert findings["snip"]["no_search"] == [4] and findings["snip"]["above"] == []
    assert findings["snip"]["line"] == ("snip above the search at budgets 12; level with the search at budgets 7 "
                                        "(its best run against the search's best at ≤ the budget); "
                                        "no search candidate at ≤ budgets 4")
    only_low = frontier_findings(frontier_table([search(10, 0.9), run("gmp", 3, 0.5, 3)]))
    assert only_low["gmp"]["line"] == "gmp: no search candidate at or below its budgets 3"


def test_sparsest_model_at_a_target_accuracy():
    # By hand from RECORDS. At >= 0.80: search 10 (0.80; 14 reaches 0.95 but has more); gmp 14 (0.92, its runs at
    # 7 and 10 stay below); snip 12 (0.85; its unfinished 0.99 run is left out). At >= 0.90: search 14, gmp 14
    # (0.92, the better of its two runs at 14), snip none (best 0.85, runs up to 12).
    at80 = sparsest_at(RECORDS, 0.80)
    assert list(at80) == ["search", "gmp", "snip"]  # the search first
    assert (at80["search"]["x"], at80["search"]["acc"], at80["search"]["trial_id"]) == (10, 0.80, "s10-0.8")
    assert (at80["gmp"]["x"], at80["gmp"]["budget"], at80["gmp"]["runs"]) == (14, 14, 6)
    assert at80["snip"]["x"] == 12 and at80["snip"]["max_x"] == 12
    finding = target_finding(at80, 0.80)
    assert finding["holds"] is True
    assert finding["line"] == ("at ≥ 80% accuracy the search's sparsest model has 10 nonzero weights (0.8000), "
                               "fewer than every method's: snip 12 (budget 12, 0.8500); gmp 14 (budget 14, 0.9200)")
    at90 = sparsest_at(RECORDS, 0.90)
    assert at90["gmp"]["acc"] == 0.92 and at90["gmp"]["trial_id"] == "gmp-14-1"
    assert at90["snip"]["x"] is None and at90["snip"]["best_acc"] == 0.85
    finding = target_finding(at90, 0.90)  # gmp reaches it with as many as the search: not fewer
    assert finding["holds"] is False and finding["line"].startswith(
        "at ≥ 90% accuracy the search's sparsest model has 14 nonzero weights (0.9500), not fewer than every "
        "method's: gmp 14 (budget 14, 0.9200); snip with no run reaching it (best 0.8500)")
    assert target_finding(sparsest_at(RECORDS, 0.96), 0.96) == {
        "target": 0.96, "holds": False, "line": "at ≥ 96% accuracy: no search candidate reaches it (best 0.9500); "
                                                "no method run either"}
    effective = sparsest_at([run("gmp", 14, 0.9, 9), search(12, 0.9)], 0.9, x="effective_nonzeros")
    assert effective["gmp"]["x"] == 9 and target_finding(effective, 0.9, "effective_nonzeros")["holds"] is False
    assert target_finding(sparsest_at([search(5, 0.9)], 0.8), 0.8)["holds"] is None  # no method to compare


def test_targets_in_the_report():
    report = json.loads(json.dumps(frontier_json(RECORDS, targets=[0.8, 0.9])))
    assert [(found["target"], found["holds"]) for found in report["targets"]] == [(0.8, True), (0.9, False)]
    assert report["targets"][0]["sparsest"]["snip"]["trial_id"] == "snip-12-0"
    assert frontier_json(RECORDS)["targets"] == []
    lines = frontier_markdown(RECORDS, targets=[0.9])
    assert "| search | 14 | 0.9500 | 14 | s14-0.95 | 6 | 0.9500 | 14 |" in lines
    assert "| snip | — | — | — | — | 3 | 0.8500 | 12 |" in lines


def test_disconnected_share():
    shares = disconnected_share(RECORDS)
    # gmp: nominal 7+7+10+10+14+14 = 62, effective 6+5+10+8+14+14 = 57 -> 5/62; snip: 4+7+12 = 23 vs 3+7+9 = 19
    assert shares["gmp"]["runs"] == 6 and shares["gmp"]["share"] == pytest.approx(5 / 62)
    assert shares["snip"]["share"] == pytest.approx(4 / 23)
    assert shares["search"]["share"] == 0


def test_markdown_section():
    lines = frontier_markdown(RECORDS)
    assert lines[0] == "## Search frontier against the sparse-training methods"
    assert any("6 candidates (phase 1: 4, phase 2: 2)" in line and "5 → 0.6000, 7 → 0.7000, 10 → 0.8000, "
               "14 → 0.9500" in line for line in lines)
    assert "| gmp | 7 | 2 | 0.5500 | 0.6000 | 7.0 | 5.5 | — | 0.7000 | +0.1000 |" in lines
    assert "| snip | 4 | 1 | 0.5000 | 0.5000 | 4.0 | 3.0 | — | — | — |" in lines
    assert lines[2] == "x-axis: nonzero weights (`nonzeros`); budgets count nonzero weights."
    assert "- search above gmp at every budget (3 budgets; gap +0.0200 to +0.1000 against its best run)" in lines
    assert "- gmp: 8.1% of 62 nonzero weights over 6 runs" in lines
    assert "- snip: 17.4% of 23 nonzero weights over 3 runs" in lines
    assert "No finished sparse-study trials yet." in frontier_markdown([])


def test_json_is_plain_data():
    report = json.loads(json.dumps(frontier_json(RECORDS)))
    assert report["search"]["frontier"] == [list(step) for step in FRONTIER]
    assert report["search"]["by_phase"] == {"1": 4, "2": 2}
    assert len(report["table"]) == 6 and report["findings"]["snip"]["below"] == [12]


def test_missing_fields_are_named():
    bad = {k: v for k, v in run("gmp", 7, 0.5, 7).items() if k != "budget"}
    with pytest.raises(HfpruneError, match="gmp-7-0 has no 'budget'"):
        frontier_table([bad])


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_files(tmp_path):
    two = frontier_plot(RECORDS, tmp_path / "frontier.png")
    one = frontier_plot(RECORDS, tmp_path / "nominal.png", second_x=None)
    (two_w, two_h), (one_w, one_h) = png_size(two), png_size(one)
    assert two.stat().st_size > 5000
    assert two_h == one_h and two_w == 2 * one_w  # the second panel: effective nonzeros


def test_trial_records_are_read_like_their_json_lines():
    record = TrialRecord("t1", "gmp", "gmp-7", 0, 0, candidate={"method": "gmp", "budget": 7},
                         facts={"nonzeros": 7, "effective_nonzeros": 5})
    record.add("final_test_acc", 0.6, True)
    rows = frontier_table([record, search(7, 0.7)])
    assert rows == [{"method": "gmp", "budget": 7, "runs": 1, "mean_acc": 0.6, "best_acc": 0.6, "mean_nonzeros": 7,
                     "mean_effective_nonzeros": 5, "mean_model_nonzeros": None, "search_best_acc": 0.7,
                     "gap": pytest.approx(0.1), "gap_mean": pytest.approx(0.1), "best_trial": "t1"}]
