"""Scatter plots like Fig. 2 of "Is Oracle Pruning the True Oracle?": criterion vs. outcome, oracle marked.

Figures are built with matplotlib's object API and rendered by Agg; pyplot (and its global backend
state) is never touched, so plotting works headless and inside notebooks alike.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hfprune.report.stats import anomaly_ratio


def safe_name(text: str) -> str:
    """A file-name-safe form of ``text``; a short hash keeps distinct texts apart once characters are replaced."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "x"
    if slug != text:
        slug += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return slug


def plot_file_name(setting: str, x: str, y: str) -> str:
    """``scatter_<setting>_<x>_vs_<y>.png`` with every part made safe."""
    return f"scatter_{safe_name(setting)}_{safe_name(x)}_vs_{safe_name(y)}.png"


def _format(value: float | None, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def multiplicity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How many points share each point's exact (x, y) position (accuracies over a test set are multiples of
    1/size, so points of equal accuracy and loss fall on one spot)."""
    if not len(x):
        return np.zeros(0, dtype=int)
    _, inverse, counts = np.unique(np.stack([x, y], axis=1), axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def scatter_plot(x: np.ndarray, y: np.ndarray, result: dict, path: str | Path, setting: str) -> Path:
    """Write one PNG of ``correlate``'s ``result`` for these points: trials, anomalies (strictly better y
    than the oracle) and the oracle (best x) as a red star; the title gives tau and p. Points on one spot are
    drawn once, their marker's area growing with their number, and the title says how many share a spot."""
    _, oracle, anomalies = anomaly_ratio(x, y, result["x_higher_is_better"], result["higher_is_better"])
    ordinary = ~anomalies
    if oracle is not None:
        ordinary[oracle] = False
    shared = multiplicity(x, y)
    figure = Figure(figsize=(5.5, 4.2), dpi=120)
    axes = figure.add_subplot()
    axes.scatter(x[ordinary], y[ordinary], s=14 * shared[ordinary], color="tab:blue", alpha=0.6, label="trials")
    axes.scatter(x[anomalies], y[anomalies], s=18 * shared[anomalies], color="tab:orange", alpha=0.8,
                 label=f"anomalies ({result['n_anomalies']}, better {result['y']} than oracle)")
    if oracle is not None:
        axes.scatter([x[oracle]], [y[oracle]], s=220, marker="*", color="red", edgecolors="black",
                     linewidths=0.6, zorder=3, label="oracle (best " + result["x"] + ")")
    axes.set_xlabel(result["x"] + (" (higher is better)" if result["x_higher_is_better"] else " (lower is better)"))
    axes.set_ylabel(result["y"] + (" (higher is better)" if result["higher_is_better"] else " (lower is better)"))
    stacked = int((shared > 1).sum())
    together = f"; {stacked} share a spot: larger markers" if stacked else ""
    axes.set_title(f"{setting}: Kendall tau = {_format(result['kendall_tau'], '.3f')}, "
                   f"p = {_format(result['p_value'], '.2g')} (n = {result['n']}{together})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
