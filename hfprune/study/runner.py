"""The oracle-pruning study: dense model → candidate masks → one durable record per trial → report.

Resumable: each finished trial is fsync-ed to the store before the next starts; a rerun of the same
recipe into the same directory skips every recorded trial and ends with the same records.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hfprune import __version__
from hfprune.study.plan import plan_for
from hfprune.io import save_atomically
from hfprune.data.registry import load_image_classification
from hfprune.study.dense import dense_model
from hfprune.errors import HfpruneError
from hfprune.oneshot.cards import write_trial_card
from hfprune.models import get_adapter
from hfprune.models.base import ModelAdapter
from hfprune.config.recipe import INSTRUCTION_DATASETS, Recipe
from hfprune.study.store import TrialStore, read_trials, write_json_atomically
from hfprune.study.tasks.image_classification import ImageClassificationTask, Task
from hfprune.train.trainer import get_accelerator
from hfprune.study.trial import RETRAINED, TrialSpec, run_trial


@dataclass
class StudyResult:
    directory: Path
    trials_total: int
    trials_run: int
    records: list[dict[str, Any]]


def build_task(recipe: Recipe, progress: bool = True) -> Task:
    """The recipe's task: instruction tuning of a vision-language model, or image classification."""
    if recipe.data.dataset in INSTRUCTION_DATASETS:
        from hfprune.study.tasks.vision_language import VisionLanguageTask

        return VisionLanguageTask(recipe, progress)
    data = load_image_classification(
        recipe.data.dataset, path=recipe.data.path, image_size=recipe.data.image_size,
        train_limit=recipe.data.train_limit, test_limit=recipe.data.test_limit, limit_seed=recipe.seed,
        image_processor=recipe.data.image_processor or recipe.model.pretrained, augment=tuple(recipe.data.augment),
    )
    return ImageClassificationTask(data, recipe.evaluation.batch_size)


def _claim_directory(recipe: Recipe, directory: Path) -> None:
    """Refuse to mix two different recipes' trials in one directory."""
    manifest = directory / "study.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("fingerprint")
        if recorded != recipe.fingerprint():
            raise HfpruneError(
                f"'{directory}' holds a study of a different recipe (fingerprint {recorded}, this recipe "
                f"{recipe.fingerprint()}); choose another --out or delete that directory"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    _write_manifest(directory, {"name": recipe.name, "fingerprint": recipe.fingerprint(),
                                "hfprune_version": __version__})


def _write_manifest(directory: Path, updates: dict[str, Any]) -> None:
    manifest = directory / "study.json"
    current = json.loads(manifest.read_text()) if manifest.is_file() else {}
    current.update(updates)
    write_json_atomically(manifest, current)


def _is_better(record: dict, best: dict | None, metric: str, higher_is_better: bool) -> bool:
    if best is None or best.get("metric") != metric:
        return True
    return record[metric] > best["value"] if higher_is_better else record[metric] < best["value"]


def _export(adapter: ModelAdapter, task: Task, spec: TrialSpec, model: PreTrainedModel, record: dict,
            recipe: Recipe, directory: Path) -> None:
    """Save the physically pruned retrained model (with a model card): every trial's, or the best so far."""
    mode = recipe.export.checkpoints
    if mode == "none":
        return
    metric, higher_is_better = task.best_metric(record)
    if mode == "all":
        target = directory / "checkpoints" / spec.directory_name
    else:
        target = directory / "best"
        best_file = directory / "best.json"
        if not _is_better(record, json.loads(best_file.read_text()) if best_file.is_file() else None, metric,
                          higher_is_better):
            return
    save_atomically(adapter.prune_physically(model, spec.candidate.mask), target,
                    extras=[task.save_companions, lambda folder: write_trial_card(folder, recipe, record)])
    if mode == "best":
        write_json_atomically(directory / "best.json", {"trial_id": record["trial_id"], "metric": metric,
                                                        "value": record[metric], metric: record[metric]})


def _evaluate_dense(task: Task, dense: PreTrainedModel, device, workdir: Path) -> dict[str, float]:
    """Train and test metrics of the dense model, measured on ``device``; the model goes back to the CPU after
    (trials copy it from there)."""
    dense.to(device)
    try:
        return {f"{split}_{key}": value for split in ("train", "test")
                for key, value in task.evaluate(dense, split, workdir).items()}
    finally:
        dense.to("cpu")


def run_study(recipe: Recipe, directory: str | Path, progress: bool = True) -> StudyResult:
    """Run (or resume) every trial of ``recipe`` into ``directory``."""
    directory = Path(directory)
    accelerator = get_accelerator(recipe.retrain.mixed_precision, recipe.retrain.gradient_accumulation_steps)
    main = accelerator.is_main_process
    adapter = get_adapter(recipe.model.family, recipe.model.dtype)
    task = build_task(recipe, progress and main)
    if main:
        _claim_directory(recipe, directory)
    accelerator.wait_for_everyone()
    dense_evaluated = "dense" in json.loads((directory / "study.json").read_text())  # read before anyone writes it

    dense = dense_model(recipe, adapter, task, directory, progress and main)
    groups = adapter.groups(dense.config)
    plan = plan_for(recipe, groups, task)
    specs = plan.trials()
    if not dense_evaluated:  # on every process: an evaluation may synchronise them
        metrics = _evaluate_dense(task, dense, accelerator.device, directory / "dense_eval")
        if main:
            _write_manifest(directory, {"dense": metrics, "trials_planned": len(specs),
                                        "processes": accelerator.num_processes,
                                        "groups": {name: group.size for name, group in groups.items()}})
        accelerator.wait_for_everyone()

    store = TrialStore(directory)
    finished = store.finished_ids()
    todo = [spec for spec in specs if spec.trial_id not in finished]
    bar = tqdm(todo, desc="trials", initial=len(specs) - len(todo), total=len(specs), disable=not (progress and main))
    for spec in bar:
        record, model = run_trial(spec, dense, plan.masks, task, recipe.retrain, recipe.seed, progress and main,
                                  workdir=directory / "trials" / spec.directory_name)
        if main:  # export first: a kill in between reruns the trial, which re-exports the same model
            _export(adapter, task, spec, model, record, recipe, directory)
            store.append(record)
            shutil.rmtree(directory / "trials" / spec.directory_name / RETRAINED, ignore_errors=True)
        metric, _ = task.best_metric(record)
        bar.set_postfix(pruned_loss=f"{record['pruned_train_loss']:.3f}", **{metric: f"{record[metric]:.3f}"})
    accelerator.wait_for_everyone()
    return StudyResult(directory, len(specs), len(todo), read_trials(directory))
