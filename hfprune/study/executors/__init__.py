"""Where a study's trials run: in this process one after another (the default), or as Ray tasks; either way
trials of one shape may train as packs (``execution.pack``, ``hfprune run --pack``; :mod:`.packing`).

``hfprune run --workers N`` starts a local Ray instance and runs up to N trials (or packs) at once;
``--ray-address`` joins a running cluster. Without either, Ray is not imported.
"""

from __future__ import annotations

from hfprune.errors import HfpruneError
from hfprune.study.executors.base import Executor, FinishedTrial, TrialRunner
from hfprune.study.executors.inprocess import InProcessExecutor
from hfprune.study.recipe import StudyRecipe

__all__ = ["Executor", "FinishedTrial", "TrialRunner", "executor_for"]


def executor_for(recipe: StudyRecipe, one_device_trials: bool, workers: int | None = None,
                 ray_address: str | None = None, processes: int = 1, pack: int | str | None = None) -> Executor:
    """The executor the flags ask for; refuses Ray where a trial needs more than one device of its own. ``pack``
    (``--pack``) overrides ``execution.pack``."""
    pack = recipe.execution.pack if pack is None else pack
    if workers is None and ray_address is None:
        return InProcessExecutor(recipe.execution.threads_per_trial, pack)
    flag = "--workers" if workers is not None else "--ray-address"
    if processes > 1:
        raise HfpruneError(f"{flag} runs each trial in one process, but this run has {processes} processes "
                           "(accelerate launch / torchrun), over which every trial is already trained "
                           f"data-parallel; drop {flag}, or run `hfprune run {flag} ...` without a launcher")
    if not one_device_trials:
        raise HfpruneError(f"{flag}: a {recipe.model.family} trial needs several GPUs of its own; run its trials "
                           "one at a time over all GPUs with `accelerate launch [--config_file "
                           "accelerate_configs/...] -m hfprune run RECIPE` (no --workers / --ray-address)")
    try:
        from hfprune.study.executors.ray_tasks import RayExecutor, check_address
    except ImportError as error:
        raise HfpruneError(f"{flag} needs Ray ({error}); install it with pip install 'hfprune[ray]'") from None
    check_address(ray_address)
    return RayExecutor(recipe.execution, workers, ray_address, pack)
