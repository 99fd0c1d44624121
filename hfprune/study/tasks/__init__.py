"""Tasks: what a study trains on and how a model is scored. The runner knows only this interface.

A model family names its task (``ModelAdapter.task``); :data:`TASKS` maps that name to the class that builds
the task from a recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from hfprune.models import FAMILIES
from hfprune.study.recipe import StudyRecipe
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import LossFn


class Task(Protocol):
    name: str
    train_set: torch.utils.data.Dataset
    pruned_splits: tuple[str, ...]  # the splits measured right after pruning, before retraining
    find_unused_parameters: bool  # some steps leave parameters without gradients (DDP must be told)
    keeps_retrained: bool  # retraining is costly: a trial saves its retrained model until it is recorded
    one_device_trials: bool  # a trial fits one process on one device, so Ray may run several at once

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        """The training loss under ``section``'s label smoothing and batch mixing (None: plain)."""

    # A task whose trials may retrain as packs also has ``pack_loss(section) -> (loss, batch_transform | None)``:
    # ``loss_fn(section)`` with its random augmentation split off as a transform of a batch (hfprune.train.packed).

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` ('train', 'test', or 'validation' where the task holds one out); keys
        include 'loss'. ``workdir`` keeps
        what an evaluation writes on its way (e.g. generated answers)."""

    def direction(self, metric: str) -> bool | None:
        """Whether higher is better for a key of :meth:`evaluate` (None: a count, never ranked)."""

    def selection_metric(self, record) -> str:
        """The record metric that ranks retrained models (its direction is the record's)."""

    def data_shape(self) -> tuple[int, int, int]:
        """(labels, channels, image size) of the data, for a model built from scratch to fit it."""

    def save_companions(self, directory: Path) -> None:
        """Write what a saved model needs beside its weights (e.g. a processor) into ``directory``."""


def _image_classification(recipe: StudyRecipe, progress: bool, calibration_samples: int) -> Task:
    from hfprune.study.tasks.image_classification import ImageClassificationTask

    return ImageClassificationTask.from_recipe(recipe, progress, calibration_samples)


def _vision_language(recipe: StudyRecipe, progress: bool, calibration_samples: int) -> Task:
    from hfprune.study.tasks.vision_language import VisionLanguageTask

    return VisionLanguageTask(recipe, progress, calibration_samples)


def _binary_classification(recipe: StudyRecipe, progress: bool, calibration_samples: int) -> Task:
    from hfprune.study.tasks.binary_classification import BinaryClassificationTask

    return BinaryClassificationTask.from_recipe(recipe)


def _causal_lm(recipe: StudyRecipe, progress: bool, calibration_samples: int) -> Task:
    from hfprune.study.tasks.causal_lm import CausalLMTask

    return CausalLMTask(recipe, progress, calibration_samples)


TASKS = {"image_classification": _image_classification, "vision_language": _vision_language,
         "binary_classification": _binary_classification, "causal_lm": _causal_lm}


def build_task(recipe: StudyRecipe, progress: bool = True, calibration_samples: int = 128) -> Task:
    """The task the recipe's model family trains on, built from the recipe's data section; ``calibration_samples``
    training samples calibrate criteria and methods that need data."""
    return TASKS[FAMILIES[recipe.model.family].task](recipe, progress, calibration_samples)
