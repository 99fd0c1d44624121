"""Evaluate a model on benchmarks: generate (resuming), score, and summarise like the paper's Table A6.

``out_dir/<task>/`` holds ``predictions.jsonl`` (the raw answers), ``scores.jsonl`` (per-sample scores) and
``metrics.json`` (with the scoring style that read the answers); ``out_dir/summary.json`` and ``summary.md`` hold
every benchmark's headline score and their mean.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any

from hfprune.errors import HfpruneError
from hfprune.io import write_json_atomically
from hfprune.evaluation.benchmarks.judge import NO_JUDGE, JudgeConfig
from hfprune.evaluation.benchmarks.samples import load_samples
from hfprune.evaluation.benchmarks.scorers import SCORERS
from hfprune.evaluation.benchmarks.scoring import score_predictions
from hfprune.evaluation.benchmarks.spec import load_spec, spec_names
from hfprune.evaluation.benchmarks.styles import get_style
from hfprune.evaluation.generation import drop_torn_tail, generate_predictions, load_model, read_predictions

# The paper's Table A6 order and column names; other benchmarks follow under their own names.
TABLE_A6 = {"sqa_img": "SQA-IMG", "textvqa": "TextVQA", "textvqa_ocr": "TextVQA (OCR)", "gqa": "GQA",
            "mmvet": "MM-Vet", "pope": "POPE"}


class _Model:
    """The model to evaluate, loaded on first use (rescoring or a finished task never loads it)."""

    def __init__(self, model):
        self.source = model
        self._loaded = None if isinstance(model, (str, os.PathLike)) else tuple(model)
        self.name = str(model) if self._loaded is None else \
            (getattr(self._loaded[0], "name_or_path", "") or type(self._loaded[0]).__name__)

    def get(self):
        if self._loaded is None:
            self._loaded = load_model(self.source)
        return self._loaded


def resolve_specs(tasks: list[str]) -> dict[str, Any]:
    """Specs by task name; unknown names get one error listing the known benchmarks."""
    known = spec_names()
    unknown = [task for task in tasks if task not in known and not Path(task).is_file()]
    if unknown:
        raise HfpruneError(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)} "
                           "(or give the path of a spec YAML)")
    specs = {}
    for task in tasks:
        spec = load_spec(task)
        specs[spec.name] = spec
    return specs


def evaluate_task(model: _Model, spec, task_dir: Path, limit: int | None = None, batch_size: int = 8,
                  data_path: Path | None = None, judge=None, rescore: bool = False, progress: bool = True,
                  max_new_tokens: int | None = None, style: str | None = None) -> dict:
    """Generate the task's missing answers (or reuse them all with ``rescore``), score in ``style`` (default: the
    spec's), write metrics.json."""
    path = task_dir / "predictions.jsonl"
    if rescore:
        predictions = read_predictions(path)
        if not predictions:
            raise HfpruneError(f"no predictions to rescore for '{spec.name}' in {path}; run without --rescore")
    else:
        samples = load_samples(spec, data_path=data_path, limit=limit)
        done = {prediction.sample_id for prediction in read_predictions(path)}
        loaded = model.get() if any(sample.sample_id not in done for sample in samples) else (None, None)
        new_tokens = min(spec.generation.max_new_tokens, max_new_tokens or spec.generation.max_new_tokens)
        predictions = generate_predictions(*loaded, samples, path, new_tokens, batch_size=batch_size,
                                           desc=spec.name, progress=progress)
    result = score_predictions(spec, predictions, task_dir, judge=judge, style=style)
    (task_dir / "scores.jsonl").write_text("".join(json.dumps(row, default=str) + "\n" for row in result["per_sample"]))
    metrics = {"task": spec.name, "style": result["style"], "score": result["metrics"]["score"],
               "metrics": result["metrics"], "num_predictions": len(predictions)}
    write_json_atomically(task_dir / "metrics.json", metrics)
    return metrics


def evaluate_model(model, tasks: list[str], out_dir: str | Path, limit: int | None = None, batch_size: int = 8,
                   data_dir: str | Path | None = None, judge=None, rescore: bool = False,
                   lm_eval_tasks: list[str] | None = None, lm_eval_include: str | Path | None = None,
                   max_new_tokens: int | None = None, progress: bool = True, style: str | None = None) -> dict:
    """Evaluate ``model`` (a local dir or Hub id, or a loaded ``(model, processor)``) on ``tasks``.

    ``data_dir/<task>`` is used as the local copy of a benchmark's data when given; ``max_new_tokens`` caps
    the specs' answer lengths (quick checks; not comparable with full runs); ``limit`` applies to lm-eval too;
    ``style`` (official, lmms_eval) replaces every spec's scoring style. Returns the summary.
    """
    if style is not None:
        get_style(style)  # an unknown style fails before anything is generated
    specs = resolve_specs(tasks)
    judge = judge or JudgeConfig.resolve()
    if judge is None and any(SCORERS[spec.scorer.name].needs_judge for spec in specs.values()):
        raise HfpruneError(NO_JUDGE)
    out_dir = Path(out_dir)
    handle = _Model(model)
    results = {}
    for name, spec in specs.items():
        data_path = Path(data_dir) / name if data_dir is not None else None
        results[name] = evaluate_task(handle, spec, out_dir / name, limit, batch_size, data_path, judge, rescore,
                                      progress, max_new_tokens, style)
    ordered = sorted(results, key=lambda name: list(TABLE_A6).index(name) if name in TABLE_A6 else len(TABLE_A6))
    summary = {"model": handle.name, "limit": limit, "max_new_tokens": max_new_tokens,
               "scores": {name: results[name]["score"] for name in ordered},
               "styles": {name: results[name]["style"] for name in ordered},
               "mean": mean(results[name]["score"] for name in ordered) if ordered else None,
               "metrics": {name: results[name]["metrics"] for name in ordered}}
    if lm_eval_tasks:
        from hfprune.evaluation.lm_eval_bridge import run_lm_eval

        lm, processor = handle.get()
        summary["lm_eval"] = run_lm_eval(lm, processor.tokenizer, lm_eval_tasks, out_dir, limit, batch_size,
                                         lm_eval_include)
    write_json_atomically(out_dir / "summary.json", summary)
    (out_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


SHARE_GLOB = "predictions.rank*.jsonl"


def answer_share(model, tasks: list[str], out_dir: str | Path, rank: int, world: int, limit: int | None = None,
                 batch_size: int = 8, data_dir: str | Path | None = None, max_new_tokens: int | None = None,
                 progress: bool = True) -> None:
    """Process ``rank`` of ``world`` answers every ``world``-th unanswered sample of each benchmark, into
    ``<task>/predictions.rank<rank>.jsonl``; :func:`merge_shares` then gathers the shares for scoring."""
    handle = _Model(model)
    for name, spec in resolve_specs(tasks).items():
        task_dir = Path(out_dir) / name
        samples = load_samples(spec, data_path=Path(data_dir) / name if data_dir is not None else None, limit=limit)
        # Shares split what the merged file lacks (the same on every process, whoever writes first); a resumed
        # process skips what its own share file already has.
        merged = {prediction.sample_id for prediction in read_predictions(task_dir / "predictions.jsonl")}
        mine = [sample for sample in samples if sample.sample_id not in merged][rank::world]
        if mine:
            new_tokens = min(spec.generation.max_new_tokens, max_new_tokens or spec.generation.max_new_tokens)
            generate_predictions(*handle.get(), mine, task_dir / f"predictions.rank{rank}.jsonl", new_tokens,
                                 batch_size=batch_size, desc=f"{spec.name} [{rank}]", progress=progress)


def merge_shares(tasks: list[str], out_dir: str | Path) -> None:
    """Append every process's share to ``<task>/predictions.jsonl`` (durably) and remove the shares."""
    for name in resolve_specs(tasks):
        task_dir = Path(out_dir) / name
        shares = sorted(task_dir.glob(SHARE_GLOB))
        if not shares:
            continue
        path = task_dir / "predictions.jsonl"
        drop_torn_tail(path)
        with path.open("a", encoding="utf-8") as handle:  # a kill mid-way repeats ids, which readers collapse
            for share in shares:
                handle.write("".join(json.dumps(asdict(prediction), ensure_ascii=False) + "\n"
                                     for prediction in read_predictions(share)))
            handle.flush()
            os.fsync(handle.fileno())
        for share in shares:
            share.unlink()


def summary_markdown(summary: dict) -> str:
    """One table row per model, one column per benchmark, plus the mean (like Table A6)."""
    names = list(summary["scores"])
    header = ["model", *(TABLE_A6.get(name, name) for name in names), "mean"]
    row = [summary["model"], *(f"{summary['scores'][name]:.1f}" for name in names),
           f"{summary['mean']:.1f}" if summary["mean"] is not None else "-"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |"]
    for task, metrics in (summary.get("lm_eval") or {}).items():
        values = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if isinstance(value, float))
        lines.append(f"\nlm-eval {task}: {values}")
    return "\n".join(lines) + "\n"


def summary_table(summary: dict):
    """The summary as a rich table: one row per benchmark (Table A6 order), then the mean."""
    from rich.table import Table

    table = Table(title=f"{summary['model']}" + (f" (first {summary['limit']} samples)" if summary["limit"] else ""))
    table.add_column("benchmark")
    table.add_column("score", justify="right")
    for name, score in summary["scores"].items():
        table.add_row(TABLE_A6.get(name, name), f"{score:.2f}")
    if summary["mean"] is not None:
        table.add_row("mean", f"{summary['mean']:.2f}", style="bold")
    for task, metrics in (summary.get("lm_eval") or {}).items():
        for key, value in metrics.items():
            if isinstance(value, float) and "stderr" not in key:
                table.add_row(f"lm-eval {task} {key.split(',')[0]}", f"{value:.4f}")
    return table

