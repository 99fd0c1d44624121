"""Stage 1 of a study: the dense model, pretrained once and cached in the study directory."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from safetensors import SafetensorError
from transformers import PretrainedConfig, PreTrainedModel

from hfprune.io import quiet_hf_progress, save_atomically
from hfprune.errors import HfpruneError, reason
from hfprune.models.base import ModelAdapter
from hfprune.models.overrides import check_buildable
from hfprune.study.recipe import StudyRecipe
from hfprune.seeding import seed_everything, stable_seed
from hfprune.study.tasks import Task
from hfprune.train.trainer import get_accelerator, train


def _cannot_load(adapter: ModelAdapter, source: str, error: BaseException) -> HfpruneError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return HfpruneError(
        f"model.pretrained: cannot load '{source}' as a {adapter.name} checkpoint ({first_line}); "
        "give a local directory written by save_pretrained, or a Hub id reachable from this machine"
    )


def dense_config(recipe: StudyRecipe, adapter: ModelAdapter, task: Task) -> PretrainedConfig:
    """The dense model's config, without any weights: the pretrained checkpoint's, or the one pretraining
    builds for the task's data with the recipe's ``model.config`` overrides."""
    if recipe.model.pretrained:
        try:
            config = adapter.load_config(recipe.model.pretrained)
        except (OSError, ValueError) as error:
            raise _cannot_load(adapter, recipe.model.pretrained, error) from None
        _check_data_fits(recipe, config, task)
        return config
    try:
        config = adapter.config(*task.data_shape(), recipe.model.config)
    except (TypeError, ValueError) as error:
        raise HfpruneError(f"model.config: {reason(error, 200)} (model.family '{adapter.name}'); fix or remove the "
                           "override") from None
    check_buildable(adapter.build, config)  # on the meta device; families found by structure build by Auto class
    return config


def _check_data_fits(recipe: StudyRecipe, config: PretrainedConfig, task: Task) -> None:
    """A pretrained image model and the recipe's dataset must agree on channels and have room for its labels."""
    labels, channels, _ = task.data_shape()
    reads = getattr(config, "num_channels", None)
    if channels and isinstance(reads, int) and reads != channels:
        raise HfpruneError(f"data.dataset '{recipe.data.dataset}' has {channels}-channel images but model.pretrained "
                           f"'{recipe.model.pretrained}' reads {reads}-channel images; choose a dataset of "
                           f"{reads}-channel images or another model")
    classes = getattr(config, "num_labels", None)
    if labels and isinstance(classes, int) and classes < labels:
        raise HfpruneError(f"data.dataset '{recipe.data.dataset}' has {labels} classes but model.pretrained "
                           f"'{recipe.model.pretrained}' predicts {classes}; choose a model with a head of at least "
                           f"{labels} classes")


def _load_pretrained(adapter: ModelAdapter, source: str, progress: bool) -> PreTrainedModel:
    try:
        with contextlib.nullcontext() if progress else quiet_hf_progress():  # --no-progress: no loading bars
            return adapter.load_pretrained(source)
    except (OSError, ValueError, SafetensorError) as error:
        raise _cannot_load(adapter, source, error) from None


def dense_model(recipe: StudyRecipe, adapter: ModelAdapter, task: Task, study_dir: Path, progress: bool,
                config: PretrainedConfig) -> PreTrainedModel:
    """Load the cached dense model of this study, or make it (load pretrained, or pretrain from ``config``, see
    :func:`dense_config`) and cache it."""
    cache = study_dir / "dense"
    if (cache / "config.json").is_file():
        try:
            with contextlib.nullcontext() if progress else quiet_hf_progress():
                return (adapter.model_class or adapter.auto_class_for(config)).from_pretrained(cache)
        except Exception as error:  # noqa: BLE001 - any unreadable cache is made again, deterministically
            print(f"warning: the cached dense model in {cache} is unreadable ({reason(error, 200)}); making it "
                  "again", file=sys.stderr)  # save_atomically replaces it below
    if recipe.model.pretrained:
        model = _load_pretrained(adapter, recipe.model.pretrained, progress)
        if not adapter.cache_pretrained:
            return model
    else:
        seed = stable_seed(recipe.seed, "pretrain")
        seed_everything(seed)
        model = adapter.build(config)
        if recipe.pretrain.epochs:
            train(model, task.train_set, recipe.pretrain,
                  task.loss_fn(recipe.pretrain),
                  seed=seed, progress=progress, description="pretrain")
    accelerator = get_accelerator()
    if accelerator.is_main_process:
        save_atomically(model, cache)
    accelerator.wait_for_everyone()
    return model
