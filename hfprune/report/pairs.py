"""Statistics of (criterion, outcome) column pairs over trial rows — per setting, with bootstrap intervals, the
spread between repeats and scatter plots — for any table of trials (``hfprune report TABLE``) and for the
reports of the study kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from rich.console import Console
from rich.table import Table

from hfprune.errors import HfpruneError
from hfprune.records.record import DIRECTIONS
from hfprune.report.bootstrap import Bootstrap, pair_intervals, repeat_spread
from hfprune.report.plots import plot_file_name, scatter_plot
from hfprune.report.format import fmt
from hfprune.report.stats import correlate, infer_higher_is_better
from hfprune.report.tables import (ALL_SETTINGS, column_values, load_table, numeric_columns, pair_points,
                                   require_columns, setting_of)

DEFAULT_X, DEFAULT_Y = "pruned_train_loss", "final_test_acc"
Y_FLAG = "--higher-is-better / --lower-is-better"
X_FLAG = "--x-higher-is-better / --x-lower-is-better"


def direction(column: str, directions: Mapping[str, bool], flag: str) -> bool:
    """``directions[column]`` if given or declared by the records, else inferred from the column's name (tables
    from other tools, which declare nothing)."""
    return directions[column] if column in directions else infer_higher_is_better(column, flag)


def declared_directions(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The directions that typed trial records declare (``higher_is_better`` in each record, flattened)."""
    prefix = DIRECTIONS + "."
    declared: dict[str, bool] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix) and isinstance(value, bool):
                declared.setdefault(key[len(prefix):], value)
    return declared


def _repeats_of(rows: list[dict[str, Any]], y: str, source: str, setting: str | None) -> dict | None:
    """``repeat_spread`` of column ``y`` over the repeats of each mask of ``setting`` (None: every row)."""
    ys = column_values(rows, y, source)
    by_mask: dict[Any, list[float]] = {}
    for row, value in zip(rows, ys):
        if (setting is None or setting_of(row) == setting) and row.get("mask_id") is not None and np.isfinite(value):
            by_mask.setdefault((setting_of(row), row["mask_id"]), []).append(float(value))
    return repeat_spread(by_mask)


def analyse_pair(rows: list[dict[str, Any]], x: str, y: str, x_higher_is_better: bool, y_higher_is_better: bool,
                 source: str, by_setting: bool = True, average_repeats: bool = True,
                 plot_dir: Path | None = None, bootstrap: Bootstrap | None = Bootstrap()) -> list[dict[str, Any]]:
    """``correlate`` per setting (or over all rows), with drop counts, bootstrap intervals (unless ``bootstrap``
    is None), the spread between repeats and, given ``plot_dir``, a scatter plot."""
    results = []
    for setting, points in pair_points(rows, x, y, source, by_setting, average_repeats).items():
        result = {"setting": setting,
                  **correlate(points.x, points.y, x, y, x_higher_is_better, y_higher_is_better, points.ids),
                  "n_trials": points.n_trials, "n_dropped": points.n_dropped}
        if bootstrap is not None:
            result.update(pair_intervals(points.x, points.y, x_higher_is_better, y_higher_is_better, bootstrap))
        result["repeat_spread"] = _repeats_of(rows, y, source, setting if by_setting else None)
        if plot_dir is not None and result["n"]:
            path = scatter_plot(points.x, points.y, result, plot_dir / plot_file_name(setting, x, y), setting)
            result["plot"] = path.name  # relative to the report, which lives in plot_dir
        results.append(result)
    return results


def report_table(path: str | Path, x: str, y: str, y_higher_is_better: bool | None = None,
                 x_higher_is_better: bool | None = None, average_repeats: bool = True) -> dict[str, Any]:
    """Statistics of one (x, y) pair over all rows of a study directory or table, plus ``settings``:
    the same per setting. Directions left as None are inferred from the column names."""
    rows = load_table(path)
    source = str(path)
    require_columns(rows, (x, y), source)
    declared = declared_directions(rows)
    if x_higher_is_better is None:
        x_higher_is_better = direction(x, declared, X_FLAG)
    if y_higher_is_better is None:
        y_higher_is_better = direction(y, declared, Y_FLAG)
    args = (rows, x, y, x_higher_is_better, y_higher_is_better, source)
    (overall,) = analyse_pair(*args, by_setting=False, average_repeats=average_repeats)
    if overall["n"] == 0:
        raise HfpruneError(f"no row of {source} has values for both '{x}' and '{y}'")
    one_group = {setting_of(row) for row in rows} == {ALL_SETTINGS}  # no settings: the same points again
    overall["settings"] = [dict(overall)] if one_group else analyse_pair(*args, by_setting=True,
                                                                          average_repeats=average_repeats)
    overall["source"] = source
    return overall


def has_values(rows: list[dict[str, Any]], column: str, source: str) -> bool:
    """Whether some row has a finite number in ``column``."""
    return column in numeric_columns(rows) and bool(np.isfinite(column_values(rows, column, source)).any())


def summary_table(results: list[dict[str, Any]], title: str) -> Table:
    """A rich table with one row per setting of one (x, y) pair."""
    table = Table(title=title)
    table.add_column("setting", overflow="fold")
    for name in ("n", "tau", "p", "valid", "anomaly", "counterex."):
        table.add_column(name, justify="right")
    for r in results:
        valid = "[green]yes[/green]" if r["valid"] else "[red]no[/red]"
        table.add_row(r["setting"], str(r["n"]), fmt(r["kendall_tau"]), fmt(r["p_value"], "p"), valid,
                      fmt(r["anomaly_ratio"], "ratio"), fmt(r["counterexample_ratio"], "ratio"))
    return table


def print_pair_summary(result: dict[str, Any], console: Console) -> None:
    """Print :func:`report_table`'s result: all rows, then each setting where there are several."""
    per_setting = result["settings"] if len(result["settings"]) > 1 else []
    console.print(summary_table([result] + per_setting, f"{result['x']} vs. {result['y']}"))
