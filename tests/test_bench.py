"""``hfprune bench`` on two tiny checkpoints: every figure is reported, the counts follow from the shapes (a smaller
model has fewer parameters and MACs), ratios are to the first model, and bad input is one line. No timing is
asserted (speed is measured in benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.errors import HfpruneError
from hfprune.evaluation.speed import BenchSettings, attention_macs, bench

HIDDEN, HEADS, HEAD_DIM, VOCAB = 32, 4, 8, 96
SETTINGS = BenchSettings(batch_size=2, prompt_length=6, new_tokens=3, repeats=2, warmup=1)


def _config(intermediate: int, kv_heads: int, layers: int) -> tf.LlamaConfig:
    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=kv_heads,
                          max_position_embeddings=64)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A dense tiny Llama and the one uniform structured pruning leaves: half the FFN, one of two KV groups
    (with its query heads), one layer fewer."""
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    tf.LlamaForCausalLM(_config(64, 2, 3)).save_pretrained(root / "dense")
    torch.manual_seed(0)
    pruned = _config(32, 1, 2)
    pruned.num_attention_heads, pruned.head_dim = 2, HEAD_DIM
    tf.LlamaForCausalLM(pruned).save_pretrained(root / "pruned")
    return root / "dense", root / "pruned"


def _linear_macs(layers: int, q_width: int, kv_width: int, intermediate: int) -> int:
    """Every Linear's in × out per position: decoder Linears see all 2 × (6 + 3) positions, the LM head only the
    last position of each forward (the prefill and 3 decode steps)."""
    per_layer = HIDDEN * q_width + 2 * HIDDEN * kv_width + q_width * HIDDEN + 3 * HIDDEN * intermediate
    positions = SETTINGS.batch_size * (SETTINGS.prompt_length + SETTINGS.new_tokens)
    return layers * per_layer * positions + HIDDEN * VOCAB * SETTINGS.batch_size * (1 + SETTINGS.new_tokens)


def test_bench_reports_every_figure_of_every_model(checkpoints):
    dense, pruned = checkpoints
    result = bench([str(dense), str(pruned)], SETTINGS)
    first, second = result["models"]
    assert [first["name"], second["name"]] == ["dense", "pruned"]
    for row in result["models"]:
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0 and row["latency_ms_per_token"] > 0
        assert len(row["prefill_s"]) == len(row["decode_s"]) == SETTINGS.repeats
        assert row["peak_memory_mib"] >= row["weights_mib"] > 0
    # parameters from the shapes
    decoder = 3 * (HIDDEN * 32 * 2 + HIDDEN * 16 * 2 + 3 * HIDDEN * 64 + 2 * HIDDEN)
    assert first["decoder_parameters"] == decoder and first["layers"] == 3
    assert first["parameters"] == decoder + 2 * VOCAB * HIDDEN + HIDDEN
    assert second["parameters"] < first["parameters"] and second["decoder_parameters"] < first["decoder_parameters"]
    # MACs: the Linears (by definition) plus QK^T and AV over the causal context
    context = 6 * 7 // 2 + sum(6 + step for step in range(1, 4))
    assert attention_macs([32, 32, 32], 2, 6, 3) == 2 * 2 * context * 96
    assert first["macs"] == _linear_macs(3, 32, 16, 64) + attention_macs([32] * 3, 2, 6, 3)
    assert second["macs"] == _linear_macs(2, 16, 8, 32) + attention_macs([16] * 2, 2, 6, 3)
    assert first["macs_per_token"] == pytest.approx(first["macs"] / (2 * 9))
    # the KV cache after a run: keys and values of every layer, every position, float32
    assert first["kv_cache_mib"] * 2 ** 20 == 2 * 3 * 2 * 2 * HEAD_DIM * (6 + 3) * 4
    relative = result["relative"]
    assert relative[0]["parameters"] == relative[0]["decode_tokens_per_s"] == 1.0
    assert relative[1]["macs"] == pytest.approx(second["macs"] / first["macs"])
    assert relative[1]["decode_tokens_per_s"] == pytest.approx(second["decode_tokens_per_s"]
                                                               / first["decode_tokens_per_s"])
    assert result["settings"]["batch_size"] == 2 and result["settings"]["vocabulary_used"] == VOCAB


def test_the_command_prints_json_and_tables(checkpoints):
    dense, pruned = checkpoints
    args = ["bench", str(dense), str(pruned), "--prompt-length", "4", "--new-tokens", "2", "--repeats", "1",
            "--warmup", "0", "--no-progress"]
    printed = CliRunner().invoke(app, [*args, "--json", "-"])
    assert printed.exit_code == 0, printed.output
    data = json.loads(printed.output)
    assert [row["name"] for row in data["models"]] == ["dense", "pruned"] and data["settings"]["new_tokens"] == 2
    table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "decode tok/s" in table.output and "relative to dense" in table.output


@pytest.mark.parametrize("change, expected", [
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"dtype": "float8"}, "--dtype 'float8'"),
    ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nonsense"}, "--device"),
])
def test_bad_settings_are_one_line_before_loading(checkpoints, change, expected):
    settings = BenchSettings(**{**vars(SETTINGS), **change})
    with pytest.raises(HfpruneError, match=expected.replace("(", r"\(")):
        bench([str(checkpoints[0])], settings)


def test_a_missing_model_is_named(tmp_path, checkpoints):
    with pytest.raises(HfpruneError, match="not found"):
        bench([str(checkpoints[0]), str(tmp_path / "nope")], SETTINGS)
