"""One-shot retraining-aware mask selection: ``hfprune prune MODEL --structure conv1=0.5 --select
successive-halving --candidates 64 --train-data DATASET --out DIR``.

The paper's lesson (App. E) as a pruning method: sample candidate masks of the structure, retrain them by
successive halving, ranked on a validation split held out of the training data (never the test split), and save
the chosen mask's fully retrained, physically pruned model as any ``hfprune prune`` output. The selection runs as
a study in ``<out>.selection`` (resumable: the same command after an interruption goes on where it stopped).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hfprune.errors import HfpruneError
from hfprune.oneshot.structured import check_out_dir, load_structured, parse_structure
from hfprune.pruning.structured.groups import expand_ratios

METHODS = {"successive-halving": "successive_halving"}


def selection_recipe(source: str, family: str, ratios: dict[str, float], *, candidates: int, train_data: str,
                     train_path: str | None, train_limit: int | None, image_size: int, epochs: int, lr: float, batch_size: int, eta: int,
                     min_fraction: float, validation_fraction: float, seed: int) -> dict[str, Any]:
    """The study that selects the mask: one setting of ``candidates`` masks (all of them when there are fewer),
    successive halving over SGD retraining with a cosine schedule."""
    return {
        "name": "select", "seed": seed,
        "model": {"family": family, "pretrained": source},
        "data": {"dataset": train_data, "path": train_path, "train_limit": train_limit, "image_size": image_size,
                 "validation_fraction": validation_fraction},
        "pruning": {"settings": [{"ratios": ratios, "candidates": {"mode": "auto", "num": candidates}}],
                    "selection": {"method": "successive_halving", "eta": eta, "min_fraction": min_fraction,
                                  "metric": "val_accuracy"}},
        "retrain": {"epochs": epochs, "batch_size": batch_size,
                    "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4},
                    "schedule": {"name": "cosine"}},
        "export": {"checkpoints": "best"},
    }


def selection_directory(out: str | Path) -> Path:
    """Where the selection study of ``hfprune prune select ... --out OUT`` runs: ``OUT.selection``."""
    out = Path(out)
    return out.with_name(out.name + ".selection")


def select_checkpoint(source: str, structure: str, out: str | Path, *, select: str, candidates: int,
                      train_data: str | None, train_path: str | None = None, train_limit: int | None = None,
                      image_size: int | None = None,
                      epochs: int = 10, lr: float = 0.01, batch_size: int = 128, eta: int = 3,
                      min_fraction: float = 0.1, validation_fraction: float = 0.1, seed: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Choose a mask of ``structure`` by successive halving and write the chosen retrained model to ``out``;
    returns the facts saved beside it (``hfprune_pruning.json``)."""
    from hfprune.study.registry import parse_recipe
    from hfprune.study.runner import run_study

    if select not in METHODS:
        raise HfpruneError(f"--select {select}: choose one of {', '.join(METHODS)}")
    if train_data is None:
        raise HfpruneError("--select retrains candidates: give --train-data DATASET (a registered image-classification "
                           "dataset, e.g. cifar10, with --train-path DIR for a local copy)")
    out = check_out_dir(out, source)
    ratios = parse_structure(structure)
    adapter, model = load_structured(source)
    expand_ratios(adapter.groups(model.config), ratios)  # unknown groups and bad ratios fail before any training
    if image_size is None:
        size = getattr(model.config, "image_size", 224)
        image_size = size if isinstance(size, int) else size[0]
    recipe = parse_recipe(selection_recipe(
        source, adapter.name, ratios, candidates=candidates, train_data=train_data, train_path=train_path,
        train_limit=train_limit, image_size=image_size, epochs=epochs, lr=lr, batch_size=batch_size, eta=eta, min_fraction=min_fraction,
        validation_fraction=validation_fraction, seed=seed), source="--select options")
    study = selection_directory(out)
    result = run_study(recipe, study, progress=progress)
    (chosen,) = result.records
    facts = {"source": source, "family": adapter.name, "structure": ratios, "select": select,
             "candidates": candidates, "seed": seed, "train_data": train_data, "mask_id": chosen["mask_id"],
             "selection": chosen.get("selection"), "final_test_acc": chosen.get("final_test_acc"),
             "study": str(study),
             "command": f"hfprune prune {source} --structure {structure} --select {select} --candidates {candidates} "
                        f"--train-data {train_data} --epochs {epochs} --seed {seed}"}
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(study / "best", partial)
    (partial / "hfprune_pruning.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return facts
