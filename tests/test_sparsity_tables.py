"""Per-layer sparsity tables (model cards, study reports) grouped by block: the block index each target's walk found
(``layer_blocks`` in facts and records), whatever the model's layout; records without it as before."""

from torch import nn

from tiny_models import tiny_model
from hfprune.export.cards import unstructured_card
from hfprune.models.generic.vision_encoder import VisionEncoderAdapter
from hfprune.pruning.unstructured import list_targets, unstructured_masks
from hfprune.report.sparsity import (
    mask_counts,
    projection_table,
    record_blocks,
    record_counts,
    sparsity_by_layer,
    sparsity_facts,
)


def facts_of(model: nn.Module, method: str = "onp", targets=None) -> dict:
    result = unstructured_masks(model, method, 0.5, targets=targets)
    blocks = {f"{target.name}.weight": target.block for target in list_targets(model, targets)}
    return {**sparsity_facts(mask_counts(result.masks), blocks), "method": method, "mask_id": method}


def test_a_dinov2_card_has_one_row_per_encoder_layer():
    facts = facts_of(tiny_model("dinov2"))
    assert set(facts["layer_blocks"].values()) == {0, 1}
    table = projection_table(record_counts(facts), record_blocks(facts))
    assert [row["layer"] for row in table["rows"]] == [0, 1]
    assert len(table["columns"]) == 6  # q, k, v, output, fc1, fc2 of each layer
    card = unstructured_card({**facts, "title": "t", "source": "s", "auto_class": "AutoModelForImageClassification"},
                             VisionEncoderAdapter()).render()
    assert "| 0 |" in card and "| 1 |" in card and "from transformers import AutoModelForImageClassification" in card


def test_rows_follow_the_recorded_block_not_the_first_index_in_the_name():
    """A model wrapped in an nn.Sequential: every name starts with ``0.``, the blocks are its encoder layers."""
    wrapped = nn.Sequential(tiny_model("dinov2"))
    facts = facts_of(wrapped, "ump", targets=r"0\..*\.layer\.\d+\..*")
    assert all(name.startswith("0.") for name in facts["layer_sparsity"])
    table = projection_table(record_counts(facts), record_blocks(facts))
    assert [row["layer"] for row in table["rows"]] == [0, 1]
    report = sparsity_by_layer([{**facts, "mask_id": "ump"}])
    assert [row["layer"] for row in report["rows"]] == ["0.dinov2.encoder.layer.0", "0.dinov2.encoder.layer.1"]


def test_records_without_blocks_group_by_layers_n_as_before():
    counts = {f"model.language_model.layers.{layer}.self_attn.{name}.weight": (layer + 1, 8)
              for layer in range(2) for name in ("q_proj", "k_proj")}
    record = {**sparsity_facts(counts), "mask_id": "ump"}
    assert "layer_blocks" not in record
    assert [row["layer"] for row in sparsity_by_layer([record])["rows"]] == \
        ["model.language_model.layers.0", "model.language_model.layers.1"]
    table = projection_table(record_counts(record))
    assert table["columns"] == ["q_proj", "k_proj"] and [row["layer"] for row in table["rows"]] == [0, 1]
    assert table["rows"][1]["q_proj"] == 2 / 8


def test_projections_whose_last_names_repeat_are_named_inside_their_block():
    counts = {f"vit.encoder.layer.{layer}.{name}.weight": (1, 4) for layer in range(2)
              for name in ("attention.output.dense", "intermediate.dense", "output.dense")}
    blocks = {name: int(name.split(".")[3]) for name in counts}
    table = projection_table(counts, blocks)
    assert table["columns"] == ["attention.output.dense", "intermediate.dense", "output.dense"]
    assert [row["layer"] for row in table["rows"]] == [0, 1]


def test_a_target_outside_every_block_is_its_own_row():
    counts = {"model.language_model.layers.0.mlp.fc1.weight": (1, 4), "model.multi_modal_projector.linear_1.weight":
              (2, 4)}
    table = projection_table(counts, {"model.language_model.layers.0.mlp.fc1.weight": 0,
                                      "model.multi_modal_projector.linear_1.weight": None})
    assert [row["layer"] for row in table["rows"]] == [0, "model.multi_modal_projector.linear_1.weight"]
