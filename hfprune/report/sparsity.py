"""Sparsity per parameter and per decoder layer: counted from masks, from a model's live zeros or from trial
records, tabulated one way for the study report (a column per method) and the model cards (a column per
projection)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.targets import layer_group, layer_index

Counts = dict[str, tuple[int, int]]  # parameter name -> (pruned entries, all entries)


def mask_counts(masks: Mapping[str, torch.Tensor]) -> Counts:
    """Pruned and total entries of every masked parameter (True = kept)."""
    return {name: (int((~mask).sum()), mask.numel()) for name, mask in masks.items()}


@torch.no_grad()
def live_counts(model: nn.Module, names: Iterable[str]) -> Counts:
    """Zero and total entries of each named parameter (or module's ``.weight``) as the model holds them now."""
    parameters = dict(model.named_parameters())
    counts = {}
    for name in names:
        found = next((candidate for candidate in (name, f"{name}.weight") if candidate in parameters), None)
        if found is None:
            raise HfpruneError(f"the model has no parameter {name!r} (nor {name}.weight)")
        parameter = parameters[found]
        counts[found] = (parameter.numel() - int(torch.count_nonzero(parameter)), parameter.numel())
    return counts


def record_counts(record: Mapping[str, Any]) -> Counts:
    """The counts an unstructured trial's record (or ``hfprune_pruning.json``) keeps as sparsity facts."""
    weights = record["layer_weights"]
    return {name: (round(sparsity * weights[name]), weights[name]) for name, sparsity in record["layer_sparsity"].items()}


def sparsity_facts(counts: Counts) -> dict[str, Any]:
    """The facts a record keeps: overall sparsity over the counted weights and each parameter's own."""
    total = sum(size for _, size in counts.values())
    return {"sparsity": sum(pruned for pruned, _ in counts.values()) / total if total else 0.0,
            "target_weights": total,
            "layer_sparsity": {name: pruned / size for name, (pruned, size) in counts.items()},
            "layer_weights": {name: size for name, (_, size) in counts.items()}}


def layer_table(columns: Mapping[str, Counts], layer_of: Callable[[str], Any] = layer_group) -> dict[str, Any]:
    """``{"columns", "rows": [{"layer", <column>: sparsity or None}], "overall": {<column>: sparsity}}``: each
    column's parameters summed by decoder layer (``layer_of`` a parameter name), rows in first-seen order."""
    layers = list(dict.fromkeys(layer_of(name) for counts in columns.values() for name in counts))
    rows = []
    for layer in layers:
        row: dict[str, Any] = {"layer": layer}
        for column, counts in columns.items():
            members = [value for name, value in counts.items() if layer_of(name) == layer]
            total = sum(size for _, size in members)
            row[column] = sum(pruned for pruned, _ in members) / total if total else None
        rows.append(row)
    overall = {column: sparsity_facts(counts)["sparsity"] for column, counts in columns.items()}
    return {"columns": list(columns), "rows": rows, "overall": overall}


def projection_table(counts: Counts) -> dict[str, Any]:
    """:func:`layer_table` with one column per projection (``q_proj``, …, ``fc2``) and decoder-layer index rows."""
    columns: dict[str, Counts] = {}
    for name, value in counts.items():
        columns.setdefault(name.removesuffix(".weight").rsplit(".", 1)[-1], {})[name] = value
    return layer_table(columns, lambda name: layer_index(name) if layer_index(name) is not None else name)


def sparsity_by_layer(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report's table: a column per unstructured trial's mask id (repeats of a mask counted once), over the
    records that carry ``layer_sparsity`` and ``layer_weights``; None when there are none."""
    trials = {}
    for record in records:
        if isinstance(record.get("layer_sparsity"), dict) and isinstance(record.get("layer_weights"), dict):
            trials.setdefault(record["mask_id"], record)
    if not trials:
        return None
    table = layer_table({column: record_counts(record) for column, record in trials.items()})
    table["overall"] = {column: record["sparsity"] for column, record in trials.items()}
    return table


def render_layer_table(table: dict[str, Any]) -> list[str]:
    """Markdown lines of a :func:`layer_table`: a row per layer, then the overall sparsity."""

    def cell(value) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = ["| layer | " + " | ".join(table["columns"]) + " |", "|---|" + "---:|" * len(table["columns"])]
    lines += ["| " + " | ".join([str(row["layer"]), *(cell(row[column]) for column in table["columns"])]) + " |"
              for row in table["rows"]]
    lines.append("| **overall** | " + " | ".join(cell(table["overall"][column]) for column in table["columns"]) + " |")
    return lines


def render_sparsity(table: dict[str, Any]) -> list[str]:
    """The report's section on :func:`sparsity_by_layer`."""
    return ["## Sparsity per layer", "", "Share of each decoder layer's target weights that are pruned.", "",
            *render_layer_table(table), ""]


def connectivity_by_setting(records: list[dict[str, Any]], listed: int = 20) -> dict[str, Any] | None:
    """Nominal vs effective nonzero weights of the trained models: per setting (trials, means, how many trials
    have disconnected weights, the most any has) and the ``listed`` trials with the most disconnected weights;
    None when no record measured them."""
    measured = [r for r in records if isinstance(r.get("effective_nonzeros"), int) and isinstance(r.get("nonzeros"), int)]
    if not measured:
        return None
    rows = []
    for setting in dict.fromkeys(r["setting"] for r in measured):
        members = [r for r in measured if r["setting"] == setting]
        cut = [r["nonzeros"] - r["effective_nonzeros"] for r in members]
        rows.append({"setting": setting, "trials": len(members),
                     "mean_nonzeros": sum(r["nonzeros"] for r in members) / len(members),
                     "mean_effective": sum(r["effective_nonzeros"] for r in members) / len(members),
                     "with_disconnected": sum(1 for c in cut if c), "most_disconnected": max(cut)})
    worst = sorted((r for r in measured if r["nonzeros"] > r["effective_nonzeros"]),
                   key=lambda r: (r["effective_nonzeros"] - r["nonzeros"], r["trial_id"]))[:listed]
    return {"settings": rows, "trials": [{"trial_id": r["trial_id"], "nonzeros": r["nonzeros"],
                                          "effective_nonzeros": r["effective_nonzeros"]} for r in worst]}


def render_connectivity(table: dict[str, Any]) -> list[str]:
    """The report's section on :func:`connectivity_by_setting`."""
    lines = ["## Nominal vs effective nonzero weights", "",
             "Effective: nonzero weights on an input→output path of nonzero weights (`hfprune diagnose`); every "
             "trial's counts are in `trials.jsonl` (`nonzeros`, `effective_nonzeros`).", "",
             "| setting | trials | mean nonzeros | mean effective | trials with disconnected weights | most disconnected |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['trials']} | {r['mean_nonzeros']:,.1f} | {r['mean_effective']:,.1f} | "
              f"{r['with_disconnected']} | {r['most_disconnected']:,} |" for r in table["settings"]]
    if table["trials"]:
        lines += ["", "Trials with the most disconnected weights:", "", "| trial | nonzeros | effective |",
                  "|---|---:|---:|"]
        lines += [f"| {r['trial_id']} | {r['nonzeros']:,} | {r['effective_nonzeros']:,} |" for r in table["trials"]]
    return lines + [""]
