"""The per-layer sparsity of unstructured trials: one row per decoder layer, one column per method."""

from __future__ import annotations

from typing import Any

from hfprune.pruning.unstructured.targets import group_by_layer


def sparsity_by_layer(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{"columns": [mask ids], "rows": [{"layer", <mask id>: sparsity}], "overall": {...}}`` over the records
    that carry ``layer_sparsity`` and ``layer_weights`` (unstructured trials; repeats of a mask counted once)."""
    trials = {}
    for record in records:
        if isinstance(record.get("layer_sparsity"), dict) and isinstance(record.get("layer_weights"), dict):
            trials.setdefault(record["mask_id"], record)
    if not trials:
        return None
    columns = list(trials)
    names = list(next(iter(trials.values()))["layer_sparsity"])
    rows = []
    for layer, members in group_by_layer(names).items():
        row: dict[str, Any] = {"layer": layer}
        for column, record in trials.items():
            weights = sum(record["layer_weights"].get(name, 0) for name in members)
            pruned = sum(record["layer_sparsity"].get(name, 0.0) * record["layer_weights"].get(name, 0)
                         for name in members)
            row[column] = pruned / weights if weights else None
        rows.append(row)
    overall = {column: record["sparsity"] for column, record in trials.items()}
    return {"columns": columns, "rows": rows, "overall": overall}


def render_sparsity(table: dict[str, Any]) -> list[str]:
    """Markdown lines of :func:`sparsity_by_layer`'s table."""

    def cell(value) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = ["## Sparsity per layer", "", "Share of each decoder layer's target weights that are pruned.", "",
             "| layer | " + " | ".join(table["columns"]) + " |", "|---|" + "---:|" * len(table["columns"])]
    lines += ["| " + " | ".join([row["layer"], *(cell(row[column]) for column in table["columns"])]) + " |"
              for row in table["rows"]]
    lines.append("| **overall** | " + " | ".join(cell(table["overall"][column]) for column in table["columns"]) + " |")
    return lines + [""]
