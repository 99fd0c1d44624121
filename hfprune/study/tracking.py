"""Experiment tracking through Accelerate's trackers: one run per finished trial, grouped by study.

The driver logs each trial as it is recorded: its candidate (setting, mask or method, seed) as the run's
configuration and its metrics (pruned, short-retrain, final) and timings as values. TensorBoard runs go to
``<study>/tracking/<trial>``; W&B runs are named by trial in the study's project and group; MLflow runs by
trial in the study's experiment.
"""

from __future__ import annotations

import math
from pathlib import Path

from hfprune.errors import HfpruneError
from hfprune.records.record import TrialRecord

INSTALL = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _tracker(name: str, study: str, record: TrialRecord, folder: Path):
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(record.trial_id.replace(":", "_"), folder)
    if name == "wandb":
        return tracking.WandBTracker(study, name=record.trial_id, group=study, dir=str(folder))
    return tracking.MLflowTracker(study, run_name=record.trial_id, tags={"study": study})


class TrialTracker:
    """Logs finished trials to the trackers ``names`` (tensorboard, wandb, mlflow)."""

    def __init__(self, names: list[str], directory: Path, study: str):
        from accelerate import utils

        unknown = [name for name in names if name not in INSTALL]
        if unknown:
            raise HfpruneError(f"--log-with: unknown tracker {', '.join(unknown)}; choose from {', '.join(INSTALL)}")
        for name in names:
            if not getattr(utils, f"is_{name}_available")():
                raise HfpruneError(f"--log-with {name} needs {name}: pip install {INSTALL[name]}")
        self.names, self.folder, self.study = names, Path(directory) / "tracking", study

    def log(self, record: TrialRecord) -> None:
        config = {"trial_id": record.trial_id, "setting": record.setting, "mask_id": record.mask_id,
                  "repeat": record.repeat, "seed": record.seed,
                  **{key: _scalar(value) for key, value in record.candidate.items()}}
        values = {key: value for key, value in {**record.metrics, **{f"timings/{key}": value for key, value
                                                                     in record.timings.items()}}.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
        for name in self.names:
            tracker = _tracker(name, self.study, record, self.folder)
            tracker.start()
            tracker.store_init_configuration(config)
            tracker.log(values, step=0)
            tracker.finish()


def _scalar(value):
    """Tracker configurations hold scalars: a mask or options become their text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
