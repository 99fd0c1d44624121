"""Sparsity per parameter and per block (decoder or encoder layer): counted from masks, from a model's live zeros or
from trial records, tabulated one way for the study report (a column per method) and the model cards (a column per
projection).

Rows are blocks. A record that names each target's block index (``layer_blocks``, from the walk that finds the
model's blocks: :func:`hfprune.pruning.unstructured.list_targets`) is grouped by it, whatever the layout
(``model.language_model.layers.N``, DINOv2's ``encoder.layer.N``, ...); one without (records of earlier versions)
by the first index in each name (``layers.N``), the outermost ``nn.ModuleList`` item it lies in.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from hfprune.errors import HfpruneError

Counts = dict[str, tuple[int, int]]  # parameter name -> (pruned entries, all entries)
Blocks = Mapping[str, "int | None"]  # parameter name -> index of the block it lies in (None: in no block)
_FIRST_INDEX = re.compile(r"\.(\d+)\.")


def block_name(name: str, blocks: Blocks | None = None) -> str:
    """The block a parameter lies in, as the block's module name (``model.language_model.layers.3``): the name up to
    its block index (``blocks[name]``, or else the first index in the name); ``name`` itself outside every block."""
    index = blocks.get(name) if blocks is not None and name in blocks else None
    if blocks is not None and name in blocks:
        match = re.search(rf"\.({index})\.", name) if index is not None else None
    else:
        match = _FIRST_INDEX.search(name)
    return name[:match.end() - 1] if match else name


def block_index(name: str, blocks: Blocks | None = None) -> int | None:
    """The index of the block a parameter lies in (``blocks[name]``, or else the first index in the name)."""
    if blocks is not None and name in blocks:
        return blocks[name]
    match = _FIRST_INDEX.search(name)
    return int(match.group(1)) if match else None


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


def record_blocks(record: Mapping[str, Any]) -> Blocks | None:
    """The block index of every target a record names (``layer_blocks``), or None for records without them."""
    blocks = record.get("layer_blocks")
    return blocks if isinstance(blocks, dict) else None


def record_counts(record: Mapping[str, Any]) -> Counts:
    """The counts an unstructured trial's record (or ``hfprune_pruning.json``) keeps as sparsity facts."""
    weights = record["layer_weights"]
    return {name: (round(sparsity * weights[name]), weights[name]) for name, sparsity in record["layer_sparsity"].items()}


def sparsity_facts(counts: Counts, blocks: Blocks | None = None) -> dict[str, Any]:
    """The facts a record keeps: overall sparsity over the counted weights and each parameter's own; with
    ``blocks``, each parameter's block index (``layer_blocks``)."""
    total = sum(size for _, size in counts.values())
    facts = {"sparsity": sum(pruned for pruned, _ in counts.values()) / total if total else 0.0,
             "target_weights": total,
             "layer_sparsity": {name: pruned / size for name, (pruned, size) in counts.items()},
             "layer_weights": {name: size for name, (_, size) in counts.items()}}
    if blocks is not None:
        facts["layer_blocks"] = {name: blocks.get(name) for name in counts}
    return facts


def layer_table(columns: Mapping[str, Counts], layer_of: Callable[[str], Any] = block_name) -> dict[str, Any]:
    """``{"columns", "rows": [{"layer", <column>: sparsity or None}], "overall": {<column>: sparsity}}``: each
    column's parameters summed by block (``layer_of`` a parameter name), rows in first-seen order."""
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


def _projection(name: str, blocks: Blocks | None) -> str:
    """A parameter's module name inside its block (``self_attn.q_proj``), or its whole module name outside one."""
    module, block = name.removesuffix(".weight"), block_name(name, blocks)
    return module[len(block) + 1:] if block != name and module.startswith(f"{block}.") else module


def projection_table(counts: Counts, blocks: Blocks | None = None) -> dict[str, Any]:
    """:func:`layer_table` with one column per projection and a row per block index (``blocks``, or else the first
    index in each name). A projection is named by its module's last name (``q_proj``, …, ``fc2``), or by its name
    inside the block where last names repeat (DINOv2's ``attention.output.dense`` and ``output.dense``)."""
    inside = {name: _projection(name, blocks) for name in counts}
    last = {name: relative.rsplit(".", 1)[-1] for name, relative in inside.items()}
    unique = len(set(last.values())) == len(set(inside.values()))
    columns: dict[str, Counts] = {}
    for name, value in counts.items():
        columns.setdefault(last[name] if unique else inside[name], {})[name] = value

    def row(name: str):
        index = block_index(name, blocks)
        return index if index is not None else name

    return layer_table(columns, row)


def sparsity_by_layer(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report's table: a column per unstructured trial's mask id (repeats of a mask counted once), over the
    records that carry ``layer_sparsity`` and ``layer_weights``, rows by block; None when there are none."""
    trials = {}
    for record in records:
        if isinstance(record.get("layer_sparsity"), dict) and isinstance(record.get("layer_weights"), dict):
            trials.setdefault(record["mask_id"], record)
    if not trials:
        return None
    blocks: dict[str, Any] = {}
    for record in trials.values():
        blocks.update(record_blocks(record) or {})
    table = layer_table({column: record_counts(record) for column, record in trials.items()},
                        lambda name: block_name(name, blocks or None))
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
