"""The ``hfprune report`` command: statistics of a study or a table, written to files or printed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from rich.console import Console
from rich.table import Table

from hfprune.errors import HfpruneError
from hfprune.report.bootstrap import Bootstrap, pair_intervals, repeat_spread
from hfprune.report.plots import plot_file_name, scatter_plot
from hfprune.report.regret import halving_rows, regret_table, retrain_epochs
from hfprune.report.render import dumps, fmt, write_report
from hfprune.report.sparsity import connectivity_by_setting, sparsity_by_layer
from hfprune.report.stats import correlate, infer_higher_is_better
from hfprune.study.record import DIRECTIONS
from hfprune.io import read_json
from hfprune.study.store import read_trials
from hfprune.report.tables import (column_values, load_table, numeric_columns, pair_points, require_columns,
                                   setting_of)

DEFAULT_X, DEFAULT_Y = "pruned_train_loss", "final_test_acc"
# Study pairs, each used when both columns have values: the paper's two, the short-retraining
# proxy and the other criteria of App. B.1 (L1 magnitude and Taylor-FO of the pruned units).
STUDY_PAIRS = (
    ("pruned_train_loss", "final_test_acc"),
    ("pruned_train_loss", "final_test_loss"),
    ("short_test_acc", "final_test_acc"),
    ("pruned_l1", "final_test_acc"),
    ("pruned_l1", "final_test_loss"),
    ("pruned_taylor_fo", "final_test_acc"),
    ("pruned_taylor_fo", "final_test_loss"),
)
SELECTION_OUTCOMES = ("final_test_acc", "final_test_mean_score")  # what the regret table ranks candidates by
BENCHMARK_SCORE = re.compile(r"final_test_\w+_score")
ROUND_LOSS = re.compile(r"pruned_train_loss_round(\d+)")  # the iterative pipeline's rounds (Table A3)
Y_FLAG = "--higher-is-better / --lower-is-better"
X_FLAG = "--x-higher-is-better / --x-lower-is-better"


def _direction(column: str, directions: Mapping[str, bool], flag: str) -> bool:
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


def _has_values(rows: list[dict[str, Any]], column: str, source: str) -> bool:
    return column in numeric_columns(rows) and bool(np.isfinite(column_values(rows, column, source)).any())


def default_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``STUDY_PAIRS``, each round's pruned train loss against the final accuracy and loss (iterative studies),
    then the pruned train loss against every benchmark score (``final_test_<name>_score``)."""
    scores = sorted({column for row in rows for column in row if BENCHMARK_SCORE.fullmatch(column)},
                    key=lambda column: (column == "final_test_mean_score", column))
    rounds = sorted({column for row in rows for column in row if ROUND_LOSS.fullmatch(column)},
                    key=lambda column: int(ROUND_LOSS.fullmatch(column).group(1)))
    return [*STUDY_PAIRS, *((column, y) for column in rounds for y in ("final_test_acc", "final_test_loss")),
            *(("pruned_train_loss", column) for column in scores)]


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "study.json"
    if not path.exists():
        return {}
    try:
        manifest = read_json(path, "study manifest")
    except HfpruneError as error:
        raise HfpruneError(f"{error}; fix or delete it") from None
    return manifest if isinstance(manifest, dict) else {}


def report_study(directory: str | Path, pairs: Iterable[tuple[str, str]] | None = None,
                 directions: Mapping[str, bool] | None = None, plots: bool = True,
                 average_repeats: bool = True, bootstrap: Bootstrap | None = Bootstrap()) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and ``scatter_*.png`` into a study directory; return the JSON dict.

    ``pairs`` are (criterion, outcome) columns, by default those of ``STUDY_PAIRS`` that have values.
    ``directions`` maps a column to ``higher_is_better``, overriding the inference from its name
    (``pruned_l1`` counts as lower-is-better). Statistics are per setting; with ``average_repeats``
    the repeats of one mask are averaged into one point first. ``bootstrap`` sets the confidence intervals
    (resampled over candidates; None: none).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise HfpruneError(f"'{directory}' is not a study directory; for a table use --x and --y or --json")
    if _read_manifest(directory).get("kind") == "sparse":
        from hfprune.report.sparse_study import report_sparse_study

        return report_sparse_study(directory, plots=plots)
    rows = load_table(directory)
    source = str(directory)
    directions = {**declared_directions(rows), **(directions or {})}
    if pairs is None:
        pairs = [(x, y) for x, y in default_pairs(rows) if _has_values(rows, x, source) and _has_values(rows, y, source)]
        if not pairs:
            raise HfpruneError(f"{directory} has none of the default column pairs "
                               f"({', '.join(f'{x}/{y}' for x, y in STUDY_PAIRS)}); choose one with --x and --y "
                               f"from: {', '.join(numeric_columns(rows)) or 'none'}")
    pairs = list(pairs)
    require_columns(rows, {column for pair in pairs for column in pair}, source)
    manifest = _read_manifest(directory)
    summary: dict[str, Any] = {
        "study": manifest.get("name") or directory.resolve().name,
        "directory": source,
        "dense": manifest["dense"] if isinstance(manifest.get("dense"), dict) else None,
        "n_trials": len(rows),
        "settings": sorted({setting_of(row) for row in rows}),
        "average_repeats": average_repeats,
        "bootstrap": None if bootstrap is None else vars(bootstrap),
        "pairs": [],
        "results": [],
    }
    for x, y in pairs:
        x_higher, y_higher = _direction(x, directions, X_FLAG), _direction(y, directions, Y_FLAG)
        summary["pairs"].append({"x": x, "y": y, "x_higher_is_better": x_higher, "higher_is_better": y_higher})
        summary["results"] += analyse_pair(rows, x, y, x_higher, y_higher, source, average_repeats=average_repeats,
                                           plot_dir=directory if plots else None, bootstrap=bootstrap)
    outcome = next((c for c in SELECTION_OUTCOMES if _has_values(rows, c, source)), None)
    summary["selection"] = [] if outcome is None else regret_table(
        rows, directions, source, outcome, *retrain_epochs(directory), bootstrap=bootstrap)
    records = read_trials(directory) if directory.is_dir() else None
    summary["halving"] = halving_rows(records) if records is not None else []
    summary["sparsity"] = sparsity_by_layer(records) if records is not None else None
    summary["connectivity"] = connectivity_by_setting(records) if records is not None else None
    write_report(directory, summary)
    return summary


def report_table(path: str | Path, x: str, y: str, y_higher_is_better: bool | None = None,
                 x_higher_is_better: bool | None = None, average_repeats: bool = True) -> dict[str, Any]:
    """Statistics of one (x, y) pair over all rows of a study directory or table, plus ``settings``:
    the same per setting. Directions left as None are inferred from the column names."""
    rows = load_table(path)
    source = str(path)
    require_columns(rows, (x, y), source)
    declared = declared_directions(rows)
    if x_higher_is_better is None:
        x_higher_is_better = _direction(x, declared, X_FLAG)
    if y_higher_is_better is None:
        y_higher_is_better = _direction(y, declared, Y_FLAG)
    args = (rows, x, y, x_higher_is_better, y_higher_is_better, source)
    (overall,) = analyse_pair(*args, by_setting=False, average_repeats=average_repeats)
    if overall["n"] == 0:
        raise HfpruneError(f"no row of {source} has values for both '{x}' and '{y}'")
    overall["settings"] = analyse_pair(*args, by_setting=True, average_repeats=average_repeats)
    overall["source"] = source
    return overall


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


def frontier_summary_table(summary: dict[str, Any]) -> Table:
    """A rich table of a sparse study: per method and budget, accuracy and nominal / effective nonzeros."""
    table = Table(title="accuracy vs nonzero weights")
    for name, justify in (("method", "left"), ("budget", "right"), ("acc", "right"), ("search acc", "right"),
                          ("nonzeros", "right"), ("effective", "right")):
        table.add_column(name, justify=justify)
    for row in summary.get("table", []):
        table.add_row(str(row.get("method")), str(row.get("budget")), fmt(row.get("mean_acc")),
                      fmt(row.get("search_best_acc")), fmt(row.get("mean_nonzeros")),
                      fmt(row.get("mean_effective_nonzeros")))
    return table


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print ``report_study``'s summary (a table per pair), or ``report_table``'s result (all rows, then
    per setting)."""
    console = console or Console()
    if summary.get("kind") == "sparse":
        console.print(f"sparse-training report: {summary['study']} ({summary['n_trials']} trials)")
        console.print(frontier_summary_table(summary))
        return
    if "results" not in summary:
        per_setting = summary["settings"] if len(summary["settings"]) > 1 else []
        console.print(summary_table([summary] + per_setting, f"{summary['x']} vs. {summary['y']}"))
        return
    console.print(f"oracle-pruning report: {summary['study']} ({summary['n_trials']} trials)")
    for pair in summary["pairs"]:
        results = [r for r in summary["results"] if (r["x"], r["y"]) == (pair["x"], pair["y"])]
        console.print(summary_table(results, f"{pair['x']} vs. {pair['y']}"))


def run_report_command(path: str, x: str | None, y: str | None, as_json: bool, higher_is_better: bool | None,
                       x_higher_is_better: bool | None = None) -> None:
    """``hfprune report``: a study directory without --x/--y/--json gets its report files written and
    summarised; otherwise one pair (default pruned_train_loss vs. final_test_acc) is analysed and
    printed as a table, or as exactly one JSON object with ``as_json``."""
    if Path(path).is_dir() and x is None and y is None and not as_json:
        directions = {} if higher_is_better is None else {DEFAULT_Y: higher_is_better}
        if x_higher_is_better is not None:
            directions[DEFAULT_X] = x_higher_is_better
        summary = report_study(path, directions=directions)
        print_summary(summary)
        Console().print(f"report written to {Path(path) / 'report.md'} and {Path(path) / 'report.json'}")
        return
    result = report_table(path, x or DEFAULT_X, y or DEFAULT_Y, higher_is_better, x_higher_is_better)
    if as_json:
        print(dumps(result))
    else:
        print_summary(result)
