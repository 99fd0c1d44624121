"""Model cards (``README.md``) of pruned checkpoints: one builder for ``hfprune prune`` and a study's exports.

A :class:`Card` is a title, front matter, a line on how the model was made, bullet facts, sections of markdown
and the code that loads it; the model family supplies its width rows, MACs and loading code, the trial record
its metrics with their directions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hfprune.models.base import ModelAdapter, StructuredAdapter
from hfprune.report.sparsity import projection_table, record_blocks, record_counts, render_layer_table

CARD = "README.md"


@dataclass
class Card:
    title: str
    source: str | None  # the base model; named in the front matter when it is a Hub id
    tags: list[str]
    made_by: str
    facts: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    loading: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = ["---", "library_name: transformers", "tags:", *(f"- {tag}" for tag in self.tags)]
        if self.source and not Path(self.source).exists():  # a local path means nothing on the Hub
            lines.append(f"base_model: {self.source}")
        lines += ["---", "", f"# {self.title}", "", self.made_by, ""]
        if self.facts:
            lines += [*(f"- {fact}" for fact in self.facts), ""]
        for heading, body in self.sections:
            if body:
                lines += [f"## {heading}", "", *body, ""]
        lines += ["## Loading", "", "```python", *self.loading, "```", ""]
        lines += [line for note in self.notes for line in (note, "")]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> None:
        (Path(folder) / CARD).write_text(self.render(), encoding="utf-8")


def metric_rows(metrics: Mapping[str, Any], directions: Mapping[str, bool] | None = None) -> list[str]:
    """A markdown table of the numeric metrics, each with its direction where one is known."""
    directions = directions or {}
    rows = [(name, value) for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if not rows:
        return []
    arrow = {True: "higher", False: "lower"}
    return ["| metric | value | better |", "|---|---:|:---:|",
            *(f"| {name} | {value:.4f} | {arrow.get(directions.get(name), '')} |" for name, value in rows)]


def _ratio(after: int, before: int) -> str:
    return f"{after / before:.3f}" if before else "–"


def structured_card(facts: dict[str, Any], adapter: StructuredAdapter, config) -> Card:
    """The card of ``hfprune prune --structure``: parameters and MACs before/after, kept units, widths."""
    table = ["| | dense | pruned | pruned / dense |", "|---|---:|---:|---:|",
             f"| parameters | {facts['params_before']:,} | {facts['params_after']:,} | "
             f"{_ratio(facts['params_after'], facts['params_before'])} |"]
    if facts.get("macs_before"):
        table.append(f"| {facts.get('macs_unit', 'MACs per image')} | {facts['macs_before']:,} | "
                     f"{facts['macs_after']:,} | {_ratio(facts['macs_after'], facts['macs_before'])} |")
    bullets = [f"method: `{facts['method']}`", f"seed: {facts['seed']}",
               f"structure (fraction removed): `{json.dumps(facts['structure'])}`"]
    if facts.get("allocation"):
        bullets.append(f"allocation: `{facts['allocation']}`")
    if facts.get("options"):
        bullets.append(f"options: `{json.dumps(facts['options'], sort_keys=True)}`")
    if facts.get("calibration"):
        bullets.append(f"calibration data: {facts['calibration']}")
    groups = ["| group | kept | of |", "|---|---:|---:|",
              *(f"| {name} | {kept} | {size} |" for name, (kept, size) in facts["groups"].items())]
    notes = []
    if facts.get("macs_before"):
        notes.append("MACs are counted by running the model under torch's FLOP counter (every matmul, attention's "
                     "included)." if facts.get("macs_unit") else
                     "MACs are counted analytically (no norms, softmax, activations or biases).")
    checkpoint, loading = facts.get("checkpoint"), adapter.loading_code()
    if checkpoint is not None:
        loading = adapter.loading_code(facts.get("auto_class"), remote_code=checkpoint == "own_code")
    tags = ["hfprune", "pruned", "structured-pruning"] + ([f"{checkpoint.replace('_', '-')}-checkpoint"]
                                                          if checkpoint else [])
    return Card(f"{facts['source']} — structurally pruned with hfprune", facts["source"], tags,
                f"Pruned with `{facts['command']}`.",
                sections=[("Checkpoint", _checkpoint_lines(facts)), ("Size", table),
                          ("How", [f"- {line}" for line in bullets]), ("Kept units per group", groups),
                          ("Per layer", adapter.card_rows(config))],
                loading=loading, notes=notes)


def _checkpoint_lines(facts: Mapping[str, Any]) -> list[str]:
    """Which kind of checkpoint a structurally pruned transformers model is, and what loads it."""
    kind, architecture = facts.get("checkpoint"), facts.get("architecture")
    if kind == "native":
        return [f"**Native checkpoint** of the original architecture (`{architecture}`): every layer keeps the same "
                "widths, which its config says (`num_attention_heads`, `num_key_value_heads`, `head_dim`, "
                "`intermediate_size`, `num_hidden_layers`). Plain `transformers` loads it; no remote code."]
    if kind == "own_code":
        return [f"**Checkpoint with its own model code**: the layers keep different widths, recorded in the config's "
                f"`pruned_modules`; `{architecture}` (in `modeling_per_layer.py`, beside the weights) is the original "
                "architecture's class with each layer's Linears and head counts set from them. Load it with "
                "`trust_remote_code=True`; hfprune is not needed."]
    return []


def unstructured_card(facts: dict[str, Any], adapter: ModelAdapter) -> Card:
    """The card of an unstructurally pruned model: method, sparsity overall and per layer, metrics."""
    bullets = [f"method: `{facts['method']}`",
               f"sparsity over the target weights: {facts['sparsity']:.4f} ({facts['target_weights']:,} target weights)"]
    if facts.get("pattern"):
        n, m = facts["pattern"].split(":")
        bullets.append(f"pattern: {facts['pattern']} semi-structured sparsity (in every group of {m} consecutive "
                       f"input weights of a row, {n} are zero)")
    if facts.get("options"):
        bullets.append(f"options: `{json.dumps(facts['options'], sort_keys=True)}`")
    if facts.get("requested_sparsity") is not None:
        bullets.append(f"requested sparsity: {facts['requested_sparsity']:g}")
    if facts.get("parameters"):
        bullets.append(f"parameters: {facts['parameters']:,} in all, {facts['nonzero_parameters']:,} nonzero")
    if facts.get("targets"):
        bullets.append("targets: " + ", ".join(f"`{target}`" for target in facts["targets"]))
    if facts.get("calibration"):
        bullets.append(f"calibration data: {facts['calibration']}")
    made_by = f"Pruned with `{facts['command']}`." if facts.get("command") else "Pruned with hfprune."
    made_by += f" {facts['note']}" if facts.get("note") else ""
    tags = ["hfprune", "pruned", "unstructured-pruning", facts["method"]]
    tags += ["semi-structured-sparsity", f"{facts['pattern']}-sparsity"] if facts.get("pattern") else []
    return Card(facts["title"], facts.get("source"), tags,
                made_by, facts=bullets,
                sections=[("Metrics", metric_rows(facts.get("metrics") or {}, facts.get("higher_is_better"))),
                          ("Sparsity per layer",
                           render_layer_table(projection_table(record_counts(facts), record_blocks(facts))))],
                loading=adapter.loading_code(facts.get("auto_class")),
                notes=["Pruned weights are stored as zeros: the checkpoint has the dense shapes and loads with plain "
                       "`transformers`."])


def chosen_note(metric: str) -> str:
    """What ``best/`` is: the best trial by ``metric``, measured on the test split."""
    return (f"This is the study's best trial by {metric}, measured on the test split: a look at the best pruned "
            "model, not a choice made without the test data (`pruning.selection` chooses on a validation split).")


def trial_card(recipe, record, adapter: ModelAdapter, chosen_by: str | None = None) -> Card:
    """The card of a study's exported model: what the trial pruned and what it measured; ``chosen_by``: the metric
    that made it the study's best (``best/``)."""
    metrics = {name: value for name, value in record.metrics.items()
               if name.startswith(("pruned_", "short_", "final_"))}
    title = f"{recipe.name}: trial {record.trial_id}"
    note = "" if chosen_by is None else " " + chosen_note(chosen_by)
    if not isinstance(adapter, StructuredAdapter) or getattr(recipe, "structure", None) == "unstructured":
        candidate = record.to_json()
        return unstructured_card({**candidate, "source": recipe.model.pretrained, "title": title,
                                  "options": candidate.get("method_options"), "higher_is_better": record.directions,
                                  "requested_sparsity": recipe.pruning.sparsity, "targets": recipe.pruning.targets,
                                  "metrics": metrics, "command": f"hfprune run {recipe.name}", "note": note.strip()},
                                 adapter)
    kept = ["| group | kept |", "|---|---|",
            *(f"| {group} | {', '.join(map(str, units))} |" for group, units in record.candidate.get("mask", {}).items())]
    return Card(title, recipe.model.pretrained, ["hfprune", "pruned", "structured-pruning"],
                f"Exported by `hfprune run` from study `{recipe.name}`.{note}",
                sections=[("Kept units per group", kept), ("Metrics", metric_rows(metrics, record.directions))],
                loading=adapter.loading_code())


def write_trial_card(folder: Path, recipe, record, adapter: ModelAdapter, chosen_by: str | None = None) -> None:
    """Write :func:`trial_card` as ``folder/README.md``; a checkpoint that carries its own model code (its config
    has an ``auto_map``) is loaded with ``trust_remote_code=True``."""
    card = trial_card(recipe, record, adapter, chosen_by)
    config = Path(folder) / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        card.loading = [line.replace("(PATH)", "(PATH, trust_remote_code=True)") for line in card.loading]
    card.write(folder)
