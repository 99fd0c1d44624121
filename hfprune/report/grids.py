"""Compact tables of a study's results in the paper's layouts, rendered into ``report.md``.

- Table 2 (LeNet): Kendall tau / p of the pruned train loss vs. final test accuracy, one row per ratio and one
  column per layer, over the settings that prune one group at one ratio (``conv1@0.5``); invalid cells are
  marked (Def. 3.1).
- Table A3 (iterative pipeline): per setting and round, tau / p of that round's pruned train loss vs. final
  test accuracy and loss.
"""

from __future__ import annotations

import re

from hfprune.report.format import fmt

SINGLE_GROUP = re.compile(r"(?P<group>[^+@]+)@(?P<ratio>[0-9.]+)")
ROUND = re.compile(r"pruned_train_loss_round(\d+)")
INVALID = "✗"


def _cell(result: dict | None) -> str:
    if result is None or result.get("kendall_tau") is None:
        return "—"
    text = f"{fmt(result['kendall_tau'])} / {fmt(result['p_value'], 'p')}"
    return text if result["valid"] else f"{text} {INVALID}"


def render_ratio_layer_grid(summary: dict, y: str = "final_test_acc") -> list[str]:
    """Table 2: ratio × layer cells of (pruned_train_loss, ``y``); empty unless at least two settings each prune
    one group at one ratio (a LeNet study such as lenet5_mnist)."""
    cells: dict[tuple[str, str], dict] = {}
    for r in summary["results"]:
        match = SINGLE_GROUP.fullmatch(r["setting"])
        if match and (r["x"], r["y"]) == ("pruned_train_loss", y):
            cells[(match["ratio"], match["group"])] = r
    if len(cells) < 2:
        return []
    ratios = sorted({ratio for ratio, _ in cells}, key=float)
    groups = sorted({group for _, group in cells})
    lines = [f"## Table 2: pruned_train_loss vs. {y}, Kendall tau / p by ratio and layer", "",
             f"Cells marked {INVALID} are invalid (Def. 3.1); — where the setting was not run.", "",
             "| ratio | " + " | ".join(groups) + " |", "|---:|" + "---:|" * len(groups)]
    lines += [f"| {ratio} | " + " | ".join(_cell(cells.get((ratio, group))) for group in groups) + " |"
              for ratio in ratios]
    return lines + [""]


def render_rounds(summary: dict) -> list[str]:
    """Table A3: per setting and round, tau / p vs. final test accuracy and loss; empty for one-shot studies."""
    rows: dict[tuple[str, int], dict[str, dict]] = {}
    for r in summary["results"]:
        match = ROUND.fullmatch(r["x"])
        if match and r["y"] in ("final_test_acc", "final_test_loss"):
            rows.setdefault((r["setting"], int(match[1])), {})[r["y"]] = r
    if not rows:
        return []
    lines = ["## Table A3: each round's pruned train loss vs. the final results", "",
             f"Kendall tau / p; {INVALID} marks invalid (Def. 3.1).", "",
             "| setting | round | vs. final_test_acc | vs. final_test_loss |", "|---|---:|---:|---:|"]
    for (setting, k), by_y in sorted(rows.items()):
        lines.append(f"| {setting} | {k} | {_cell(by_y.get('final_test_acc'))} | "
                     f"{_cell(by_y.get('final_test_loss'))} |")
    return lines + [""]
