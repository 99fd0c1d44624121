"""The report of a sparse-training study: accuracy against nonzero weights for the search and every method (the
paper's main figure), nominal beside effective nonzeros for every trial, the data, and one pruned model drawn
with its disconnected weights."""

from __future__ import annotations

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
from hfprune.study.sparse.candidates import DENSE, SEARCH
from hfprune.study.sweep import best_per_candidate

FRONTIER_PLOT, CONNECTIVITY_PLOT = "frontier.png", "connectivity.png"


def _trial_rows(records: list[dict]) -> list[str]:
    """Every trial's nominal and effective nonzeros beside its accuracy (the issue's per-trial view)."""
    lines = ["## Every trial: nominal vs effective nonzeros", "",
             "| trial | nonzeros | effective | disconnected | with live biases | test acc |",
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


def report_sparse_study(directory: str | Path, plots: bool = True) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and the figures of a sparse study; return the JSON dict."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    records = read_trials(directory)
    recipe = recipe_as_run(directory)
    x = (recipe.get("report") or {}).get("x_axis", "nonzeros")
    dense = max((r for r in records if r["setting"] == DENSE), key=lambda r: r.get("final_test_acc") or 0,
                default=None)
    sparse = [r for r in records if r["setting"] != DENSE]
    sweep, sweep_lines = _sweep_section(records, recipe.get("sweep"))
    summary: dict[str, Any] = {"kind": "sparse", "study": manifest.get("name") or directory.resolve().name,
                               "directory": str(directory), "n_trials": len(records),
                               "phase2_widths": manifest.get("phase2_widths"),
                               "total_weights": manifest.get("total_weights"),
                               "dense_acc": None if dense is None else dense.get("final_test_acc"),
                               "final_count": (recipe.get("sparse") or {}).get("final_count", "exact"),
                               **frontier_json(sparse, x), "sweep": sweep}
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
    lines = [f"# Sparse-training study: {summary['study']}", "",
             f"{len(records)} trials; model weights {summary['total_weights']}"
             + ("" if dense is None else f"; the dense model reaches {summary['dense_acc']:.4f}")
             + (f"; phase-2 widths {summary['phase2_widths']}" if summary["phase2_widths"] else "")
             + f"; every method ends with {counts}.", "",
             f"Finding: {summary['finding']['line']}.", "",
             *frontier_markdown(sparse, x), "", *sweep_lines, *(f"![{name}]({name})" for name in figures), "",
             *_trial_rows(records)]
    (directory / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "report.json").write_text(dumps(summary) + "\n", encoding="utf-8")
    return summary


def print_sparse_summary(summary: dict[str, Any], console) -> None:
    """Per method and budget: accuracy, the search's best at that budget, nominal and effective nonzeros."""
    console.print(f"sparse-training report: {summary['study']} ({summary['n_trials']} trials; x-axis "
                  f"{summary.get('x_label', 'nonzero weights')})")
    if summary.get("finding"):
        console.print(f"finding: {summary['finding']['line']}")
    table = Table(title="accuracy vs nonzero weights")
    for name, justify in (("method", "left"), ("budget", "right"), ("acc", "right"), ("search acc", "right"),
                          ("nonzeros", "right"), ("effective", "right")):
        table.add_column(name, justify=justify)
    for row in summary.get("table", []):
        table.add_row(str(row.get("method")), str(row.get("budget")), fmt(row.get("mean_acc")),
                      fmt(row.get("search_best_acc")), fmt(row.get("mean_nonzeros")),
                      fmt(row.get("mean_effective_nonzeros")))
    console.print(table)
