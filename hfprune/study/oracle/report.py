"""The report of an oracle-pruning study: for every default (criterion, outcome) pair and setting, Kendall tau,
validity, anomaly and counterexample ratios with bootstrap intervals and scatter plots; the regret of each
selection criterion; successive halving's rungs; sparsity per layer; nominal vs effective nonzeros."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from rich.console import Console

from hfprune.errors import HfpruneError
from hfprune.records.store import read_trials
from hfprune.report.bootstrap import Bootstrap
from hfprune.report.pairs import X_FLAG, Y_FLAG, analyse_pair, declared_directions, direction, has_values, summary_table
from hfprune.report.regret import halving_rows, regret_table
from hfprune.report.render import write_report
from hfprune.report.sparsity import connectivity_by_setting, sparsity_by_layer
from hfprune.report.tables import load_table, numeric_columns, require_columns, setting_of
from hfprune.study.directory import RECIPE_FILE, read_manifest
from hfprune.study.oracle.recipe import RetrainSection

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


def default_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``STUDY_PAIRS``, each round's pruned train loss against the final accuracy and loss (iterative studies),
    then the pruned train loss against every benchmark score (``final_test_<name>_score``)."""
    scores = sorted({column for row in rows for column in row if BENCHMARK_SCORE.fullmatch(column)},
                    key=lambda column: (column == "final_test_mean_score", column))
    rounds = sorted({column for row in rows for column in row if ROUND_LOSS.fullmatch(column)},
                    key=lambda column: int(ROUND_LOSS.fullmatch(column).group(1)))
    return [*STUDY_PAIRS, *((column, y) for column in rounds for y in ("final_test_acc", "final_test_loss")),
            *(("pruned_train_loss", column) for column in scores)]


def retrain_epochs(directory: Path) -> tuple[int | None, int | None]:
    """(full, short) retraining epochs from a study's ``recipe.yaml``; None where it does not say."""
    path = directory / RECIPE_FILE
    if not path.is_file():
        return None, None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("retrain"), dict):
        return None, None
    section = RetrainSection.model_validate(data["retrain"])
    short = section.scaled(section.short_fraction).epochs if section.short_fraction else None
    return section.epochs, short


def by_sweep_point(row: dict[str, Any]) -> dict[str, Any]:
    """A trial of a sweep point belongs to its setting at that point (``conv1@0.5 [LR2]``): an oracle study analyses
    every point of its sweep on its own (the paper's LR1 and LR2)."""
    point = row.get("sweep_point")
    return {**row, "setting": f"{row.get('setting')} [{point}]"} if point else row


def measured(records: list[dict[str, Any]]) -> list[str]:
    """What the trials measured after retraining (``final_test``, and ``final_train`` where asked)."""
    return sorted({part for record in records for part in record.get("measured", ["final_test", "final_train"])})


def report_oracle_study(directory: str | Path, pairs: Iterable[tuple[str, str]] | None = None,
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
    rows = [by_sweep_point(row) for row in load_table(directory)]
    source = str(directory)
    directions = {**declared_directions(rows), **(directions or {})}
    if pairs is None:
        pairs = [(x, y) for x, y in default_pairs(rows) if has_values(rows, x, source) and has_values(rows, y, source)]
        if not pairs:
            raise HfpruneError(f"{directory} has none of the default column pairs "
                               f"({', '.join(f'{x}/{y}' for x, y in STUDY_PAIRS)}); choose one with --x and --y "
                               f"from: {', '.join(numeric_columns(rows)) or 'none'}")
    pairs = list(pairs)
    require_columns(rows, {column for pair in pairs for column in pair}, source)
    manifest = read_manifest(directory)
    planned = manifest.get("trials_planned")
    summary: dict[str, Any] = {
        "study": manifest.get("name") or directory.resolve().name,
        "directory": source,
        "dense": manifest["dense"] if isinstance(manifest.get("dense"), dict) else None,
        "n_trials": len(rows),
        "trials_planned": planned if isinstance(planned, int) else None,
        "best": _best(directory),
        "settings": sorted({setting_of(row) for row in rows}),
        "average_repeats": average_repeats,
        "bootstrap": None if bootstrap is None else vars(bootstrap),
        "pairs": [],
        "results": [],
    }
    for x, y in pairs:
        x_higher, y_higher = direction(x, directions, X_FLAG), direction(y, directions, Y_FLAG)
        summary["pairs"].append({"x": x, "y": y, "x_higher_is_better": x_higher, "higher_is_better": y_higher})
        summary["results"] += analyse_pair(rows, x, y, x_higher, y_higher, source, average_repeats=average_repeats,
                                           plot_dir=directory if plots else None, bootstrap=bootstrap)
    records = read_trials(directory)
    for result in summary["results"]:
        result["oracle_pruned"] = _what_it_pruned(records, result.get("oracle_id"))
    outcome = next((c for c in SELECTION_OUTCOMES if has_values(rows, c, source)), None)
    summary["selection"] = [] if outcome is None else regret_table(
        rows, directions, source, outcome, *retrain_epochs(directory), bootstrap=bootstrap)
    summary["measured_after_retraining"] = measured(records)
    summary["halving"] = halving_rows(records)
    summary["sparsity"] = sparsity_by_layer(records)
    summary["connectivity"] = connectivity_by_setting(records)
    write_report(directory, summary)
    return summary


def _what_it_pruned(records: list[dict[str, Any]], point: str | None) -> str | None:
    """What the trial (or mask) behind a point pruned, in words: its kept units per group, or its method."""
    row = next((record for record in records
                if point in (record.get("trial_id"), f"{setting_of(record)}:{record.get('mask_id')}")), None)
    if row is None:
        return None
    if isinstance(row.get("mask"), dict):
        return "; ".join(f"{group} keeps {', '.join(map(str, units))}" for group, units in row["mask"].items())
    return row.get("method")


def _best(directory: Path) -> dict[str, Any] | None:
    """What ``best/`` holds (from best.json): the trial and the metric it was chosen by."""
    try:
        best = json.loads((directory / "best.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return best if isinstance(best, dict) and "trial_id" in best else None


def print_oracle_summary(summary: dict[str, Any], console: Console) -> None:
    """A table per (criterion, outcome) pair, one row per setting."""
    console.print(f"oracle-pruning report: {summary['study']} ({summary['n_trials']} trials)")
    for pair in summary["pairs"]:
        results = [r for r in summary["results"] if (r["x"], r["y"]) == (pair["x"], pair["y"])]
        console.print(summary_table(results, f"{pair['x']} vs. {pair['y']}"))
