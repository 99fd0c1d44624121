"""Studies on any vision-language model: the shipped VLM recipes (real Hub ids) validate, and a study of one runs end
to end on a tiny Qwen2.5-VL saved with its processor — conversations rendered with its chat template, a calibrated
method among the trials, retrained, POPE answered, reported."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark_fixtures import write_fixture
from llava_fixtures import write_llava_fixture
from tiny_models import ARCHITECTURES
from tiny_processors import save_checkpoint
from hfprune.records.store import read_trials
from hfprune.study.registry import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
VLM_RECIPES = {"qwen2_5_vl_compare": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl"),
               "smolvlm_compare": ("HuggingFaceTB/SmolVLM-Instruct", "idefics3")}


@pytest.mark.parametrize("name", VLM_RECIPES)
def test_vlm_recipes_name_hub_models_and_validate(name):
    hub_id, architecture = VLM_RECIPES[name]
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.model.family == "vision_language" and recipe.model.pretrained == hub_id
    assert "Needs the model's weights" in recipe.description
    assert {method.name for method in recipe.pruning.methods} >= {"ump", "wanda", "sparsegpt"}
    # the recipe freezes the vision tower of that architecture, and nothing of its language model
    names = [name for name, _ in ARCHITECTURES[architecture].build().named_parameters()]
    frozen = [name for name in names if any(re.fullmatch(pattern, name) for pattern in recipe.retrain.freeze)]
    assert frozen and not any(".language_model." in name or ".text_model." in name or name.startswith("lm_head")
                              for name in frozen)


def environment():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_study_of_a_generic_vlm_runs_end_to_end(tmp_path):
    json_path, image_root = write_llava_fixture(tmp_path / "llava", n=8)
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    write_fixture("pope", tmp_path).rename(benchmarks / "pope")
    model = save_checkpoint("qwen2_5_vl", tmp_path / "dense")
    recipe = yaml.safe_load((RECIPES / "qwen2_5_vl_compare.yaml").read_text())
    recipe["model"].update(pretrained=str(model))
    recipe["data"].update(path=str(json_path), image_root=str(image_root), max_length=256, test_limit=2)
    recipe["pruning"].update(methods=["ump", "wanda"], calibration_samples=4)
    recipe["retrain"].update(epochs=1, batch_size=4, mixed_precision="no", gradient_checkpointing=False,
                             optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.0})
    recipe["evaluation"].update(batch_size=4, loss_samples=4, benchmarks=["pope"], benchmark_data_dir=str(benchmarks),
                                benchmark_limit=6, max_new_tokens=3)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = subprocess.run([sys.executable, "-m", "hfprune", "run", str(path), "--out", str(tmp_path / "study"),
                             "--no-progress"], capture_output=True, text=True, env=environment(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {record["method"]: record for record in read_trials(tmp_path / "study")}
    assert sorted(records) == ["ump", "wanda"]
    for record in records.values():
        layers = record["layer_sparsity"]
        assert len(layers) == 3 * 7 and all(name.startswith("model.language_model.layers.") for name in layers)
        assert record["sparsity"] == pytest.approx(0.5) and record["mask_violations"] == 0
        assert record["pruned_train_loss"] > 0 and 0 <= record["final_test_pope_score"] <= 100
    report = (tmp_path / "study" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| model.language_model.layers.")]
    assert len(rows) == 3  # one row per decoder layer, a column per method
    best = tmp_path / "study" / "best"
    assert (best / "processor_config.json").is_file() and (best / "chat_template.jinja").is_file()
    assert "AutoModelForImageTextToText.from_pretrained" in (best / "README.md").read_text()
