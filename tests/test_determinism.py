"""What reproduces: study.json records the environment; --deterministic fixes kernels and threads."""

import json
import os
import subprocess
import sys

from hfprune.study.environment import differences
from test_study_state import _recipe
from waiting import patience


def _run(tmp_path, name, threads, *flags):
    path = tmp_path / "recipe.yaml"
    recipe = _recipe(report={"plots": False})
    recipe["pruning"]["settings"][0]["candidates"]["num"] = 2
    path.write_text(json.dumps(recipe))
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's default thread count in that process
    result = subprocess.run([sys.executable, "-m", "hfprune", "run", str(path), "--out", str(out), "--no-progress",
                             *flags], capture_output=True, text=True, env=env, timeout=patience(300))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("timings")
    return json.loads((out / "study.json").read_text()), records


def test_deterministic_runs_match_whatever_the_default_thread_count(tmp_path):
    first_manifest, first = _run(tmp_path, "one", 1, "--deterministic")
    second_manifest, second = _run(tmp_path, "two", 2, "--deterministic")
    assert first == second  # every metric of every trial, bit for bit
    for manifest in (first_manifest, second_manifest):
        environment = manifest["environment"]
        assert environment["deterministic"] is True and environment["torch_threads"] == 1
        assert environment["libraries"]["torch"] and environment["device"].startswith("cpu")


def test_at_default_settings_the_dense_model_and_records_do_not_depend_on_the_default_thread_count(tmp_path):
    """No --deterministic, no execution section: the quickstart's own batch sizes (pretrain 128, retrain and
    evaluation 256) on a subset of its data give the same dense model and records under 1 and 2 default threads
    (the dense stage computes with execution.threads_per_trial threads, as every trial does)."""
    import yaml

    from hfprune.resources import shipped_recipes

    recipe = yaml.safe_load(shipped_recipes()["quickstart"].read_text())
    recipe["data"].update(train_limit=1024, test_limit=256)
    recipe["pretrain"]["epochs"], recipe["retrain"]["epochs"] = 2, 1
    recipe["retrain"]["schedule"] = {"name": "constant"}
    recipe["pruning"]["settings"][0]["candidates"] = {"mode": "random", "num": 2}
    recipe["export"], recipe["report"] = {"checkpoints": "none"}, {"plots": False}
    runs = []
    for threads in (1, 2):
        path, out = tmp_path / "recipe.yaml", tmp_path / f"threads{threads}"
        path.write_text(json.dumps(recipe))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run([sys.executable, "-m", "hfprune", "run", str(path), "--out", str(out),
                                 "--no-progress"], capture_output=True, text=True, env=env, timeout=patience(300))
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
        runs.append((json.loads((out / "study.json").read_text())["dense"], [
            {key: value for key, value in record.items() if key != "timings"} for record in records]))
    assert runs[0] == runs[1]


def test_a_changed_environment_is_named():
    before = {"torch_threads": 8, "device": "cpu: A", "processes": 1, "deterministic": False, "libraries": {"torch": "2"}}
    now = {**before, "torch_threads": 2}
    assert differences(before, now) == ["torch_threads: 8 -> 2"] and differences(before, dict(before)) == []
