"""A layered node-link drawing of a sparse MLP: which nonzero weights carry the input to the output and which
are disconnected (matplotlib object API, Agg; no pyplot)."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

EFFECTIVE_COLOUR, DISCONNECTED_COLOUR, NODE_COLOUR = "tab:blue", "tab:red", "0.2"


def _node_positions(widths: list[int]) -> list[torch.Tensor]:
    """y of every node, per layer, centred around 0 (one unit apart)."""
    return [torch.arange(width, dtype=torch.float64) - (width - 1) / 2 for width in widths]


def draw_mlp(weights: list[torch.Tensor], effective: list[torch.Tensor], path: str | Path, title: str = "") -> Path:
    """Draw the MLP whose Linear weights (``[out, in]`` each, input side first) are ``weights``: one node per unit,
    one edge per nonzero weight — effective edges (``effective`` masks) solid, width ∝ |w|, disconnected nonzero
    ones red dashed; units with no effective incoming weight (inputs: outgoing) hollow. Saved as a PNG."""
    if len(weights) != len(effective) or not weights:
        raise ValueError("draw_mlp needs one effective mask per weight, and at least one weight")
    weights = [w.detach().cpu().float() for w in weights]
    effective = [m.detach().cpu().bool() for m in effective]
    widths = [weights[0].shape[1], *(w.shape[0] for w in weights)]
    ys = _node_positions(widths)
    largest = max((w.abs().max().item() for w in weights if w.numel()), default=1.0) or 1.0
    solid, solid_widths, dashed = [], [], []
    for layer, (weight, mask) in enumerate(zip(weights, effective)):
        for out_unit, in_unit in (weight != 0).nonzero().tolist():
            segment = [(layer, ys[layer][in_unit].item()), (layer + 1, ys[layer + 1][out_unit].item())]
            if mask[out_unit, in_unit]:
                solid.append(segment)
                solid_widths.append(0.4 + 3.0 * abs(weight[out_unit, in_unit].item()) / largest)
            else:
                dashed.append(segment)
    live = [effective[0].any(dim=0)] + [mask.any(dim=1) for mask in effective]
    figure = Figure(figsize=(1.6 + 1.6 * len(widths), 1.0 + 0.35 * max(widths)), dpi=120)
    axes = figure.add_subplot()
    axes.add_collection(LineCollection(solid, colors=EFFECTIVE_COLOUR, linewidths=solid_widths, zorder=1))
    axes.add_collection(LineCollection(dashed, colors=DISCONNECTED_COLOUR, linewidths=0.8, linestyles="dashed",
                                       zorder=1))
    for layer, (y, alive) in enumerate(zip(ys, live)):
        x = torch.full_like(y, layer)
        axes.scatter(x[alive], y[alive], s=60, color=NODE_COLOUR, zorder=2)
        axes.scatter(x[~alive], y[~alive], s=60, facecolors="white", edgecolors=NODE_COLOUR, zorder=2)
    axes.set_xticks(range(len(widths)), ["input", *(f"hidden {i}" for i in range(1, len(widths) - 1)), "output"])
    axes.set_yticks([])
    axes.set_xlim(-0.5, len(widths) - 0.5)
    axes.set_ylim(-(max(widths) + 1) / 2, (max(widths) + 1) / 2)
    for side in ("left", "right", "top"):
        axes.spines[side].set_visible(False)
    axes.legend(handles=[Line2D([], [], color=EFFECTIVE_COLOUR, label="on an input→output path"),
                         Line2D([], [], color=DISCONNECTED_COLOUR, linestyle="dashed", label="disconnected"),
                         Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
                                markeredgecolor=NODE_COLOUR, label="dead unit")],
                loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8, frameon=False)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
