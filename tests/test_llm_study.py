"""The shipped oracle study of a decoder LLM (recipes/llm_stdlib_oracle.yaml), end to end at a tiny size and offline:
a Llama pretrained here on the Python standard library's sources with a byte-level tokenizer, pruned by each of the
recipe's unstructured methods, retrained through LoRA (merged, zeros kept), reported with Kendall tau; a killed run
resumes without loss or repeats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfprune.records.store import read_trials
from hfprune.study.registry import parse_recipe, report_study
from hfprune.study.runner import run_study
from study_helpers import kill_after_records
from waiting import patience

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "llm_stdlib_oracle.yaml"
NUMBERS = ("pruned_train_loss", "pruned_test_acc", "final_test_loss", "final_test_acc", "final_test_perplexity")


def llm_recipe() -> dict:
    """The shipped recipe at a tiny size (byte tokenizer, 2 layers of width 16, 96 blocks of 32 tokens), every
    method of it, recovered with LoRA."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"]["config"].update(vocab_size=257, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                     bos_token_id=256, eos_token_id=256, pad_token_id=256)
    recipe["data"].update(max_length=32, train_limit=96, test_limit=16,
                          text={"tokenizer": "byte", "documents": 6, "test_fraction": 0.34})
    recipe["pretrain"].update(epochs=2, optimizer={"name": "adamw", "lr": 1e-2})
    recipe["pruning"]["calibration_samples"] = 8
    recipe["retrain"]["lora"] = {"r": 4, "alpha": 8}
    recipe["evaluation"].update(loss_samples=32)
    recipe["report"] = {"plots": False}
    return recipe


METHODS = [m if isinstance(m, str) else m.get("label", m["name"]) for m in llm_recipe()["pruning"]["methods"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llm_study")
    result = run_study(parse_recipe(llm_recipe()), directory, progress=False)
    report_study(directory, plots=False)  # as `hfprune run` does after the trials
    return directory, result


def test_the_llm_study_runs_end_to_end(reference):
    directory, result = reference
    records = result.records
    assert result.trials_total == len(records) == len(METHODS) == 8 and {r["mask_id"] for r in records} == set(METHODS)
    for record in records:
        assert record["mask_violations"] == 0 and record["sparsity"] == pytest.approx(0.5, abs=1e-3)
        assert all(record[key] is not None for key in NUMBERS)
        assert record["higher_is_better"]["final_test_acc"] is True
        assert record["higher_is_better"]["final_test_perplexity"] is False
    report = json.loads((directory / "report.json").read_text())
    taus = [r for r in report["results"] if (r["x"], r["y"]) == ("pruned_train_loss", "final_test_acc")]
    assert taus and "kendall_tau" in taus[0]
    assert (directory / "dense" / "config.json").is_file()
    best = directory / "best"
    model = AutoModelForCausalLM.from_pretrained(best)  # plain transformers, its tokenizer beside it
    tokenizer = AutoTokenizer.from_pretrained(best)
    assert len(tokenizer) == 257 and tokenizer.decode(tokenizer("x = 1")["input_ids"]) == "x = 1"
    weights = [module.weight for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and ".layers." in name]
    zeros = sum(int((weight == 0).sum()) for weight in weights) / sum(weight.numel() for weight in weights)
    assert zeros == pytest.approx(0.5, abs=1e-3), "LoRA merged into the pruned weights keeps their zeros"
    assert "best trial by final_test_loss, measured on the test split" in (best / "README.md").read_text()


@pytest.mark.slow
def test_a_killed_llm_study_resumes_without_loss_or_repeats(reference, tmp_path):
    recipe = tmp_path / "llm.yaml"
    recipe.write_text(yaml.safe_dump(llm_recipe()))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress"]
    done_at_kill = kill_after_records(command, out, 2, idle_seconds=300)
    assert 2 <= done_at_kill < 8
    finished = subprocess.run(command, capture_output=True, text=True, timeout=patience(90))
    assert finished.returncode == 0, finished.stderr
    assert f"{8 - done_at_kill} trials run, 8 in the study" in finished.stdout
    ids = [json.loads(line)["trial_id"] for line in (out / "trials.jsonl").read_text().splitlines() if line.strip()]
    assert len(ids) == len(set(ids)) == 8, "a trial was repeated or lost"
    expected = {record["trial_id"]: record for record in reference[1].records}
    for record in read_trials(out):
        for key in NUMBERS:
            assert record[key] == pytest.approx(expected[record["trial_id"]][key], abs=1e-6), (record["trial_id"], key)


STRUCTURED = RECIPE.with_name("llm_stdlib_structured_oracle.yaml")


def structured_recipe() -> dict:
    """The shipped structured recipe at a tiny size: 2 layers of 4 query heads in 2 key/value groups, two random masks
    of key/value groups and of FFN neurons, both one-layer masks."""
    recipe = yaml.safe_load(STRUCTURED.read_text())
    tiny = llm_recipe()
    recipe["model"]["config"].update(tiny["model"]["config"], num_attention_heads=4, num_key_value_heads=2)
    for section in ("data", "pretrain", "evaluation", "report"):
        recipe[section] = tiny[section]
    ratios = [setting["ratios"] for setting in recipe["pruning"]["settings"]]
    assert ratios == [{"kv_groups": 0.5}, {"ffn": 0.5}, {"layers": 0.25}], "the shipped settings changed"
    recipe["pruning"]["settings"] = [{"ratios": {"kv_groups": 0.5}, "candidates": {"mode": "random", "num": 2}},
                                     {"ratios": {"ffn": 0.5}, "candidates": {"mode": "random", "num": 2}},
                                     {"ratios": {"layers": 0.5}, "candidates": {"mode": "exhaustive"}}]
    return recipe


def test_the_structured_llm_study_retrains_smaller_models_that_plain_transformers_loads(tmp_path):
    result = run_study(parse_recipe(structured_recipe()), tmp_path, progress=False)
    report_study(tmp_path, plots=False)
    records = result.records
    by_setting = {}
    for record in records:
        by_setting.setdefault(record["setting"], []).append(record)
        assert record["mask_violations"] == 0 and record["retrain_form"] == "physical"
        assert all(record[key] is not None for key in NUMBERS)
    assert {setting: len(group) for setting, group in by_setting.items()} == \
        {"kv_groups@0.5": 2, "ffn@0.5": 2, "layers@0.5": 2}
    assert sorted(json.dumps(r["mask"], sort_keys=True) for r in by_setting["layers@0.5"]) == \
        ['{"layers": [0]}', '{"layers": [1]}'], "exhaustive: each of the two layers removed once"
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense")
    dense_parameters = sum(parameter.numel() for parameter in dense.parameters())
    assert all(record["retrain_params"] < dense_parameters for record in records)
    report = json.loads((tmp_path / "report.json").read_text())
    taus = {r["setting"] for r in report["results"] if (r["x"], r["y"]) == ("pruned_train_loss", "final_test_loss")}
    assert taus == set(by_setting)
    best = json.loads((tmp_path / "best.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "best")  # native: no remote code
    config, setting = model.config, next(r["setting"] for r in records if r["trial_id"] == best["trial_id"])
    shrunk = {"kv_groups@0.5": config.num_key_value_heads == 1, "ffn@0.5": config.intermediate_size == 16,
              "layers@0.5": config.num_hidden_layers == 1}
    assert shrunk[setting] and sum(shrunk.values()) == 1
    card = (tmp_path / "best" / "README.md").read_text()
    assert "measured on the test split" in card and "Kept units per group" in card
    assert sum(p.numel() for p in model.parameters()) < dense_parameters
