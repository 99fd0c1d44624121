"""Trials fanned out on a local Ray instance (2 CPUs): the records of an in-process run, each trial recorded
exactly once through a worker killed mid-trial and through a killed driver."""

import contextlib
import io
import json
import subprocess
import sys
import threading
import time

import psutil
import pytest

from hfprune.study.registry import parse_recipe
from hfprune.study.runner import run_study
from hfprune.records.store import read_trials
from study_helpers import kill_after_records, tiny_recipe, write_recipe
from waiting import patience

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

# One thread per trial in-process and on Ray (the default): the same arithmetic, so the same numbers to the bit.
SECTIONS = {
    "pruning": {"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random", "num": 4}},
                             {"ratios": {"conv2": 0.5, "conv3": 0.5}, "candidates": {"num": 2}}]},
}
TRIALS = 6


def _without_timings(records):
    return {record["trial_id"]: {key: value for key, value in record.items() if key != "timings"}
            for record in records}


def _trial_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trial ")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study run in this process, its progress written to a stream that is not a terminal."""
    directory = tmp_path_factory.mktemp("in_process")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        result = run_study(parse_recipe(tiny_recipe(**SECTIONS)), directory, progress=True)
    return directory, result, stderr.getvalue()


@pytest.fixture
def local_ray():
    """Tests that start Ray themselves leave none behind."""
    yield
    ray.shutdown()


def test_in_process_progress_is_one_line_per_trial_when_not_a_terminal(reference):
    _, result, stderr = reference
    lines = _trial_lines(stderr)
    assert len(lines) == result.trials_total == TRIALS
    assert "\r" not in stderr, "no progress-bar frames in a log"
    best = max(result.records, key=lambda record: record["final_test_acc"])
    assert f"best final_test_acc {best['final_test_acc']:.4f}" in lines[-1]
    assert lines[-1].startswith(f"trial {TRIALS}/{TRIALS} ") and "ETA 0:00:00" in lines[-1]


def test_two_workers_give_the_records_of_the_in_process_run(reference, tmp_path, local_ray):
    directory, expected, _ = reference
    result = run_study(parse_recipe(tiny_recipe(**SECTIONS)), tmp_path, progress=False, workers=2)
    assert result.trials_run == TRIALS
    assert _without_timings(result.records) == _without_timings(expected.records)
    lines = (tmp_path / "trials.jsonl").read_text().splitlines()
    assert len(lines) == TRIALS
    best, expected_best = (json.loads((folder / "best.json").read_text()) for folder in (tmp_path, directory))
    assert best["value"] == expected_best["value"]
    assert (tmp_path / "best" / "config.json").is_file()
    assert not ray.is_initialized(), "the local instance the study started is shut down"


def _kill_first_trial_worker(found: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker process seen running a trial (its title is ray::<trial id>)."""
    me = psutil.Process()
    while not stop.is_set():
        for process in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = " ".join(process.cmdline()).strip()
                if title.startswith("ray::") and ":r0" in title:
                    process.kill()
                    found.append(title.removeprefix("ray::").strip())
                    return
        time.sleep(0.01)


def test_a_worker_killed_mid_trial_has_its_trial_retried_and_recorded_once(reference, tmp_path, local_ray):
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_first_trial_worker, args=(killed, stop), daemon=True)
    watcher.start()
    try:
        result = run_study(parse_recipe(tiny_recipe(**SECTIONS)), tmp_path, progress=False, workers=2)
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1, "no trial was running when the watcher looked"
    ids = [json.loads(line)["trial_id"] for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == TRIALS, "a trial was repeated or lost"
    assert killed[0] in ids
    assert _without_timings(result.records) == _without_timings(reference[1].records)


def test_a_killed_driver_resumes_on_ray_with_nothing_lost_or_repeated(reference, tmp_path):
    recipe = write_recipe(tmp_path, **SECTIONS)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--workers", "2"]
    done_at_kill = kill_after_records(command, out, 2, idle_seconds=300)
    assert 2 <= done_at_kill < TRIALS
    trials = out / "trials.jsonl"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=patience(600))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{TRIALS - done_at_kill} trials run, {TRIALS} in the study" in finished.stdout
    assert len(_trial_lines(finished.stderr)) == TRIALS - done_at_kill, "one log line per trial run"
    ids = [json.loads(line)["trial_id"] for line in trials.read_text().splitlines() if line.strip()]
    assert len(ids) == len(set(ids)) == TRIALS, "a trial was repeated or lost"
    assert _without_timings(read_trials(out)) == _without_timings(reference[1].records)


def test_at_default_settings_and_the_quickstarts_batch_sizes_workers_give_the_in_process_records(tmp_path, local_ray):
    """No execution section: the default thread policy alone makes the two runs agree to the last bit, with the
    quickstart's own batch sizes (pretrain 128, retrain and evaluation 256) on a subset of its data."""
    import yaml

    from hfprune.resources import shipped_recipes

    recipe = yaml.safe_load(shipped_recipes()["quickstart"].read_text())
    assert "execution" not in recipe
    recipe["data"].update(train_limit=768, test_limit=256)
    recipe["pretrain"]["epochs"], recipe["retrain"]["epochs"] = 1, 1
    recipe["retrain"]["schedule"] = {"name": "constant"}
    recipe["pruning"]["settings"][0]["candidates"] = {"mode": "random", "num": 3}
    recipe["export"] = {"checkpoints": "none"}
    in_process = run_study(parse_recipe(recipe), tmp_path / "in_process", progress=False)
    fanned = run_study(parse_recipe(recipe), tmp_path / "ray", progress=False, workers=2)
    assert len(in_process.records) == 3
    assert _without_timings(fanned.records) == _without_timings(in_process.records)
