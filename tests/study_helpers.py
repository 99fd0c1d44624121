"""A small, fast LeNet study on the bundled data, for end-to-end tests."""

import signal
import subprocess
import time
from pathlib import Path

import yaml

from hfprune.records.store import read_trials


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


def kill_after_records(command: list[str], out: Path, records: int, timeout: float = 240) -> int:
    """Start ``hfprune run`` (``command``) into ``out``, SIGKILL it once ``records`` trials are recorded, and
    return how many were recorded when it died."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trials = out / "trials.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if trials.exists() and trials.read_text().count("\n") >= records:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the study finished before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    return len(read_trials(out))
