"""A scatter of a two-class 2-D point set such as the Cubist Spiral (matplotlib object API, Agg; no pyplot)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure


def plot_spiral(x: torch.Tensor, y: torch.Tensor, path: str | Path, title: str = "Cubist Spiral") -> Path:
    """Write a PNG scatter of points ``x`` ``[N, 2]`` coloured by binary label ``y`` ``[N]`` to ``path``."""
    x, y = torch.as_tensor(x).detach().cpu().float(), torch.as_tensor(y).detach().cpu().reshape(-1)
    figure = Figure(figsize=(5, 5))
    axes = figure.add_subplot()
    for label, colour in ((0, "tab:blue"), (1, "tab:orange")):
        chosen = x[y == label]
        axes.scatter(chosen[:, 0], chosen[:, 1], s=1, color=colour, label=f"class {label}", rasterized=True)
    axes.set_aspect("equal")
    axes.set_title(title)
    axes.legend(loc="upper right", markerscale=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, format="png")
    return path
