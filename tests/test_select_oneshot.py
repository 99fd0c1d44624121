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


def test_select_with_too_little_data_or_data_the_model_cannot_read_is_one_line_before_training(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from hfprune.errors import HfpruneError
    from vit_fixtures import TINY_VIT

    adapter = get_adapter("lenet5_mini")
    adapter.build(adapter.config(10, 1, 32, {})).save_pretrained(tmp_path / "lenet")
    ViTForImageClassification(ViTConfig(**TINY_VIT, num_labels=10)).save_pretrained(tmp_path / "vit")
    common = ["--select", "successive-halving", "--train-data", "mnist_sample", "--no-progress"]
    tiny = CliRunner().invoke(app, ["prune", str(tmp_path / "lenet"), "--structure", "conv1=0.5", "--train-limit",
                                    "1", "--out", str(tmp_path / "a"), *common])
    assert isinstance(tiny.exception, HfpruneError) and "at least 2" in str(tiny.exception), tiny.output
    vit = CliRunner().invoke(app, ["prune", str(tmp_path / "vit"), "--structure", "heads=0.5", "--out",
                                   str(tmp_path / "b"), *common])
    assert isinstance(vit.exception, HfpruneError) and "1-channel images" in str(vit.exception), vit.output
    assert not (tmp_path / "b.selection" / "trials.jsonl").exists()
