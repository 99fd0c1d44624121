"""The reporter end to end: tables in, report.md / report.json / PNGs and JSON on stdout out."""

import csv
import json
import math

import numpy as np
import pytest

from hfprune.errors import HfpruneError
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.report.pairs import report_table
from hfprune.study.registry import report_study
from hfprune.report.stats import correlate
from hfprune.records.store import TrialStore
from hfprune.report.tables import load_table, pair_points

SETTINGS = ("conv1@0.5", "conv2 / 0.5|x")  # the second needs a safe file name
REQUIRED = {"n", "x", "y", "kendall_tau", "p_value", "valid", "anomaly_ratio", "counterexample_ratio",
            "higher_is_better"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records(short=True):
    """Two settings × 8 masks × 2 repeats; one trial lacks its final test loss."""
    rng = np.random.default_rng(0)
    records = []
    for setting in SETTINGS:
        for m in range(8):
            pruned_loss = float(rng.random())
            for repeat in range(2):
                record = {
                    "trial_id": f"{setting}:m{m}:r{repeat}", "setting": setting, "mask_id": f"m{m}",
                    "repeat": repeat, "seed": 10 * m + repeat, "mask": {"conv1": [0, 2, 4]},
                    "pruned_train_loss": pruned_loss, "pruned_l1": float(3 + m % 3),
                    "final_test_acc": float(0.9 - 0.2 * pruned_loss + 0.05 * rng.random()),
                    "final_test_loss": None if (m, repeat) == (3, 1) else float(rng.random()),
                    "timings": {"retrain_s": 1.5},
                }
                if short:
                    record["short_test_acc"] = float(0.8 - 0.1 * pruned_loss + 0.05 * rng.random())
                records.append(record)
    return records


def _study(directory, short=True):
    store = TrialStore(directory)
    for record in _records(short):
        store.append(record)
    (directory / "study.json").write_text(json.dumps(
        {"name": "lenet-demo", "dense": {"test_acc": 0.987, "test_loss": 0.04, "train_loss": 0.03}}))
    return directory


def _expected(records, setting, x, y, x_higher, y_higher):
    """correlate over the setting's masks, repeats averaged, rows missing x or y skipped."""
    by_mask = {}
    for r in records:
        if r["setting"] == setting and r.get(x) is not None and r.get(y) is not None:
            by_mask.setdefault(r["mask_id"], []).append((r[x], r[y]))
    ids = sorted(by_mask)
    xs = [np.mean([v[0] for v in by_mask[i]]) for i in ids]
    ys = [np.mean([v[1] for v in by_mask[i]]) for i in ids]
    return correlate(np.array(xs), np.array(ys), x, y, x_higher, y_higher, ids=[f"{setting}:{i}" for i in ids])


def test_report_study_writes_markdown_json_and_plots_that_match_correlate(tmp_path):
    directory = _study(tmp_path / "study")
    summary = report_study(directory)
    records = _records()

    report = json.loads((directory / "report.json").read_text())
    assert report["study"] == "lenet-demo" and report["settings"] == sorted(SETTINGS)
    pairs = [(p["x"], p["y"]) for p in report["pairs"]]
    assert pairs == [("pruned_train_loss", "final_test_acc"), ("pruned_train_loss", "final_test_loss"),
                     ("short_test_acc", "final_test_acc"), ("pruned_l1", "final_test_acc"),
                     ("pruned_l1", "final_test_loss")]  # App. B.1: each criterion vs. both final metrics
    assert len(report["results"]) == len(pairs) * len(SETTINGS)
    for result in report["results"]:
        pair = next(p for p in report["pairs"] if (p["x"], p["y"]) == (result["x"], result["y"]))
        expected = _expected(records, result["setting"], result["x"], result["y"],
                             pair["x_higher_is_better"], pair["higher_is_better"])
        assert REQUIRED <= set(result)
        for key in ("n", "valid", "n_anomalies", "n_counterexamples", "oracle_id", "higher_is_better"):
            assert result[key] == expected[key], key
        for key in ("kendall_tau", "p_value", "anomaly_ratio", "counterexample_ratio"):
            assert result[key] == pytest.approx(expected[key]), key
        png = directory / result["plot"]
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert png.parent == directory and " " not in png.name and "|" not in png.name
    assert len(list(directory.glob("*.png"))) == len(report["results"])

    loss_rows = [r for r in report["results"] if r["y"] == "final_test_loss"]
    assert {r["n_dropped"] for r in loss_rows} == {1} and {r["n"] for r in loss_rows} == {8}
    l1 = next(p for p in report["pairs"] if p["x"] == "pruned_l1")
    assert l1["x_higher_is_better"] is False  # a higher L1 of the pruned weights is worse
    assert report == json.loads(json.dumps(summary))

    markdown = (directory / "report.md").read_text()
    assert "lenet-demo" in markdown and "0.987" in markdown and "Def. 3.1" in markdown
    assert all(setting.replace("|", "\\|") in markdown for setting in SETTINGS)
    assert f"]({report['results'][0]['plot']})" in markdown


def test_report_study_skips_the_short_retrain_pair_without_values_and_honours_overrides(tmp_path):
    directory = _study(tmp_path / "study", short=False)
    summary = report_study(directory, directions={"pruned_l1": True}, plots=False)
    assert ("short_test_acc", "final_test_acc") not in [(p["x"], p["y"]) for p in summary["pairs"]]
    assert next(p for p in summary["pairs"] if p["x"] == "pruned_l1")["x_higher_is_better"] is True
    assert not list(directory.glob("*.png")) and (directory / "report.md").exists()


def test_run_report_command_json_prints_one_object_over_all_rows(tmp_path, capsys):
    directory = _study(tmp_path / "study")
    outcome = CliRunner().invoke(app, ["report", str(directory), "--json"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.stdout)
    assert REQUIRED <= set(result)
    assert (result["x"], result["y"], result["higher_is_better"]) == ("pruned_train_loss", "final_test_acc", True)
    assert result["n"] == 16 and result["n_trials"] == 32
    assert [s["setting"] for s in result["settings"]] == sorted(SETTINGS)
    assert not (directory / "report.md").exists()  # --json only prints


def test_json_output_turns_nan_into_null(tmp_path, capsys):
    path = tmp_path / "flat.jsonl"
    path.write_text("".join(json.dumps({"criterion_loss": i, "top1": 0.5}) + "\n" for i in range(4)))
    outcome = CliRunner().invoke(app, ["report", str(path), "--x", "criterion_loss", "--y", "top1", "--json"])
    assert outcome.exit_code == 0, outcome.output
    out = outcome.stdout
    result = json.loads(out)
    assert "NaN" not in out and result["kendall_tau"] is None and result["p_value"] is None
    assert result["valid"] is False and result["anomaly_ratio"] == 0.0


def test_run_report_command_on_a_study_writes_the_report_and_prints_a_summary(tmp_path, capsys):
    directory = _study(tmp_path / "study")
    outcome = CliRunner().invoke(app, ["report", str(directory)])
    assert outcome.exit_code == 0, outcome.output
    out = outcome.stdout
    assert "pruned_train_loss vs. final_test_acc" in out and "conv1@0.5" in out
    assert (directory / "report.md").exists() and (directory / "report.json").exists()


def test_csv_table_with_missing_cells_and_an_explicit_direction(tmp_path):
    path = tmp_path / "trials.csv"
    rows = [("t0", "0.1", "0.9"), ("t1", "0.2", "0.95"), ("t2", "", "0.7"), ("t3", "0.4", "nan"), ("t4", "0.5", "0.6"),
            ("t5", "inf", "0.5")]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial_id", "pruned_train_loss", "quality"])
        writer.writerows(rows)
    table = load_table(path)
    assert table[0] == {"trial_id": "t0", "pruned_train_loss": 0.1, "quality": 0.9}
    assert table[2]["pruned_train_loss"] is None and table[3]["quality"] is None

    result = report_table(path, "pruned_train_loss", "quality", y_higher_is_better=True)
    expected = correlate(np.array([0.1, 0.2, 0.5]), np.array([0.9, 0.95, 0.6]), "pruned_train_loss", "quality",
                         False, True, ids=["t0", "t1", "t4"])
    assert result["n"] == 3 and result["n_dropped"] == 3 and result["oracle_id"] == "t0"
    assert result["anomaly_ratio"] == pytest.approx(1 / 3) and result["counterexample_ratio"] == pytest.approx(1 / 3)
    assert result["kendall_tau"] == pytest.approx(expected["kendall_tau"])


def test_jsonl_and_json_tables_flatten_nested_columns(tmp_path):
    records = [{"trial_id": f"t{i}", "pruned_train_loss": i / 10, "final_test_acc": 0.9 - i / 100,
                "timings": {"retrain_s": float(i)}} for i in range(5)]
    jsonl = tmp_path / "trials.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"trial_id": "torn", "pruned')
    as_json = tmp_path / "trials.json"
    as_json.write_text(json.dumps(records))
    for path in (jsonl, as_json):
        table = load_table(path)
        assert len(table) == 5 and table[3]["timings.retrain_s"] == 3.0
        result = report_table(path, "timings.retrain_s", "final_test_acc", x_higher_is_better=False)
        assert result["kendall_tau"] == pytest.approx(-1.0) and result["valid"] is True
        assert result["counterexample_ratio"] == 0.0 and result["anomaly_ratio"] == 0.0
        result = report_table(path, "timings.retrain_s", "final_test_acc", x_higher_is_better=True)
        assert result["valid"] is False and result["oracle_id"] == "t4"
        assert result["counterexample_ratio"] == 1.0 and result["anomaly_ratio"] == pytest.approx(4 / 5)


def test_unknown_column_names_it_and_lists_the_numeric_columns(tmp_path):
    directory = _study(tmp_path / "study")
    with pytest.raises(HfpruneError, match=r"column 'final_test_acuracy' does not exist.*final_test_acc") as error:
        report_table(directory, "pruned_train_loss", "final_test_acuracy")  # no direction needed
    assert "timings.retrain_s" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(HfpruneError, match="column 'setting' is not numeric"):
        report_table(directory, "setting", "final_test_acc", x_higher_is_better=False)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.csv", "missing.csv' does not exist"),
    (lambda d: d, r"no trial records \(trials\*\.jsonl\)"),
    (lambda d: (d / "empty.csv").write_text("pruned_train_loss,final_test_acc\n") and d / "empty.csv",
     "holds no trials"),
    (lambda d: (d / "obj.json").write_text('{"a": 1}') and d / "obj.json", "must hold a JSON list"),
    (lambda d: (d / "t.txt").write_text("x") and d / "t.txt", r"\.csv, \.jsonl or \.json"),
    (lambda d: (d / "bad.jsonl").write_text('{"a": 1}\n\n{oops\n{"a": 2}\n') and d / "bad.jsonl",
     r"bad\.jsonl, line 3: not valid JSON"),
])
def test_bad_inputs_get_one_clear_line(tmp_path, make, message):
    with pytest.raises(HfpruneError, match=message) as error:
        report_table(make(tmp_path), "pruned_train_loss", "final_test_acc")
    assert "\n" not in str(error.value)


def test_rows_without_both_values_and_unknown_directions_are_user_errors(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"pruned_train_loss": 0.1, "final_test_acc": null}\n{"pruned_train_loss": null, '
                    '"final_test_acc": 0.9}\n')
    with pytest.raises(HfpruneError, match="no row of .* has values for both"):
        report_table(path, "pruned_train_loss", "final_test_acc")
    path.write_text('{"pruned_train_loss": 0.1, "widgets": 3}\n')
    with pytest.raises(HfpruneError, match="'widgets'.*--higher-is-better"):
        report_table(path, "pruned_train_loss", "widgets")


def test_average_repeats_can_be_turned_off(tmp_path):
    directory = _study(tmp_path / "study")
    assert report_table(directory, "pruned_train_loss", "final_test_acc", average_repeats=False)["n"] == 32
    result = report_table(directory, "pruned_train_loss", "final_test_acc")
    assert result["n"] == 16 and not math.isnan(result["kendall_tau"])


def test_csv_cells_become_ints_floats_missing_or_text(tmp_path):
    path = tmp_path / "cells.csv"
    cells = {"int": " 7 ", "signed": "+5", "grouped": "1_000", "float": "3.0", "exp": "1e3", "inf": "-inf",
             "nan": "NaN", "null": "null", "empty": "", "hex": "0x10", "text": "conv1@0.5", "spaced": "1 2"}
    path.write_text(",".join(cells) + "\n" + ",".join(cells.values()) + "\n")
    (row,) = load_table(path)
    assert row == {"int": 7, "signed": 5, "grouped": 1000, "float": 3.0, "exp": 1000.0, "inf": -math.inf,
                   "nan": None, "null": None, "empty": None, "hex": "0x10", "text": "conv1@0.5", "spaced": "1 2"}
    assert [type(row[k]) for k in ("int", "float", "exp")] == [int, float, float]


def test_repeats_of_any_count_average_to_their_mean(tmp_path):
    """Masks with 1, 2 and 9 repeats: each point is the plain mean of its repeats (nine values take numpy's
    pairwise path), ids as documented."""
    rng = np.random.default_rng(11)
    records, means = [], {}
    for mask, repeats in (("a", 1), ("b", 2), ("c", 9), ("d", 2)):
        values = rng.random((repeats, 2)).round(6)
        means[mask] = values.mean(axis=0)
        records += [{"trial_id": f"{mask}{r}", "setting": "s", "mask_id": mask, "pruned_train_loss": float(v[0]),
                     "final_test_acc": float(v[1])} for r, v in enumerate(values)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(records))
    (points,) = pair_points(load_table(path), "pruned_train_loss", "final_test_acc", "t").values()
    assert points.ids == ["a0", "s:b", "s:c", "s:d"]
    assert points.x.tolist() == [float(np.mean([r["pruned_train_loss"] for r in records if r["mask_id"] == m]))
                                 for m in "abcd"]
    assert points.y.tolist() == pytest.approx([means[m][1] for m in "abcd"], abs=1e-15)


def test_a_report_says_what_is_unfinished_what_the_oracle_pruned_and_how_best_was_chosen(tmp_path):
    """A study still running: its report counts the planned trials; the oracle point names its kept units; the
    note on best/ says it was chosen on the test split."""
    directory = tmp_path / "study"
    store = TrialStore(directory)
    for index, (loss, acc) in enumerate([(0.3, 0.8), (0.2, 0.7), (0.5, 0.9)]):
        store.append({"trial_id": f"conv1@0.5:m{index}:r0", "setting": "conv1@0.5", "mask_id": f"m{index}",
                      "repeat": 0, "mask": {"conv1": [index, 9]}, "pruned_train_loss": loss, "final_test_acc": acc,
                      "higher_is_better": {"pruned_train_loss": False, "final_test_acc": True}})
    (directory / "study.json").write_text(json.dumps({"name": "running", "trials_planned": 252}))
    (directory / "best.json").write_text(json.dumps({"trial_id": "conv1@0.5:m2:r0", "metric": "final_test_acc",
                                                     "value": 0.9}))
    summary = report_study(directory, plots=False)
    text = (directory / "report.md").read_text()
    assert summary["trials_planned"] == 252 and "3 of 252 planned trials" in text
    (oracle,) = [r for r in summary["results"] if r["y"] == "final_test_acc"]
    assert oracle["oracle_id"] == "conv1@0.5:m1:r0" and oracle["oracle_pruned"] == "conv1 keeps 1, 9"  # lowest loss
    assert "conv1 keeps 1, 9" in text
    assert "`best/` holds the retrained model of trial `conv1@0.5:m2:r0`" in text and "test split" in text
