"""``report.md`` and ``report.json`` of a study from the summary that ``report_study`` builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfprune.report.format import dumps, fmt, fmt_ci
from hfprune.report.grids import render_ratio_layer_grid, render_rounds
from hfprune.report.sparsity import render_connectivity, render_sparsity
from hfprune.report.stats import VALID_P, VALID_TAU

DEFINITION = (
    f"**Validity (Def. 3.1, generalised).** Oracle pruning is *valid* for a set of trials only when the "
    f"Kendall tau between the criterion x (e.g. the pruned train loss) and the outcome y has the expected "
    f"sign with |tau| > {VALID_TAU} and p < {VALID_P}: tau > {VALID_TAU} when x and y share a direction "
    f"(pruned train loss vs. final test loss), tau < -{VALID_TAU} when they do not (pruned train loss vs. "
    f"final test accuracy). The **anomaly ratio** is the share of trials whose y is strictly better than "
    f"that of the oracle (the trial with the best x; among ties, the one with the best y); a valid "
    f"criterion keeps it well below 50%. The **counterexample ratio** is the share of unordered pairs in "
    f"which one trial has the strictly better x but the strictly worse y. Ties count as neither."
)

BOOTSTRAP_NOTE = (
    "**Confidence intervals** (CI) are {level:.0%} percentile bootstrap intervals over the candidates "
    "({resamples} resamples with replacement, fewer for settings over 2,000 points (their `resamples`), seed "
    "{seed}). A finding is *within noise* when its interval "
    "reaches the line it is judged by: validity when the tau interval reaches the ±0.2 line, an anomaly or "
    "counterexample ratio when its interval reaches 50%."
)


NOISE_WORDS = {"validity": "validity (the tau interval reaches the ±{tau} line)",
               "anomaly_ratio": "the anomaly ratio (its interval reaches 50%)",
               "counterexample_ratio": "the counterexample ratio (its interval reaches 50%, chance)"}


def noise_lines(results: list[dict], level: float | None) -> list[str]:
    """One line per setting whose findings are within noise, and the spread between repeats where there are."""
    lines = []
    for r in results:
        noisy = [NOISE_WORDS[key].format(tau=VALID_TAU) for key, flag in (r.get("within_noise") or {}).items() if flag]
        if noisy:
            lines.append(f"- {_cell(r['setting'])}: within noise at {level:.0%} confidence: {'; '.join(noisy)}.")
        spread = r.get("repeat_spread")
        if spread:
            lines.append(f"- {_cell(r['setting'])}: repeats of one mask differ by {fmt(spread['mean_repeat_std'])} "
                         f"(mean std of {r['y']} over {spread['masks_with_repeats']} masks) against "
                         f"{fmt(spread['between_mask_std'])} between masks.")
    return lines


def _direction(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _pair_section(pair: dict, results: list[dict], level: float | None = None) -> list[str]:
    sign = f"> {VALID_TAU}" if pair["x_higher_is_better"] == pair["higher_is_better"] else f"< -{VALID_TAU}"
    lines = [
        f"## {pair['x']} vs. {pair['y']}", "",
        f"x: {pair['x']} ({_direction(pair['x_higher_is_better'])}); y: {pair['y']} "
        f"({_direction(pair['higher_is_better'])}); valid needs tau {sign} and p < {VALID_P}.", "",
        "| setting | n | Kendall tau | tau CI | p | valid | anomaly ratio | anomaly CI | counterexample ratio "
        "| counterexample CI | oracle | dropped |",
        "|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        cells = [_cell(r["setting"]), str(r["n"]), fmt(r["kendall_tau"]), fmt_ci(r.get("tau_ci")),
                 fmt(r["p_value"], "p"), fmt(r["valid"]), fmt(r["anomaly_ratio"], "ratio"),
                 fmt_ci(r.get("anomaly_ci"), "ratio"), fmt(r["counterexample_ratio"], "ratio"),
                 fmt_ci(r.get("counterexample_ci"), "ratio"), _oracle_cell(r), str(r["n_dropped"])]
        lines.append("| " + " | ".join(cells) + " |")
    noise = noise_lines(results, level)
    if noise:
        lines += [""] + noise
    plots = [r for r in results if r.get("plot")]
    if plots:
        lines.append("")
        lines.extend(f"![{r['setting']}: {r['x']} vs. {r['y']}]({r['plot']})" for r in plots)
    return lines + [""]


def _oracle_cell(result: dict) -> str:
    """The oracle point's id and what it pruned (kept units, or method)."""
    if not result.get("oracle_id"):
        return "—"
    pruned = result.get("oracle_pruned")
    return _cell(f"{result['oracle_id']} ({pruned})" if pruned else result["oracle_id"])


def _epochs(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _selection_section(table: list[dict]) -> list[str]:
    """The regret table: what each criterion would have picked among the fully retrained candidates."""
    outcome = table[0]["outcome"]
    lines = ["## Selection by criterion", "",
             f"Each criterion picks the candidate it rates best (ties: a uniform draw among them; random: among all). "
             f"Regret = the best {outcome} of all candidates minus the chosen one's; top = the share of candidates at "
             f"least as good as the chosen one (best: 1/n); epochs = retraining epochs the selection spends, the "
             f"chosen candidate's full retraining included, against the exhaustive study's.", "",
             "| setting | criterion | n | regret | regret CI | top | epochs | exhaustive epochs |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        cells = [_cell(r["setting"]), _cell(r["label"]), str(r["n"]), fmt(r["regret"]), fmt_ci(r.get("regret_ci")),
                 fmt(r["top"], "ratio"), _epochs(r["epochs"]), _epochs(r["exhaustive_epochs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _halving_section(rows: list[dict]) -> list[str]:
    """What successive halving chose per setting, through which rungs, at what cost."""
    lines = ["## Successive halving", "",
             "Rungs are (epochs, candidates); the choice is the best of the last rung by the validation metric; "
             "the test split is evaluated only for the choice. Every rung's records are in `selection.jsonl`.", "",
             "| setting | chosen | candidates | rungs | validation | final test acc | epochs | exhaustive epochs |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        rungs = ", ".join(f"({budget}, {size})" for budget, size in r["rungs"])
        cells = [_cell(r["setting"]), _cell(r["mask_id"]), str(r["candidates"]), rungs,
                 f"{fmt(r['validation'])} ({r['metric']})", fmt(r["final_test_acc"]), _epochs(r["epochs_spent"]),
                 _epochs(r["exhaustive_epochs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(summary: dict) -> str:
    """The human-readable report."""
    settings, planned = summary["settings"], summary.get("trials_planned")
    count = f"{summary['n_trials']} trials" if not planned or planned == summary["n_trials"] else \
        f"{summary['n_trials']} of {planned} planned trials (the study is not finished: the same `hfprune run` " \
        "completes it)"
    lines = [f"# Oracle-pruning report: {summary['study']}", "", f"{count} in {len(settings)} setting(s): "
             f"{', '.join(settings)}."]
    if summary["average_repeats"]:
        lines.append("Repeats of one mask (different retraining seeds) are averaged into one point; "
                     "n counts masks, 'dropped' counts trials missing x or y.")
    if summary.get("measured_after_retraining"):
        lines.append("Measured after retraining: " + ", ".join(summary["measured_after_retraining"])
                     + " (evaluation.final_train opts into the train split).")
    dense = summary.get("dense")
    if dense:
        lines += ["", "## Dense model", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {key} | {fmt(value) if isinstance(value, (int, float)) else value} |"
                  for key, value in dense.items()]
    lines += ["", DEFINITION, ""]
    lines += render_ratio_layer_grid(summary) + render_rounds(summary)
    bootstrap = summary.get("bootstrap")
    if bootstrap:
        lines += [BOOTSTRAP_NOTE.format(level=bootstrap["level"], resamples=bootstrap["resamples"],
                                        seed=bootstrap["seed"]), ""]
    level = bootstrap["level"] if bootstrap else None
    for pair in summary["pairs"]:
        lines += _pair_section(pair, [r for r in summary["results"] if (r["x"], r["y"]) == (pair["x"], pair["y"])],
                               level)
    if summary.get("selection"):
        lines += _selection_section(summary["selection"])
    if summary.get("halving"):
        lines += _halving_section(summary["halving"])
    if summary.get("sparsity"):
        lines += render_sparsity(summary["sparsity"])
    if summary.get("connectivity"):
        lines += render_connectivity(summary["connectivity"])
    best = summary.get("best")
    if best:
        lines += ["", f"`best/` holds the retrained model of trial `{best['trial_id']}`, the best by "
                      f"{best.get('metric')} ({fmt(best.get('value'))}). It is chosen on the test split: a look at the "
                      "best pruned model, not a way to choose one (pruning.selection chooses on a validation split).",
                  ""]
    return "\n".join(lines)


def write_report(directory: str | Path, summary: dict) -> None:
    """Write ``report.md`` and ``report.json`` into ``directory``."""
    directory = Path(directory)
    (directory / "report.md").write_text(render_markdown(summary), encoding="utf-8")
    (directory / "report.json").write_text(dumps(summary) + "\n", encoding="utf-8")
