"""A small, fast LeNet study on the bundled data, for end-to-end tests."""

import signal
import subprocess
import tempfile
from pathlib import Path

import yaml

from hfprune.records.store import read_trials
from waiting import wait_until


def tiny_recipe(**overrides) -> dict:
    recipe = {
        "name": "tiny",
        "description": "tiny test study",
        "seed": 7,
        "model": {"family": "lenet5_mini"},
        "data": {"dataset": "mnist_sample", "train_limit": 600, "test_limit": 200},
        "pretrain": {"epochs": 5, "batch_size": 32,
                     "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}},
        "pruning": {"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random", "num": 8}},
                                 {"ratios": {"conv2": 0.5, "conv3": 0.5}, "candidates": {"num": 4}}]},
        "retrain": {"epochs": 2, "batch_size": 64, "short_fraction": 0.5,
                    "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4},
                    "schedule": {"name": "multistep", "milestones": [1]}},
        "evaluation": {"batch_size": 500},
    }
    recipe.update(overrides)
    return recipe


def write_recipe(directory: Path, **overrides) -> Path:
    path = Path(directory) / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(**overrides)))
    return path


def kill_after_records(command: list[str], out: Path, records: int, idle_seconds: float = 240) -> int:
    """Start ``hfprune run`` (``command``) into ``out``, SIGKILL it once ``records`` trials are recorded, and
    return how many were recorded when it died. Waits on the records file and the process, however long the
    machine takes (``idle_seconds``, what it takes idle, only sets the hang guard); its stderr goes to a file,
    which no amount of output fills."""
    trials = out / "trials.jsonl"
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_until(lambda: process.poll() is not None or _lines(trials) >= records,
                       f"{records} trial records in {trials}", idle_seconds)
            finished_first = process.poll() is not None
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        stderr.seek(0)
        assert not finished_first, "the study finished before it could be killed: " + stderr.read().decode()[-3000:]
    return len(read_trials(out))


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
