"""Model cards of pruned checkpoints, and their upload to the Hugging Face Hub.

Tokens come only from the usual Hugging Face login (`hf auth login`, or the ``HF_TOKEN`` variable):
hfprune never reads one from a recipe or a flag, and never writes or prints one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from hfprune.errors import HfpruneError, reason

CARD = "README.md"


def front_matter(source: str | None, tags: Iterable[str]) -> list[str]:
    """The card's YAML header; ``base_model`` only for a Hub id (a local path means nothing on the Hub)."""
    lines = ["---", "library_name: transformers", "tags:", *(f"- {tag}" for tag in tags)]
    if source and not Path(source).exists():
        lines.append(f"base_model: {source}")
    return lines + ["---", ""]


def layer_sparsity_table(layer_sparsity: dict[str, float]) -> list[str]:
    """Markdown: one row per decoder layer, one column per projection (q_proj, …, fc2); others one per row."""
    from hfprune.pruning.unstructured.targets import layer_index

    by_layer: dict[int, dict[str, float]] = {}
    others: dict[str, float] = {}
    for name, sparsity in layer_sparsity.items():
        index = layer_index(name)
        if index is None:
            others[name] = sparsity
        else:
            by_layer.setdefault(index, {})[name.removesuffix(".weight").rsplit(".", 1)[-1]] = sparsity
    lines = []
    if by_layer:
        columns = list(dict.fromkeys(column for row in by_layer.values() for column in row))
        lines += ["| layer | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
        for index in sorted(by_layer):
            cells = (f"{by_layer[index][column]:.4f}" if column in by_layer[index] else "–" for column in columns)
            lines.append(f"| {index} | " + " | ".join(cells) + " |")
    if others:
        lines += [""] if lines else []
        lines += ["| module | sparsity |", "|---|---:|", *(f"| {name} | {value:.4f} |" for name, value in others.items())]
    return lines


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    rows = [(name, value) for name, value in metrics.items() if isinstance(value, (int, float)) and value is not None]
    if not rows:
        return []
    return ["| metric | value |", "|---|---:|", *(f"| {name} | {value:.4f} |" for name, value in rows)]


def unstructured_card(facts: dict[str, Any]) -> str:
    """README.md of an unstructurally pruned checkpoint: method, sparsity overall and per layer, metrics."""
    lines = front_matter(facts.get("source"), ["hfprune", "pruned", "unstructured-pruning", facts["method"]])
    lines += [f"# {facts['title']}", ""]
    if facts.get("command"):
        lines += [f"Pruned with `{facts['command']}`.", ""]
    lines += [f"- method: `{facts['method']}`",
              f"- sparsity over the target weights: {facts['sparsity']:.4f} "
              f"({facts['target_weights']:,} target weights)"]
    if facts.get("requested_sparsity") is not None:
        lines.append(f"- requested sparsity: {facts['requested_sparsity']:g}")
    if facts.get("parameters"):
        lines.append(f"- parameters: {facts['parameters']:,} in all, {facts['nonzero_parameters']:,} nonzero")
    if facts.get("targets"):
        lines.append("- targets: " + ", ".join(f"`{target}`" for target in facts["targets"]))
    metrics = _metric_lines(facts.get("metrics") or {})
    if metrics:
        lines += ["", "## Metrics", "", *metrics]
    lines += ["", "## Sparsity per layer", "", *layer_sparsity_table(facts["layer_sparsity"]),
              "", "## Loading", "", "```python", f"from transformers import {facts['model_class']}",
              f"model = {facts['model_class']}.from_pretrained(PATH)", "```",
              "", "Pruned weights are stored as zeros: the checkpoint has the dense shapes and loads with plain "
              "`transformers`.", ""]
    return "\n".join(lines)


def trial_card(recipe, record: dict[str, Any], architecture: str) -> str:
    """README.md of a study's exported model: what the trial pruned and what it measured. ``architecture`` is
    the saved model's class; structurally pruned ones load through the Auto class with their own code."""
    metrics = {name: value for name, value in record.items()
               if name.startswith(("pruned_", "short_", "final_")) and isinstance(value, (int, float))}
    title = f"{recipe.name}: trial {record['trial_id']}"
    if "layer_sparsity" in record:
        return unstructured_card({"source": recipe.model.pretrained, "title": title, "method": record["method"],
                                  "sparsity": record["sparsity"], "target_weights": record["target_weights"],
                                  "requested_sparsity": recipe.pruning.sparsity,
                                  "targets": recipe.pruning.targets, "metrics": metrics,
                                  "layer_sparsity": record["layer_sparsity"], "model_class": architecture,
                                  "command": f"hfprune run {recipe.name}"})
    lines = front_matter(recipe.model.pretrained, ["hfprune", "pruned", "structured-pruning"])
    lines += [f"# {title}", "", f"Exported by `hfprune run` from study `{recipe.name}`.", "",
              "## Kept units per group", "", "| group | kept |", "|---|---|"]
    lines += [f"| {group} | {', '.join(map(str, kept))} |" for group, kept in record.get("mask", {}).items()]
    lines += ["", "## Metrics", "", *_metric_lines(metrics), "", "## Loading", "", "```python",
              "from transformers import AutoModelForImageClassification",
              "model = AutoModelForImageClassification.from_pretrained(PATH, trust_remote_code=True)", "```", ""]
    return "\n".join(lines)


def write_trial_card(folder: Path, recipe, record: dict[str, Any]) -> None:
    """Write :func:`trial_card` as ``folder/README.md``, naming the saved model's class."""
    architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or ["AutoModel"]
    (Path(folder) / CARD).write_text(trial_card(recipe, record, architectures[0]), encoding="utf-8")


def push_checkpoint(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None) -> str:
    """Upload a saved checkpoint folder (weights, processor, model card) to ``repo_id``; returns its URL."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HfpruneError(f"'{folder}' has no config.json; give a folder written by hfprune prune, hfprune run's "
                           "export, or save_pretrained")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise HfpruneError(f"repo id '{repo_id}' is not NAMESPACE/NAME, e.g. my-user/tinyllava-ump-0.44")
    if get_token() is None:
        raise HfpruneError("not logged in to the Hugging Face Hub; run `hf auth login` (or set HF_TOKEN) and retry")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                                   commit_message=commit_message or f"Upload pruned checkpoint ({folder.name})",
                                   ignore_patterns=["*.partial", "hfprune_*.tmp"])
    except Exception as error:  # noqa: BLE001 - network, auth and permission errors all end the same way
        raise HfpruneError(f"upload of '{folder}' to '{repo_id}' failed: {reason(error)}") from None
    return getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}"
