"""report.md's paper-style tables: Table 2 (ratio × layer, tau / p, invalid marked) and Table A3 (rounds)."""

import json

import numpy as np

from hfprune.study.registry import report_study
from hfprune.report.stats import correlate
from hfprune.records.store import TrialStore


def _study(directory, settings, strength):
    """Per setting, 12 masks whose final accuracy falls with the pruned loss by ``strength[setting]`` (+ noise)."""
    rng = np.random.default_rng(1)
    store, expected = TrialStore(directory), {}
    for setting in settings:
        xs = rng.random(12)
        ys = 0.9 - strength[setting] * xs + 0.05 * rng.random(12)
        for m, (x, y) in enumerate(zip(xs, ys)):
            store.append({"trial_id": f"{setting}:m{m}:r0", "setting": setting, "mask_id": f"m{m}", "repeat": 0,
                          "seed": m, "pruned_train_loss": float(x), "final_test_acc": float(y),
                          "final_test_loss": float(1 - y), "timings": {}})
        expected[setting] = correlate(xs, ys, "pruned_train_loss", "final_test_acc", False, True)
    (directory / "study.json").write_text(json.dumps({"name": "lenet-grid"}))
    return expected


def test_table2_grid_has_one_cell_per_ratio_and_layer_with_invalid_cells_marked(tmp_path):
    settings = ["conv1@0.2", "conv1@0.5", "conv2@0.5", "conv3@0.8", "conv1@0.5+conv2@0.5"]
    strength = {"conv1@0.2": 1.0, "conv1@0.5": 1.0, "conv2@0.5": 0.0, "conv3@0.8": 1.0, "conv1@0.5+conv2@0.5": 1.0}
    expected = _study(tmp_path, settings, strength)
    report_study(tmp_path, plots=False)
    lines = (tmp_path / "report.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## Table 2"))
    header = next(line for line in lines[start:] if line.startswith("| ratio"))
    assert header == "| ratio | conv1 | conv2 | conv3 |"
    rows = {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")[1:]]
            for line in lines[start:] if line.startswith("| 0.")}
    assert list(rows) == ["0.2", "0.5", "0.8"]  # the mixed setting has no cell
    cell = lambda s: f"{expected[s]['kendall_tau']:.3f} / {expected[s]['p_value']:.2g}"
    assert rows["0.5"][0] == cell("conv1@0.5") and expected["conv1@0.5"]["valid"]
    assert rows["0.5"][1] == cell("conv2@0.5") + " ✗" and not expected["conv2@0.5"]["valid"]
    assert rows["0.2"][1] == "—" and rows["0.8"][2] == cell("conv3@0.8")


def test_no_grid_for_a_single_setting_or_mixed_settings(tmp_path):
    _study(tmp_path, ["filters@0.5"], {"filters@0.5": 1.0})
    report_study(tmp_path, plots=False)
    assert "Table 2" not in (tmp_path / "report.md").read_text()
