"""The eight-method TinyLLaVA study (``recipes/tinyllava_compare8.yaml``: UMP, GMP, ONP, PNP, Wanda, OWL over Wanda,
SparseGPT, GMP over Wanda's score) through ``hfprune run`` on a tiny random LLaVA, and a SparseGPT trial that starts
from SparseGPT's updated weights."""

import copy
import json

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava_study_helpers import llava_setup, tiny_llava_recipe, write_llava_recipe
from test_llava_study import hfprune_run, is_target
from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned
from hfprune.records.store import read_trials

METHODS = ["gmp", "gmp_wanda", "onp", "owl", "pnp", "sparsegpt", "ump", "wanda"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return llava_setup(tmp_path_factory.mktemp("llava_compare8"))


@pytest.mark.slow
def test_a_study_of_all_eight_methods_runs_through_hfprune_run(setup, tmp_path):
    recipe = write_llava_recipe(tmp_path, "tinyllava_compare8", setup, pruning={"calibration_samples": 4})
    result = hfprune_run(recipe, tmp_path / "study")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 trials run, 8 in the study" in result.stdout
    records = {record["mask_id"]: record for record in read_trials(tmp_path / "study")}
    assert sorted(records) == METHODS
    for mask_id, record in records.items():
        assert record["mask_violations"] == 0 and record["pruned_train_loss"] > 0, mask_id
        assert len(record["layer_sparsity"]) == 12 and 0 <= record["final_test_pope_score"] <= 100
    weights = records["ump"]["layer_weights"]
    for method in ("wanda", "sparsegpt"):  # uniform: every Linear at S (per row for Wanda)
        for name, sparsity in records[method]["layer_sparsity"].items():
            assert round(sparsity * weights[name]) == num_pruned(weights[name], 0.4375), (method, name)
    assert records["gmp_wanda"]["method"] == "gmp" and records["gmp_wanda"]["method_options"]["prune_score"] == "activation"
    assert records["gmp_wanda"]["layer_sparsity"] != records["gmp"]["layer_sparsity"]  # another score, one threshold
    assert records["owl"]["layer_sparsity"] != records["onp"]["layer_sparsity"]  # outliers of |w|·‖x‖ vs of |w|
    report = json.loads((tmp_path / "study" / "report.json").read_text())
    pope = next(row for row in report["results"] if row["y"] == "final_test_pope_score")
    assert pope["n"] == 8  # 28 pairs behind the counterexample ratio
    card = (tmp_path / "study" / "checkpoints" / "sparsity@0.4375_sparsegpt_r0" / "README.md").read_text()
    assert "method: `sparsegpt`" in card
    LlavaForConditionalGeneration.from_pretrained(tmp_path / "study" / "checkpoints" / "sparsity@0.4375_sparsegpt_r0")


def test_a_sparsegpt_trial_measures_and_retrains_the_updated_weights(setup):
    from hfprune.study.oracle.plan import UnstructuredPlan
    from hfprune.study.tasks import build_task
    from hfprune.study.oracle.trial import run_trial

    recipe = parse_recipe(tiny_llava_recipe("tinyllava_compare8", setup, evaluation={"benchmarks": []},
                                            pruning={"calibration_samples": 4}, retrain={"epochs": 0}))
    task = build_task(recipe, progress=False)
    plan = UnstructuredPlan(recipe, task)
    spec = next(spec for spec in plan.trials() if spec.candidate.mask_id == "sparsegpt")
    dense = LlavaForConditionalGeneration.from_pretrained(setup["model"]).eval()
    record, model = run_trial(spec, dense, plan.masks, task, recipe.retrain, recipe.seed, progress=False)

    expected = copy.deepcopy(dense)  # SparseGPT on the same calibration conversations, by hand
    result = spec.candidate.method.masks(expected, 0.4375, calibration=task.calibration_batches())
    masked = copy.deepcopy(dense)
    result.apply(masked)  # the dense weights under the same masks, without SparseGPT's updates
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, expected.get_parameter(name)), name
    updated = [name for name in result.masks if not torch.equal(model.get_parameter(name), masked.get_parameter(name))]
    assert updated and all(is_target(name) for name in updated)
    assert record.metrics["pruned_train_loss"] == task.evaluate(expected, "train")["loss"]
    assert record.metrics["pruned_train_loss"] != task.evaluate(masked, "train")["loss"]
    removed = sum(float(dense.get_parameter(name).detach().abs()[~mask].sum()) for name, mask in result.masks.items())
    assert record.metrics["pruned_l1"] == pytest.approx(removed)  # the dense weights the masks remove


def test_a_pattern_that_does_not_fit_the_study_sparsity_fails_when_the_recipe_loads(setup):
    methods = ["ump", {"name": "wanda", "granularity": "2:4", "label": "wanda_2of4"}]
    with pytest.raises(HfpruneError, match=r"wanda_2of4: pattern 2:4 prunes exactly 0.5.*set the sparsity to 0.5"):
        parse_recipe(tiny_llava_recipe("tinyllava_compare8", setup, pruning={"methods": methods}))
    recipe = parse_recipe(tiny_llava_recipe("tinyllava_compare8", setup, pruning={"methods": methods,
                                                                                  "sparsity": 0.5}))
    assert [method.pattern for method in recipe.pruning.methods] == [None, "2:4"]
