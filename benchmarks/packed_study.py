"""Whole sparse studies packed vs one trial at a time, and the wall time of a study too large to run here.

1. ``--trials-per-hour`` (default): ``hfprune run cubist_spiral_quick`` twice, side by side in one run, each in its
   own process with one thread (``OMP_NUM_THREADS=1``): packed (the recipe's ``execution.pack``) and one trial at
   a time (``--pack 1``). Trials per hour count the whole study's wall time: process start, data, every trial's
   training, evaluation, connectivity and record, and the report. Target: >= 10x. ``--sample F`` runs only a
   seeded share F of the one-at-a-time study's trials (its trials/hour is measured on that share; the packed
   study always runs whole).
2. ``--estimate RECIPE`` (e.g. ``cubist_spiral_search``): counts the study's trials as ``hfprune run`` does (phase 2
   at ``--phase2-widths``, the paper's (3, 3, 3), where the recipe picks them from phase 1), times a seeded
   sample of them trained in packs as the study trains them, and prints the estimated wall time on ``--cores``
   processes (one thread each, packs spread over them).

    OMP_NUM_THREADS=1 python benchmarks/packed_study.py [--sample 1.0] [--json out.json]
    OMP_NUM_THREADS=1 python benchmarks/packed_study.py --estimate cubist_spiral_search --sample-trials 256
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from figures import add_json_option, save_figures

ROOT = Path(__file__).resolve().parent.parent


def one_thread_environment() -> dict:
    """This process's environment with one torch thread and the Hub offline (each study its own process)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_command(recipe: Path, out: Path, *flags: str) -> list[str]:
    """``hfprune run`` of the recipe file ``recipe`` into ``out``, without progress bars or the trial-count prompt."""
    return [sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress", "--yes", *flags]


def _run_study(recipe: Path, out: Path, pack: str | None) -> tuple[float, int]:
    """Wall seconds of ``hfprune run`` (its own process, one thread) and the trials it recorded."""
    command = run_command(recipe, out, *(() if pack is None else ("--pack", pack)))
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=one_thread_environment(), cwd=ROOT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    trials = sum(1 for line in (out / "trials.jsonl").read_text().splitlines() if line.strip())
    return seconds, trials


def recipe_document(name: str) -> dict:
    """A recipe as plain data: a file's path, or the name of a shipped recipe."""
    path = Path(name) if Path(name).is_file() else ROOT / "recipes" / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"{name}: no such recipe file, nor a shipped recipe of that name ({path})")
    return yaml.safe_load(path.read_text())


def _sampled_recipe(recipe: dict, share: float, seed: int = 0) -> dict:
    """The recipe with a seeded share of its sweep's runs, budgets and phase-2 supports: a smaller study of the
    same kinds of trials (for the one-at-a-time side)."""
    if share >= 1:
        return recipe
    sampled = yaml.safe_load(yaml.safe_dump(recipe))
    sparse = sampled["sparse"]
    rng = random.Random(seed)
    budgets = sparse.get("budgets", [])
    keep = max(1, round(len(budgets) * share))
    sparse["budgets"] = sorted(rng.sample(budgets, keep))
    phase2 = (sparse.get("search") or {}).get("phase2")
    if phase2 and phase2.get("per_budget_limit"):
        phase2["per_budget_limit"] = max(1, round(phase2["per_budget_limit"] * share))
    return sampled


def trials_per_hour(args) -> dict:
    recipe = recipe_document("cubist_spiral_quick")
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        whole = folder / "quick.yaml"
        whole.write_text(yaml.safe_dump(recipe))
        share = folder / "quick_share.yaml"
        share.write_text(yaml.safe_dump(_sampled_recipe(recipe, args.sample)))
        for name, path, pack in (("packed", whole, None), ("one at a time", share, "1")):
            seconds, trials = _run_study(path, folder / name.replace(" ", "_"), pack)
            figures[name] = {"seconds": seconds, "trials": trials, "trials_per_hour": 3600 * trials / seconds}
            print(f"  {name:<14} {trials:6d} trials in {seconds:8.1f} s: {figures[name]['trials_per_hour']:10.0f} "
                  "trials/hour", flush=True)
    ratio = figures["packed"]["trials_per_hour"] / figures["one at a time"]["trials_per_hour"]
    figures["ratio"] = ratio
    print(f"cubist_spiral_quick, whole studies, one thread each (pack {recipe['execution'].get('pack', 1)} vs 1"
          f"{'' if args.sample >= 1 else f', one at a time on a {args.sample:g} share'}): packed / one at a time = "
          f"{ratio:.1f}x trials/hour (target >= 10x)")
    return figures


def estimate(args) -> dict:
    """Count the recipe's trials, time a sample trained in packs, and extrapolate."""
    os.environ["ACCELERATE_USE_CPU"] = "true"
    import torch

    from hfprune.study.executors.packing import packs
    from hfprune.study.registry import parse_recipe
    from hfprune.study.sparse.kind import SparseContext, SparseKind
    from hfprune.study.sparse.trial import TrialSetup

    torch.set_num_threads(1)
    data = recipe_document(args.estimate)
    phase2 = (data["sparse"].get("search") or {}).get("phase2")
    if phase2 and phase2.get("widths") == "auto":
        phase2["widths"] = args.phase2_widths
    recipe = parse_recipe(data)
    with tempfile.TemporaryDirectory() as folder:
        kind = SparseKind(recipe, Path(folder), go_on=True)
        kind.check()
        second, count, _ = kind._stage_two([])
        total = len(kind.first) + count
        rng = random.Random(0)
        picks = set(rng.sample(range(total), min(args.sample_trials, total)))
        chosen = [spec for index, spec in enumerate(_chain(kind.first, second)) if index in picks]
        context = SparseContext(TrialSetup(recipe, kind.adapter, kind.config, kind.task), checkpoints=False)
        size = recipe.execution.pack if recipe.execution.pack != "auto" else 64
        started, cpu = time.perf_counter(), time.process_time()
        trained = 0
        for group in packs(context, chosen, size):
            trained += len(context.run_pack(group) if len(group) > 1 else [context.run(group[0])])
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # one thread per process: on an idle machine a process's wall time is its CPU time; on a shared one the wall
    # time is longer by the share of the cores others take
    per_trial = cpu / trained
    wall = per_trial * total / args.cores
    print(f"{args.estimate}: {total:,} trials ({len(kind.first):,} in stage 1, {count:,} in phase 2 at widths "
          f"{args.phase2_widths}); a seeded sample of {trained} trained in packs of up to {size}: "
          f"{per_trial:.3f} CPU s per trial on one thread ({seconds / trained:.3f} s wall here) -> about "
          f"{wall / 3600:.1f} hours on {args.cores} idle cores ({wall / 86400:.1f} days)")
    return {"trials": total, "sampled": trained, "cpu_seconds_per_trial": per_trial,
            "wall_seconds_per_trial": seconds / trained, "cores": args.cores, "estimated_hours": wall / 3600}


def _chain(*parts):
    for part in parts:
        yield from part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=float, default=1.0, help="share of the one-at-a-time study to run")
    parser.add_argument("--estimate", default=None, help="a recipe to estimate instead (name or path)")
    parser.add_argument("--sample-trials", type=int, default=256, help="--estimate: trials timed")
    parser.add_argument("--phase2-widths", type=lambda text: [int(w) for w in text.split(",")], default=[3, 3, 3])
    parser.add_argument("--cores", type=int, default=2, help="--estimate: processes the study is spread over")
    add_json_option(parser)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    figures = estimate(args) if args.estimate else trials_per_hour(args)
    save_figures(args, figures)


if __name__ == "__main__":
    main()
