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


def test_a_changed_environment_is_named():
    before = {"torch_threads": 8, "device": "cpu: A", "processes": 1, "deterministic": False, "libraries": {"torch": "2"}}
    now = {**before, "torch_threads": 2}
    assert differences(before, now) == ["torch_threads: 8 -> 2"] and differences(before, dict(before)) == []
