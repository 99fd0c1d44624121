"""Wall time and peak memory of ``hfprune report FILE --json`` on a large table, end to end.

Writes a seeded CSV of ``--rows`` trials (pruned train loss vs. final test accuracy and loss, correlated,
rounded so that many values tie, as accuracies on a 10,000-image test set do), then runs
``hfprune report FILE --json`` in a fresh subprocess and prints its wall and CPU time and peak resident memory,
then the time of the imports alone (the start-up any report pays).
Without settings the table is analysed twice over all its rows (once overall, once as the single setting
"all"), the hardest case. Target: under 10 s for 100,000 rows on 2 cores.

    python benchmarks/report_scale.py [--rows 100000] [--settings 1] [--seed 0] [--keep FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_table(path: Path, rows: int, settings: int, seed: int) -> None:
    """A seeded CSV of ``rows`` trials; a ``setting`` column only when ``settings`` > 1."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, -0.3], [-0.3, 1]], size=rows)
    loss = np.round(2.0 + 0.1 * z[:, 0], 4)
    acc = np.clip(np.round(0.9 + 0.02 * z[:, 1], 4), 0, 1)  # 10,000 test images: 4 decimals
    test_loss = np.round(0.3 - 0.05 * z[:, 1] + 0.01 * rng.standard_normal(rows), 3)
    header = ["trial_id", "mask_id", "pruned_train_loss", "final_test_acc", "final_test_loss"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header + (["setting"] if settings > 1 else []))
        for i in range(rows):
            row = [f"t{i}", f"m{i}", loss[i], acc[i], test_loss[i]]
            writer.writerow(row + ([f"s{i % settings}"] if settings > 1 else []))


def _timed(command: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, finished process) of ``command`` run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), done


def run_report(path: Path) -> tuple[float, float, float, dict]:
    """(wall s, CPU s, peak resident MiB, parsed JSON) of ``hfprune report PATH --json`` in a subprocess."""
    wall, cpu, done = _timed([sys.executable, "-m", "hfprune", "report", str(path), "--json"])
    if done.returncode != 0:
        sys.exit(f"hfprune report failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux; the only child so far
    return wall, cpu, peak_kib / 1024, json.loads(done.stdout)


def startup() -> tuple[float, float]:
    """(wall s, CPU s) of importing what ``hfprune report`` imports, doing nothing: the part no table changes."""
    wall, cpu, _ = _timed([sys.executable, "-c", "import hfprune.cli, hfprune.report.pairs"])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--settings", type=int, default=1, help="settings to spread the rows over (1: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the table here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "table.csv"
        write_table(path, args.rows, args.settings, args.seed)
        wall, cpu, peak_mib, result = run_report(path)
    start_wall, start_cpu = startup()
    print(f"rows {args.rows}, settings {args.settings}: wall {wall:.2f} s (CPU {cpu:.2f} s), "
          f"peak memory {peak_mib:.0f} MiB; of which start-up (imports alone) wall {start_wall:.2f} s "
          f"(CPU {start_cpu:.2f} s)")
    print(f"n {result['n']}, tau {result['kendall_tau']:.4f}, anomaly ratio {result['anomaly_ratio']:.4f}, "
          f"counterexample ratio {result['counterexample_ratio']:.4f}, resamples {result.get('resamples')}")

if __name__ == "__main__":
    main()
