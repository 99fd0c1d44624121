"""--log-with: one tracker run per trial, holding the trial's recorded metrics."""

import pytest

from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.study.runner import run_study
from hfprune.study.tracking import TrialTracker
from study_helpers import tiny_recipe

TWO_TRIALS = {"pruning": {"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random", "num": 2}}]},
              "pretrain": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}},
              "retrain": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.02}}}


def test_tensorboard_gets_one_run_per_trial_with_its_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_study(parse_recipe(tiny_recipe(**TWO_TRIALS)), tmp_path, progress=False, log_with=["tensorboard"])
    runs = sorted(path.name for path in (tmp_path / "tracking").iterdir())
    assert runs == sorted(record["trial_id"].replace(":", "_") for record in result.records)
    for record in result.records:
        events = EventAccumulator(str(tmp_path / "tracking" / record["trial_id"].replace(":", "_")))
        events.Reload()
        for metric in ("pruned_train_loss", "final_test_acc"):
            (scalar,) = events.Scalars(metric)
            assert scalar.value == pytest.approx(record[metric], rel=1e-6)


def test_unknown_tracker_is_one_clear_line(tmp_path):
    with pytest.raises(HfpruneError, match="unknown tracker comet; choose from tensorboard, wandb, mlflow"):
        TrialTracker(["comet"], tmp_path, "tiny")


def test_a_tracker_that_is_not_installed_says_what_to_install(tmp_path, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(HfpruneError, match="--log-with wandb needs wandb: pip install wandb"):
        TrialTracker(["wandb"], tmp_path, "tiny")
