"""The report of a sparse-training study: accuracy against nonzero weights for the search and every method (the
paper's main figure), nominal beside effective nonzeros for every trial, the data, and one pruned model drawn
with its disconnected weights."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from hfprune.data.registry import DATASETS
from hfprune.io import quiet_hf_progress
from hfprune.records.store import read_trials
from hfprune.report.frontier import frontier_json, frontier_markdown, frontier_plot
from hfprune.report.format import dumps, fmt
from hfprune.models import FAMILIES
from hfprune.study.directory import read_manifest, recipe_as_run
from hfprune.study.recipe import ReportSection
from hfprune.study.sparse.candidates import DENSE, SEARCH
from hfprune.study.sweep import best_per_candidate

FRONTIER_PLOT, CONNECTIVITY_PLOT = "frontier.png", "connectivity.png"


def _trial_rows(records: list[dict], accuracy: str) -> list[str]:
    """Every trial's nominal and effective nonzeros beside its accuracy (named ``accuracy``)."""
    lines = ["## Every trial: nominal vs effective nonzeros", "",
             f"| trial | nonzeros | effective | disconnected | with live biases | {accuracy} |",
             "|---|---:|---:|---:|---:|---:|"]
    for record in sorted(records, key=lambda r: (r["setting"], r.get("nonzeros", 0), r["trial_id"])):
        lines.append(f"| {record['trial_id']} | {record.get('nonzeros')} | {record.get('effective_nonzeros')} | "
                     f"{record.get('disconnected_weights')} | {record.get('model_nonzeros', '—')} | "
                     f"{record.get('final_test_acc', float('nan')):.4f} |")
    return lines


def _most_disconnected(records: list[dict], directory: Path) -> dict | None:
    """The method trial, still connected from input to output, with the largest share of disconnected weights
    whose checkpoint was kept."""
    kept = [r for r in records if r.get("kind") == "method" and r.get("disconnected_weights")
            and r.get("effective_nonzeros") and (directory / "checkpoints" / r["trial_id"].replace(":", "_")).is_dir()]
    return max(kept, key=lambda r: (r["disconnected_weights"] / max(1, r["nonzeros"]), -r["nonzeros"]), default=None)


def _draw_connectivity(record: dict, directory: Path) -> str:
    from hfprune.models import adapter_for_checkpoint
    from hfprune.pruning.connectivity import analyse
    from hfprune.report.connectivity_plot import draw_mlp

    folder = directory / "checkpoints" / record["trial_id"].replace(":", "_")
    with quiet_hf_progress():
        model = adapter_for_checkpoint(str(folder)).load_pretrained(str(folder))
    connectivity = analyse(model)
    weights = [layer.weight.detach() for layer in model.layers]
    draw_mlp(weights, list(connectivity.effective_masks().values()), directory / CONNECTIVITY_PLOT,
             title=f"{record['trial_id']}: {record['nonzeros']} nonzeros, {record['effective_nonzeros']} effective")
    return CONNECTIVITY_PLOT


def _plot_points(dataset: str, directory: Path) -> str:
    """The study's 2-D point set (e.g. the Cubist Spiral), drawn by class."""
    from hfprune.report.spiral_plot import plot_spiral

    data = DATASETS[dataset].bundled()
    name = f"{dataset}.png"
    plot_spiral(data.train.x, data.train.y, directory / name)
    return name


def _sweep_section(records: list[dict], sweep: dict | None) -> tuple[dict[str, Any], list[str]]:
    """The sweep's reading: every candidate's best run over its points and runs (the paper's point), as data for
    every candidate and as a table for the methods and the dense model (the search's candidates are many)."""
    rows = best_per_candidate(records)
    data = {"points": sorted({r.get("sweep_point", "") for r in records}), "runs_per_candidate":
            max((row["runs"] for row in rows), default=0), "best_per_candidate": rows}
    if not sweep:
        return data, []
    lines = ["## Sweep: the best run of every candidate", "",
             f"Every candidate trained at {len(data['points'])} sweep point(s) × {sweep.get('runs', 1)} run(s) "
             f"(initialisation: {sweep.get('init', 'per_run')}); its point in the figure and table is its best run "
             "(the paper's reading), every run's record is in trials.jsonl.", "",
             "| candidate | runs | best acc | mean acc | best point | best run |", "|---|---:|---:|---:|---|---:|"]
    for row in rows:
        if row["setting"] != SEARCH:
            lines.append(f"| {row['setting']}:{row['mask_id']} | {row['runs']} | {row['best']:.4f} | "
                         f"{row['mean']:.4f} | {row['best_point'] or '—'} | {row['best_run']} |")
    return data, lines + [""]


def run_to_run(records: list[dict]) -> dict[str, Any] | None:
    """How far apart one method's runs at one budget end (best minus worst final accuracy): the noise a gap between
    best runs must exceed; None without a method and budget run more than once."""
    runs: dict[tuple, list[float]] = {}
    for record in records:
        if record.get("kind") == "method" and record.get("final_test_acc") is not None:
            runs.setdefault((record["method"], record["budget"]), []).append(record["final_test_acc"])
    spreads = [max(accs) - min(accs) for accs in runs.values() if len(accs) > 1]
    if not spreads:
        return None
    return {"median_spread": statistics.median(spreads), "max_spread": max(spreads),
            "runs": statistics.median(len(accs) for accs in runs.values())}


def report_sparse_study(directory: str | Path, plots: bool = True) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and the figures of a sparse study; return the JSON dict."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    records = read_trials(directory)
    recipe = recipe_as_run(directory)
    section, defaults = recipe.get("report") or {}, ReportSection()
    x, targets = section.get("x_axis", defaults.x_axis), section.get("target_acc", defaults.target_acc)
    denses = [r["final_test_acc"] for r in records if r["setting"] == DENSE and r.get("final_test_acc") is not None]
    spec = DATASETS.get(recipe.get("data", {}).get("dataset"))
    on_train = spec is not None and spec.test_is_train
    sparse = [r for r in records if r["setting"] != DENSE]
    sweep, sweep_lines = _sweep_section(records, recipe.get("sweep"))
    summary: dict[str, Any] = {"kind": "sparse", "study": manifest.get("name") or directory.resolve().name,
                               "directory": str(directory), "n_trials": len(records),
                               "phase2_widths": manifest.get("phase2_widths"),
                               "total_weights": manifest.get("total_weights"),
                               "dense_acc": max(denses, default=None),
                               "dense_runs": len(denses), "dense_mean_acc": statistics.fmean(denses) if denses else None,
                               "accuracy_on_training_points": on_train, "run_to_run": run_to_run(records),
                               "final_count": (recipe.get("sparse") or {}).get("final_count", "exact"),
                               **frontier_json(sparse, x, targets), "sweep": sweep}
    figures: list[str] = []
    if plots and records:
        frontier_plot(sparse, directory / FRONTIER_PLOT, x=x)  # two panels: the x-axis and effective nonzeros
        figures.append(FRONTIER_PLOT)
        dataset = recipe.get("data", {}).get("dataset")
        if DATASETS.get(dataset) is not None and DATASETS[dataset].task == "binary_classification":
            figures.append(_plot_points(dataset, directory))
        family = FAMILIES.get(recipe.get("model", {}).get("family"))
        drawn = _most_disconnected(records, directory) if family is not None and family.searchable else None
        if drawn is not None:
            figures.append(_draw_connectivity(drawn, directory))
    summary["figures"] = figures
    counts = ("exactly its budget of nonzero weights" if summary["final_count"] == "exact" else
              "as many nonzero weights as the reference code's thresholds leave (sparse.final_count: reference)")
    dense = ("" if not denses else f"; the dense model reaches {max(denses):.4f}" + (
        f" (best of {len(denses)} runs, mean {summary['dense_mean_acc']:.4f})" if len(denses) > 1 else " (one run)"))
    noise = summary["run_to_run"]
    caveat = ("Each comparison is between best runs. " + (
        f"One method's runs at one budget (about {noise['runs']:g} each) end {noise['median_spread']:.4f} apart "
        f"at the median and up to {noise['max_spread']:.4f}: a gap smaller than that is within run-to-run noise."
        if noise else "No method and budget was run more than once here, so run-to-run noise is not measured: "
        "read small gaps as unsettled."))
    where = ("Accuracy is measured on the training points (this dataset's test split is its train split, as in "
             "the paper)." if on_train else "Accuracy is measured on the test split.")
    lines = [f"# Sparse-training study: {summary['study']}", "",
             f"{len(records)} trials; model weights {summary['total_weights']}" + dense
             + (f"; phase-2 widths {summary['phase2_widths']}" if summary["phase2_widths"] else "")
             + f"; every method ends with {counts}. {where}", "",
             f"Finding: {summary['finding']['line']}.", "",
             *(line for found in summary["targets"] for line in (f"Finding: {found['line']}.", "")), caveat, "",
             *frontier_markdown(sparse, x, targets), "", *sweep_lines, *(f"![{name}]({name})" for name in figures), "",
             *_trial_rows(records, "acc on training points" if on_train else "test acc")]
    (directory / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "report.json").write_text(dumps(summary) + "\n", encoding="utf-8")
    return summary


def print_sparse_summary(summary: dict[str, Any], console) -> None:
    """Per method and budget: accuracy, the search's best at that budget, nominal and effective nonzeros."""
    console.print(f"sparse-training report: {summary['study']} ({summary['n_trials']} trials; x-axis "
                  f"{summary.get('x_label', 'nonzero weights')})")
    if summary.get("finding"):
        console.print(f"finding: {summary['finding']['line']}")
    for found in summary.get("targets", []):
        console.print(f"finding: {found['line']}")
    noise = summary.get("run_to_run")
    if noise:
        console.print(f"run-to-run spread of one method at one budget: median {noise['median_spread']:.4f}, "
                      f"max {noise['max_spread']:.4f} (a smaller gap is noise)")
    if summary.get("accuracy_on_training_points"):
        console.print("accuracy is measured on the training points (test split = train split, as in the paper)")
    table = Table(title="accuracy vs nonzero weights")
    for name, justify in (("method", "left"), ("budget", "right"), ("acc", "right"), ("search acc", "right"),
                          ("nonzeros", "right"), ("effective", "right")):
        table.add_column(name, justify=justify)
    for row in summary.get("table", []):
        table.add_row(str(row.get("method")), str(row.get("budget")), fmt(row.get("mean_acc")),
                      fmt(row.get("search_best_acc")), fmt(row.get("mean_nonzeros")),
                      fmt(row.get("mean_effective_nonzeros")))
    console.print(table)
