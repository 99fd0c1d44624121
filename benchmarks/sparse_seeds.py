"""Whether a sparse study's findings hold over seeds: its recipe run once per seed, each study in its own process
with one thread (``OMP_NUM_THREADS=1``), ``--parallel`` at a time; a seed's study already finished in ``--out`` is
read, not rerun (``hfprune run`` resumes). Prints, per seed, the frontier finding (the search above every method's
best run at every budget: its smallest gap, or where it is not) and each target accuracy's (the search's sparsest
model reaching it against every method's, ``report.target_acc``), then how many seeds each holds with. The paper's
finding is read as shown when it holds with every seed.

    python benchmarks/sparse_seeds.py [--recipe cubist_spiral_quick] [--seeds 0,1,2,3,4] [--parallel 2]
                                      [--out runs/sparse_seeds] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import yaml

from figures import add_json_option, save_figures
from packed_study import ROOT, one_thread_environment, recipe_document, run_command


def _start(recipe: dict, seed: int, out: Path) -> subprocess.Popen:
    """``hfprune run`` of ``recipe`` at ``seed`` into ``out/seed{seed}``, in its own process with one thread."""
    path = out / f"seed{seed}.yaml"
    path.write_text(yaml.safe_dump({**recipe, "seed": seed, "name": f"{recipe['name']}_seed{seed}"}))
    log = (out / f"seed{seed}.log").open("w")
    return subprocess.Popen(run_command(path, out / f"seed{seed}"), stdout=log, stderr=subprocess.STDOUT,
                            env=one_thread_environment(), cwd=ROOT)


def run_seeds(recipe: dict, seeds: list[int], out: Path, parallel: int) -> dict[int, float]:
    """Run every seed's study, ``parallel`` at a time; the wall seconds of each."""
    out.mkdir(parents=True, exist_ok=True)
    waiting, running, seconds = list(seeds), {}, {}
    while waiting or running:
        while waiting and len(running) < parallel:
            seed = waiting.pop(0)
            running[seed] = (_start(recipe, seed, out), time.perf_counter())
        time.sleep(1)
        for seed, (process, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[seed]
            if process.returncode != 0:
                tail = (out / f"seed{seed}.log").read_text()[-2000:]
                raise SystemExit(f"seed {seed}: hfprune run failed (exit {process.returncode}):\n{tail}")
            seconds[seed] = time.perf_counter() - started
            print(f"  seed {seed}: {seconds[seed]:.0f} s", flush=True)
    return seconds


def findings(out: Path, seeds: list[int]) -> dict[int, dict]:
    """Per seed: the frontier finding and each target accuracy's, as its report.json gives them."""
    rows = {}
    for seed in seeds:
        report = json.loads((out / f"seed{seed}" / "report.json").read_text())
        rows[seed] = {"frontier": report["finding"],
                      "targets": [{key: found[key] for key in ("target", "holds", "line")}
                                  for found in report.get("targets", [])]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="cubist_spiral_quick", help="a sparse recipe (name or path)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--parallel", type=int, default=2, help="studies at once (one thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sparse_seeds", help="where the studies go")
    add_json_option(parser)
    args = parser.parse_args()
    recipe, seeds = recipe_document(args.recipe), [int(seed) for seed in args.seeds.split(",") if seed]
    if "sparse" not in recipe:
        raise SystemExit(f"{args.recipe}: not a sparse study (no sparse section)")
    print(f"{recipe['name']} over seeds {seeds}, {args.parallel} at a time, into {args.out}", flush=True)
    seconds = run_seeds(recipe, seeds, args.out, args.parallel)
    rows = findings(args.out, seeds)
    for seed, row in rows.items():
        print(f"seed {seed}: {row['frontier']['line']}")
        for found in row["targets"]:
            print(f"         {found['line']}")
    counts = {"frontier": sum(bool(row["frontier"]["holds"]) for row in rows.values())}
    for found in (rows[seeds[0]]["targets"] if seeds else []):
        counts[f"at {found['target']:g}"] = sum(
            bool(next(t["holds"] for t in row["targets"] if t["target"] == found["target"])) for row in rows.values())
    print("holds with: " + ", ".join(f"{name} {count} of {len(seeds)} seeds" for name, count in counts.items()))
    save_figures(args, {"recipe": recipe["name"], "seeds": {str(s): r for s, r in rows.items()},
                        "seconds": {str(s): v for s, v in seconds.items()}, "holds": counts})


if __name__ == "__main__":
    main()
