"""The study runner end to end: records, resumability, determinism, checkpoints, report."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForImageClassification

from hfprune.errors import HfpruneError
from hfprune.study.registry import parse_recipe
from hfprune.records.store import read_trials
from hfprune.study.runner import run_study
from launchers import cpu_ddp_environment, torchrun
from study_helpers import kill_after_records, tiny_recipe, write_recipe
from waiting import patience

NUMBERS = ("pruned_train_loss", "pruned_train_acc", "short_test_acc", "final_test_acc", "final_test_loss")


def _by_id(records):
    return {record["trial_id"]: record for record in records}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny study."""
    directory = tmp_path_factory.mktemp("reference")
    result = run_study(parse_recipe(tiny_recipe()), directory, progress=False)
    return directory, result


def test_a_study_records_every_planned_trial(reference):
    directory, result = reference
    records = result.records
    assert result.trials_total == len(records) == 12
    assert {r["setting"] for r in records} == {"conv1@0.8", "conv2@0.5+conv3@0.5"}
    for record in records:
        assert record["mask_violations"] == 0
        assert all(record[key] is not None for key in NUMBERS)
        assert record["final_test_acc"] > record["pruned_test_acc"], "retraining should recover accuracy"
    conv1 = [r for r in records if r["setting"] == "conv1@0.8"]
    assert all(len(r["mask"]["conv1"]) == 2 for r in conv1)
    manifest = json.loads((directory / "study.json").read_text())
    assert manifest["dense"]["test_acc"] > 0.5 and manifest["trials_planned"] == 12


def test_best_checkpoint_loads_with_plain_transformers(reference):
    directory, result = reference
    best = json.loads((directory / "best.json").read_text())
    assert best["final_test_acc"] == max(r["final_test_acc"] for r in result.records)
    model = AutoModelForImageClassification.from_pretrained(directory / "best", trust_remote_code=True)
    record = _by_id(result.records)[best["trial_id"]]
    expected = [len(record["mask"].get(name, range(10))) for name in ("conv1", "conv2", "conv3")]
    assert model.config.conv_filters == expected


def test_rerunning_a_finished_study_runs_nothing(reference):
    directory, _ = reference
    before = (directory / "trials.jsonl").read_text()
    again = run_study(parse_recipe(tiny_recipe()), directory, progress=False)
    assert again.trials_run == 0
    assert (directory / "trials.jsonl").read_text() == before


def test_crash_mid_study_then_resume_matches_uninterrupted_run(reference, tmp_path, monkeypatch):
    import hfprune.study.oracle.context as study

    real_run_trial, calls = study.run_trial, []

    def crashing(*args, **kwargs):
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return real_run_trial(*args, **kwargs)

    monkeypatch.setattr(study, "run_trial", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(parse_recipe(tiny_recipe()), tmp_path, progress=False)
    assert len(read_trials(tmp_path)) == 5
    monkeypatch.setattr(study, "run_trial", real_run_trial)
    resumed = run_study(parse_recipe(tiny_recipe()), tmp_path, progress=False)
    assert resumed.trials_run == 7
    _assert_same_results(resumed.records, reference[1].records)


def _assert_same_results(records, reference_records):
    got, expected = _by_id(records), _by_id(reference_records)
    assert sorted(got) == sorted(expected)
    for trial_id, record in got.items():
        for key in NUMBERS:
            assert record[key] == pytest.approx(expected[trial_id][key], abs=1e-6), (trial_id, key)


def test_killed_process_resumes_without_loss_or_repeats(reference, tmp_path):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress"]
    done_at_kill = kill_after_records(command, out, 3)
    assert 3 <= done_at_kill < 12
    trials = out / "trials.jsonl"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=patience(600))
    assert finished.returncode == 0, finished.stderr
    assert f"{12 - done_at_kill} trials run, 12 in the study" in finished.stdout
    lines = [json.loads(line) for line in trials.read_text().splitlines() if line.strip()]
    ids = [line["trial_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 12, "a trial was repeated or lost"
    _assert_same_results(read_trials(out), reference[1].records)
    assert (out / "report.md").is_file() and (out / "report.json").is_file()
    assert list(out.glob("*.png"))


def test_a_directory_of_another_recipe_is_refused(reference):
    directory, _ = reference
    changed = tiny_recipe(seed=8)
    with pytest.raises(HfpruneError, match="holds a study of a different recipe"):
        run_study(parse_recipe(changed), directory, progress=False)


def test_two_processes_train_each_trial_data_parallel(tmp_path):
    """2 CPU processes (torchrun; `accelerate launch --cpu` starts only one): one record per trial, masks exact
    under DDP."""
    recipe = write_recipe(tmp_path, pruning={"settings": [{"ratios": {"conv1": 0.8},
                                                            "candidates": {"mode": "random", "num": 3}}]})
    out = tmp_path / "ddp"
    command = torchrun("-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress")
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(600), env=cpu_ddp_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(lines) == len({line["trial_id"] for line in lines}) == 3, "only the main process writes records"
    assert all(line["mask_violations"] == 0 for line in lines)
    assert result.stdout.count("3 trials run, 3 in the study") == 1
    assert json.loads((out / "study.json").read_text())["processes"] == 2


def test_the_train_split_after_retraining_is_measured_only_when_asked(reference, tmp_path):
    directory, result = reference
    assert all("final_train_loss" not in r and r["measured"] == ["final_test"] for r in result.records)
    from hfprune.study.registry import report_study

    report_study(directory, plots=False)
    assert "Measured after retraining: final_test (evaluation.final_train" in (directory / "report.md").read_text()
    recipe = tiny_recipe(pruning={"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random",
                                                                                       "num": 1}}]},
                         evaluation={"batch_size": 500, "final_train": True})
    asked = run_study(parse_recipe(recipe), tmp_path / "asked", progress=False)
    assert all(r["final_train_loss"] > 0 and r["measured"] == ["final_test", "final_train"] for r in asked.records)
