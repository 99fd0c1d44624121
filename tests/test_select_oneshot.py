"""`hfprune prune --select successive-halving`: a mask chosen by retraining, saved like any prune output."""

import json

from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.models import get_adapter


def test_select_saves_the_chosen_retrained_mask_as_a_prune_output(tmp_path):
    adapter = get_adapter("lenet5_mini")
    dense = adapter.build(adapter.config(10, 1, 32, {}))
    dense.save_pretrained(tmp_path / "dense")
    out = tmp_path / "pruned"
    command = ["prune", str(tmp_path / "dense"), "--structure", "conv1=0.8", "--select", "successive-halving",
               "--candidates", "9", "--train-data", "mnist_sample", "--train-limit", "300", "--epochs", "3",
               "--min-fraction", "0.34", "--batch-size", "64", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    selection = facts["selection"]
    # C(10, 8) = 45 masks > 9 candidates: 9 sampled; rungs of 1 and 3 epochs for 9 and 3 masks
    assert selection["candidates"] == 9
    assert [(rung["size"], rung["budget"]) for rung in selection["rungs"]] == [(9, 1), (3, 3)]
    assert selection["epochs_spent"] == 9 * 1 + 3 * 2 and selection["exhaustive_epochs"] == 9 * 3
    assert selection["rungs"][-1]["best"] == facts["mask_id"]
    pruned = adapter.load_pretrained(str(out))
    assert pruned.conv1.out_channels == 2  # 8 of 10 filters removed, physically
    assert f"chose mask {facts['mask_id']}" in result.output
    again = CliRunner().invoke(app, command)  # the selection study resumes: nothing is retrained again
    assert again.exit_code == 0, again.output
    assert json.loads((out / "hfprune_pruning.json").read_text())["mask_id"] == facts["mask_id"]


def test_select_needs_training_data_and_structure(tmp_path):
    adapter = get_adapter("lenet5_mini")
    adapter.build(adapter.config(10, 1, 32, {})).save_pretrained(tmp_path / "dense")
    base = ["prune", str(tmp_path / "dense"), "--out", str(tmp_path / "o"), "--select", "successive-halving"]
    missing = CliRunner().invoke(app, [*base, "--structure", "conv1=0.5"])
    assert missing.exit_code != 0 and "--train-data" in str(missing.exception or missing.output)
    unstructured = CliRunner().invoke(app, [*base, "--sparsity", "0.5"])
    assert unstructured.exit_code != 0 and "--structure" in str(unstructured.exception or unstructured.output)
