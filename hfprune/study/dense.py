"""Stage 1 of a study: the dense model, pretrained once and cached in the study directory."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from hfprune.io import save_atomically
from hfprune.errors import HfpruneError
from hfprune.models.base import ModelAdapter
from hfprune.config.recipe import Recipe
from hfprune.seeding import seed_everything, stable_seed
from hfprune.study.tasks.image_classification import Task
from hfprune.train.trainer import get_accelerator, train


def _load_pretrained(adapter: ModelAdapter, source: str) -> PreTrainedModel:
    try:
        return adapter.load_pretrained(source)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HfpruneError(
            f"model.pretrained: cannot load '{source}' as a {adapter.name} checkpoint ({first_line}); "
            "give a local directory written by save_pretrained, or a Hub id reachable from this machine"
        ) from None


def dense_model(recipe: Recipe, adapter: ModelAdapter, task: Task, study_dir: Path, progress: bool) -> PreTrainedModel:
    """Load the cached dense model of this study, or make it (load pretrained, or pretrain) and cache it."""
    cache = study_dir / "dense"
    if (cache / "config.json").is_file():
        return adapter.model_class.from_pretrained(cache)
    if recipe.model.pretrained:
        model = _load_pretrained(adapter, recipe.model.pretrained)
        if not adapter.cache_pretrained:
            return model
    else:
        seed = stable_seed(recipe.seed, "pretrain")
        seed_everything(seed)
        data = task.data
        model = adapter.build(adapter.config(data.num_labels, data.channels, data.image_size, recipe.model.config))
        if recipe.pretrain.epochs:
            train(model, task.train_set, recipe.pretrain,
                  task.loss_fn(recipe.pretrain),
                  seed=seed, progress=progress, description="pretrain")
    accelerator = get_accelerator()
    if accelerator.is_main_process:
        save_atomically(model, cache)
    accelerator.wait_for_everyone()
    return model
