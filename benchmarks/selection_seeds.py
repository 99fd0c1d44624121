"""Successive halving vs. the oracle rule vs. a random mask, on the quickstart's data, over seeds.

For each seed, two studies of ``recipes/quickstart_selection.yaml`` (same validation split, same masks): the
exhaustive one (every mask fully retrained, ``pruning.selection`` removed) and successive halving. The chosen
mask's final model is the exhaustive study's trial of that mask (the halving's retraining continues bit for bit
as one run), so its rank and regret are read there. Prints, per seed and on average: the top share (1/n = the
best mask) and regret of each choice, and the retraining epochs each spent. Target: successive halving picks a
top-10% mask at <= 25% of the exhaustive study's epochs.

    python benchmarks/selection_seeds.py [--seeds 0,1,2] [--out runs/selection_seeds] [--train-limit N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from hfprune.study.registry import parse_recipe
from hfprune.resources import shipped_recipes
from hfprune.report.regret import choice
from hfprune.study.runner import run_study


def _studies(seed: int, out: Path, train_limit: int | None) -> tuple[list[dict], dict]:
    data = yaml.safe_load(shipped_recipes()["quickstart_selection"].read_text())
    data["seed"] = seed
    if train_limit:
        data["data"]["train_limit"] = train_limit
    halving = run_study(parse_recipe(data), out / f"halving_seed{seed}", progress=False).records
    exhaustive_data = {**data, "pruning": {k: v for k, v in data["pruning"].items() if k != "selection"}}
    exhaustive = run_study(parse_recipe(exhaustive_data), out / f"exhaustive_seed{seed}", progress=False).records
    return exhaustive, halving[0]


def _row(seed: int, exhaustive: list[dict], chosen: dict) -> dict:
    by_mask = {r["mask_id"]: r for r in exhaustive}
    acc = np.array([r["final_test_acc"] for r in exhaustive])
    loss = np.array([r["pruned_train_loss"] for r in exhaustive])
    epochs = chosen["selection"]["exhaustive_epochs"] / len(exhaustive)
    index = list(by_mask).index(chosen["mask_id"])
    picked = np.zeros(len(acc), dtype=bool)
    picked[index] = True
    halving = choice(picked.astype(float), acc, True, True)
    if abs(by_mask[chosen["mask_id"]]["final_test_acc"] - chosen["final_test_acc"]) > 1e-6:
        print(f"note: seed {seed}: the halving's chosen model scores {chosen['final_test_acc']:.4f}, the exhaustive "
              f"trial of that mask {by_mask[chosen['mask_id']]['final_test_acc']:.4f} (ranked by the latter)")
    return {"seed": seed, "n": len(acc), "best_acc": float(acc.max()), "exhaustive_epochs": epochs * len(acc),
            "halving": {**halving, "epochs": chosen["selection"]["epochs_spent"]},
            "oracle": {**choice(loss, acc, False, True), "epochs": epochs},
            "random": {"regret": float(acc.max() - acc.mean()),
                       "top": float(np.mean([(1 + (acc > a).sum()) / len(acc) for a in acc])), "epochs": epochs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/selection_seeds")
    parser.add_argument("--train-limit", type=int, default=None)
    args = parser.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        exhaustive, chosen = _studies(seed, Path(args.out), args.train_limit)
        rows.append(_row(seed, exhaustive, chosen))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'choice':<10} {'top (mean)':>11} {'regret (mean)':>14} {'epochs':>8} {'share of exhaustive':>20}")
    for name in ("halving", "oracle", "random"):
        top = np.mean([r[name]["top"] for r in rows])
        regret = np.mean([r[name]["regret"] for r in rows])
        epochs = np.mean([r[name]["epochs"] for r in rows])
        share = epochs / np.mean([r["exhaustive_epochs"] for r in rows])
        print(f"{name:<10} {top:>11.1%} {regret:>14.4f} {epochs:>8.0f} {share:>20.1%}")


if __name__ == "__main__":
    main()
