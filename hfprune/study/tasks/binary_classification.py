"""The binary-classification task: one-logit models (the sparse MLPs) on a generated point set such as the Cubist
Spiral; BCE-with-logits training, loss and accuracy as metrics."""

from __future__ import annotations

from pathlib import Path

import torch

from hfprune.data.registry import get_dataset_spec
from hfprune.evaluation.classification import binary_loss, evaluate_binary
from hfprune.study.recipe import StudyRecipe
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import LossFn


class BinaryClassificationTask:
    """BCE-with-logits training; loss and accuracy (logit > 0 predicts class 1) as metrics."""

    pruned_splits = ("train", "test")
    find_unused_parameters = False
    keeps_retrained = False
    one_device_trials = True
    DIRECTIONS = {"loss": False, "acc": True}

    @classmethod
    def from_recipe(cls, recipe: StudyRecipe) -> "BinaryClassificationTask":
        """The recipe's bundled point set (``data.train_limit``: a fixed class-stratified subset, seeded)."""
        spec = get_dataset_spec(recipe.data.dataset)
        data = spec.bundled(image_size=recipe.data.image_size, train_limit=recipe.data.train_limit,
                            test_limit=recipe.data.test_limit, limit_seed=recipe.seed)
        return cls(data, recipe.evaluation.batch_size)

    def __init__(self, data, eval_batch_size: int = 4096):
        self.data, self.name, self.eval_batch_size = data, data.name, eval_batch_size
        self.train_set = data.training_set

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        return binary_loss

    def pack_loss(self, section: TrainingSection) -> tuple[LossFn, None]:
        """The loss for packed training (nothing random to draw per job)."""
        return binary_loss, None

    def data_shape(self) -> tuple[int, int, int]:
        """(classes, input features, image size 0): what a model built for these points takes."""
        return 2, self.data.input_size, 0

    def example_input(self) -> torch.Tensor:
        """The shape of one input the models see ([1, d])."""
        return torch.zeros(1, self.data.input_size)

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        return evaluate_binary(model, {"train": self.data.train, "test": self.data.test}[split], self.eval_batch_size)

    def direction(self, metric: str) -> bool | None:
        return self.DIRECTIONS.get(metric)

    def selection_metric(self, record) -> str:
        return "final_test_acc"

    def save_companions(self, directory: Path) -> None:
        """Nothing: the points need no processor."""
