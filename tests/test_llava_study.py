"""A TinyLLaVA study as a user runs it: ``hfprune run`` on the shipped recipes (UMP, GMP, ONP, PNP at 0.4375),
on a tiny random LLaVA, LLaVA-1.5-format conversations and a POPE fixture; resumed; exported; reported."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from launchers import cpu_ddp_environment, torchrun
from llava_study_helpers import llava_setup, tiny_llava_recipe, write_llava_recipe
from hfprune.errors import HfpruneError
from hfprune.records.store import read_trials
from hfprune.study.registry import parse_recipe
from waiting import patience

TARGET = ("model.language_model.layers.", (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".dense.weight",
                                           ".fc1.weight", ".fc2.weight"))


def is_target(name: str) -> bool:
    return name.startswith(TARGET[0]) and name.endswith(TARGET[1])


def environment():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def hfprune_run(recipe, out):
    return subprocess.run([sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=environment(), timeout=patience(600))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return llava_setup(tmp_path_factory.mktemp("llava_study"))


@pytest.fixture(scope="module")
def compare_study(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    recipe = write_llava_recipe(root, "tinyllava_compare", setup)
    result = hfprune_run(recipe, root / "study")
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, root / "study", result


def test_compare_study_prunes_retrains_and_scores_every_method(compare_study):
    _, study, result = compare_study
    records = {record["method"]: record for record in read_trials(study)}
    assert sorted(records) == ["gmp", "onp", "pnp", "ump"]
    manifest = json.loads((study / "study.json").read_text())
    assert "train_loss" in manifest["dense"] and "test_pope_score" in manifest["dense"]
    for method, record in records.items():
        layers = record["layer_sparsity"]
        assert len(layers) == 12 and all(is_target(name) for name in layers)  # 2 layers x q, k, v, dense, fc1, fc2
        assert abs(record["sparsity"] - 0.4375) * record["target_weights"] <= len(layers)  # ±1 weight per layer
        assert record["mask_violations"] == 0
        assert record["pruned_train_tokens"] > 0 and record["pruned_train_loss"] > 0
        assert 0 <= record["final_test_pope_score"] <= 100 and "final_test_loss" in record
    uniform, global_ = (set(records[m]["layer_sparsity"].values()) for m in ("ump", "gmp"))
    assert max(uniform) - min(uniform) < 0.01 < max(global_) - min(global_)  # each method allocated its own way
    spread = records["onp"]["layer_sparsity"].values()
    assert 0.4375 - 0.08 - 0.01 <= min(spread) < max(spread) <= 0.4375 + 0.08 + 0.01
    assert "4 trials run, 4 in the study" in result.stdout


def test_exported_checkpoints_load_with_plain_transformers_and_keep_their_sparsity(compare_study, setup):
    _, study, _ = compare_study
    dense = dict(LlavaForConditionalGeneration.from_pretrained(setup["model"]).named_parameters())
    for record in read_trials(study):
        folder = study / "checkpoints" / record["trial_id"].replace(":", "_")
        model = LlavaForConditionalGeneration.from_pretrained(folder)
        LlavaProcessor.from_pretrained(folder)
        weights = {name: param for name, param in model.named_parameters() if is_target(name)}
        zeros = sum(int((param == 0).sum()) for param in weights.values())
        assert zeros == round(record["sparsity"] * record["target_weights"])
        retrained = dict(model.named_parameters())
        tower = [name for name in retrained if name.startswith("model.vision_tower.")]
        assert tower and all(torch.equal(retrained[name], dense[name]) for name in tower)  # retrain.freeze
        assert not torch.equal(retrained["model.multi_modal_projector.linear_1.weight"],
                               dense["model.multi_modal_projector.linear_1.weight"])  # the rest was retrained
        card = (folder / "README.md").read_text()
        assert f"method: `{record['method']}`" in card and "## Sparsity per layer" in card
        assert "pruned_train_loss" in card and "final_test_pope_score" in card


def test_report_gives_counterexample_ratios_per_benchmark(compare_study):
    _, study, _ = compare_study
    report = json.loads((study / "report.json").read_text())
    pairs = {(pair["x"], pair["y"]) for pair in report["pairs"]}
    assert ("pruned_train_loss", "final_test_pope_score") in pairs
    assert ("pruned_train_loss", "final_test_mean_score") in pairs
    pope = next(result for result in report["results"] if result["y"] == "final_test_pope_score")
    assert pope["n"] == 4 and 0 <= pope["counterexample_ratio"] <= 1
    markdown = (study / "report.md").read_text()
    assert "final_test_pope_score" in markdown and "| layer | ump | gmp | onp | pnp |" in markdown
    table = report["sparsity"]
    assert [row["layer"] for row in table["rows"]] == ["model.language_model.layers.0", "model.language_model.layers.1"]
    assert all(abs(row["ump"] - 0.4375) < 0.01 for row in table["rows"])  # uniform: every layer at S


def test_rerun_resumes_without_repeating_a_trial(compare_study):
    recipe, study, _ = compare_study
    before = (study / "trials.jsonl").read_text()
    result = hfprune_run(recipe, study)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 trials run, 4 in the study" in result.stdout
    assert (study / "trials.jsonl").read_text() == before


def test_single_method_recipes_validate_and_describe_one_method(setup):
    for method in ("ump", "gmp", "onp", "pnp"):
        recipe = parse_recipe(tiny_llava_recipe(f"tinyllava_{method}", setup))
        assert [m.name for m in recipe.pruning.methods] == [method] and recipe.pruning.sparsity == 0.4375


@pytest.mark.parametrize("change, message", [
    ({"pruning": {"methods": []}}, "needs methods"),
    ({"pruning": {"settings": [{"ratios": {"conv1": 0.5}}]}}, "not settings"),
    ({"pruning": {"sparsity": 1.2}}, "pruning.sparsity"),
    ({"pruning": {"methods": ["ump", "magnitude"]}}, "pruning.methods"),
    ({"data": {"dataset": "mnist_sample"}}, "instruction dataset"),
    ({"data": {"image_root": None}}, "data.image_root"),
])
def test_bad_unstructured_recipes_name_the_field(setup, change, message):
    with pytest.raises(HfpruneError, match=message):
        parse_recipe(tiny_llava_recipe("tinyllava_compare", setup, **change))


def test_structured_recipes_refuse_unstructured_fields():
    from study_helpers import tiny_recipe

    with pytest.raises(HfpruneError, match="sparsity apply to structure: unstructured only"):
        parse_recipe(tiny_recipe(pruning={"settings": [{"ratios": {"conv1": 0.5}}], "sparsity": 0.5}))


def test_single_method_study_exports_its_best_model_and_pushes_it(setup, tmp_path, monkeypatch):
    import huggingface_hub
    from typer.testing import CliRunner

    from hfprune.cli import app

    uploads = []
    hub = type("Hub", (), {"create_repo": lambda self, repo_id, **kw: None,
                           "upload_folder": lambda self, **kw: uploads.append(kw)})()
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_SECRET")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *args, **kwargs: hub)
    recipe = write_llava_recipe(tmp_path, "tinyllava_pnp", setup, export={"push_to_hub": "me/tinyllava-pnp"},
                                evaluation={"benchmarks": []})
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "study"), "--no-progress"])
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "study" / "best.json").read_text())
    assert best["trial_id"] == "sparsity@0.4375:pnp:r0" and best["metric"] == "final_test_loss"
    assert [upload["folder_path"] for upload in uploads] == [str(tmp_path / "study" / "best")]
    assert "pushed" in result.output and "hf_SECRET" not in result.output
    LlavaForConditionalGeneration.from_pretrained(tmp_path / "study" / "best")


def test_push_to_hub_needs_the_best_checkpoint(setup):
    with pytest.raises(HfpruneError, match="set checkpoints: best"):
        parse_recipe(tiny_llava_recipe("tinyllava_compare", setup, export={"push_to_hub": "me/x"}))


def test_two_processes_run_a_llava_study_data_parallel(setup, compare_study, tmp_path):
    """torchrun with 2 CPU processes: DDP over text-only and image batches (unused parameters), the pruned train
    loss and the benchmark answers split between the processes and gathered, one record."""
    recipe = write_llava_recipe(tmp_path, "tinyllava_gmp", setup, export={"checkpoints": "none"})
    command = torchrun("-m", "hfprune", "run", str(recipe), "--out", str(tmp_path / "study"), "--no-progress")
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(600), env=cpu_ddp_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = read_trials(tmp_path / "study")
    assert record["method"] == "gmp" and record["mask_violations"] == 0 and "final_test_pope_score" in record
    assert json.loads((tmp_path / "study" / "study.json").read_text())["processes"] == 2
    pope = tmp_path / "study" / "trials" / "sparsity@0.4375_gmp_r0" / "pope"
    assert len((pope / "predictions.jsonl").read_text().splitlines()) == 6 and not list(pope.glob("*rank*"))
    single = next(r for r in read_trials(compare_study[1]) if r["method"] == "gmp")  # the same mask, 1 process
    assert record["pruned_train_tokens"] == single["pruned_train_tokens"]
    assert record["pruned_train_loss"] == pytest.approx(single["pruned_train_loss"], rel=1e-6)  # fp32 batches differ


def test_missing_images_of_the_samples_used_are_named_before_any_work(setup, tmp_path):
    import shutil

    from hfprune.study.tasks import build_task

    images = tmp_path / "images"
    shutil.copytree(setup["images"], images)
    missing = next(images.rglob("*.jpg"))
    missing.unlink()
    recipe = parse_recipe(tiny_llava_recipe("tinyllava_ump", setup, data={"image_root": str(images)}))
    with pytest.raises(HfpruneError, match=missing.name):
        build_task(recipe, progress=False)
    subset = parse_recipe(tiny_llava_recipe("tinyllava_ump", setup, data={"image_root": str(images), "train_limit": 2,
                                                                          "test_limit": None}))
    task = build_task(subset, progress=False)  # a subset that does not use the missing image loads
    assert len(task.train_set) == 2


def test_a_kill_during_the_final_evaluation_resumes_without_retraining(setup, tmp_path, monkeypatch):
    from hfprune.study.oracle import trial
    from hfprune.study.tasks import vision_language as vl_task
    from hfprune.study.runner import run_study

    recipe = parse_recipe(tiny_llava_recipe("tinyllava_ump", setup, export={"checkpoints": "none"}))
    reference = run_study(recipe, tmp_path / "reference", progress=False).records
    trainings, real_train = [], trial.train
    monkeypatch.setattr(trial, "train", lambda *args, **kwargs: trainings.append(1) or real_train(*args, **kwargs))
    real_scores = vl_task.VisionLanguageTask._benchmark_scores

    def killed_in_a_trial(self, model, workdir):
        if "trials" in str(workdir):
            raise KeyboardInterrupt
        return real_scores(self, model, workdir)

    monkeypatch.setattr(vl_task.VisionLanguageTask, "_benchmark_scores", killed_in_a_trial)
    with pytest.raises(KeyboardInterrupt):
        run_study(recipe, tmp_path / "killed", progress=False)
    retrained = tmp_path / "killed" / "trials" / "sparsity@0.4375_ump_r0" / "retrained"
    assert trainings == [1] and (retrained / "trial.json").is_file()

    monkeypatch.setattr(vl_task.VisionLanguageTask, "_benchmark_scores", real_scores)
    resumed = run_study(recipe, tmp_path / "killed", progress=False).records
    assert trainings == [1], "the retrained model was reused, not trained again"
    assert not retrained.exists(), "removed once the trial is recorded"
    drop = lambda record: {key: value for key, value in record.items() if key != "timings"}  # noqa: E731
    assert [drop(record) for record in resumed] == [drop(record) for record in reference]


def test_onp_with_activation_scores_reads_the_calibration_conversations(setup, compare_study, tmp_path):
    from hfprune.study.runner import run_study

    recipe = parse_recipe(tiny_llava_recipe("tinyllava_onp", setup, evaluation={"benchmarks": []},
                                            pruning={"methods": [{"name": "onp", "score": "activation"}], "calibration_samples": 4}))
    (record,) = run_study(recipe, tmp_path / "study", progress=False).records
    by_weight = next(r for r in read_trials(compare_study[1]) if r["method"] == "onp")
    assert abs(record["sparsity"] - 0.4375) * record["target_weights"] <= len(record["layer_sparsity"])
    assert record["layer_sparsity"] != by_weight["layer_sparsity"]  # |w|·‖x‖ allocates differently from |w|
