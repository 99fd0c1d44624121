"""Accuracy against nonzero weights: the combinatorial search's frontier beside the pruning methods (STUDY §5b).

The paper's main figure and table. Records are sparse-study trial lines (``trials.jsonl``): ``setting`` is
``"search"`` for a search candidate and the method's name otherwise; ``budget`` the method's target nonzeros;
``nonzeros`` the nominal nonzero weights, ``effective_nonzeros`` those on an input→output path;
``final_test_acc`` the outcome. Records without a final accuracy (unfinished or failed) are left out.

- The x-axis is ``nonzeros`` (nonzero weights, biases never counted) or ``model_nonzeros`` (weights + live
  biases, as the reference code counts its ``Model NNZ``); the report names which.
- The search's **frontier** at n is its best final test accuracy over candidates with at most n on the x-axis
  (over every run and sweep point: the best of a grid, as the paper's points).
- A method is compared, at each budget, run by run: each run against the search's frontier at ≤ that run's own x
  (with weights on the axis and exact budgets, at ≤ the budget). ``gap`` = the smallest search − run over its runs
  (so the search is above the method at a budget only when it is above its best run); ``gap_mean`` uses the
  method's mean. Comparing with the best run is the conservative reading of "the search is above the method".
- The **sparsest model at a target accuracy** (the paper's headline: its benches are 95% and 99.5%): per setting
  (the search, each method), the fewest on the x-axis among its runs reaching the target. The search's is sparser
  than a method's when the method's is larger or the method has none (said with how far its runs went on the
  x-axis: no run of it reached the target at its budgets).
- The **disconnected share** of a method is the share of its nonzero weights (pooled over its runs) that lie on
  no input→output path: 1 − Σ effective / Σ nominal.

Figures use matplotlib's object API rendered by Agg (no pyplot), as :mod:`hfprune.report.plots` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from matplotlib.figure import Figure

from hfprune.errors import HfpruneError

SEARCH = "search"
ACC = "final_test_acc"
NOMINAL = "nonzeros"
EFFECTIVE = "effective_nonzeros"
MODEL = "model_nonzeros"
X_UNITS = {NOMINAL: "nonzero weights", EFFECTIVE: "effective nonzero weights", MODEL: "nonzeros with live biases"}
X_LABELS = {NOMINAL: "nonzero weights", EFFECTIVE: "effective nonzero weights (on an input→output path)",
            MODEL: "nonzero weights + live biases (the reference's Model NNZ)"}


def frontier(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The monotone step of the best accuracy reachable at ≤ n nonzeros: one ``(n, best)`` per n where the best
    rises, in ascending n. Points with an unknown accuracy are skipped."""
    steps: list[tuple[float, float]] = []
    for nonzeros, acc in sorted((n, a) for n, a in points if a is not None and not math.isnan(a)):
        if not steps or acc > steps[-1][1]:
            if steps and steps[-1][0] == nonzeros:
                steps[-1] = (nonzeros, acc)
            else:
                steps.append((nonzeros, acc))
    return steps


def best_at_most(steps: list[tuple[float, float]], nonzeros: float) -> float | None:
    """The frontier's accuracy at ``nonzeros`` (None when no candidate has that few)."""
    best = None
    for n, acc in steps:
        if n > nonzeros:
            break
        best = acc
    return best


def _plain(record: Any) -> Mapping[str, Any]:
    return record.to_json() if hasattr(record, "to_json") else record


def _finished(records: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The records with a final accuracy, each checked for the fields the frontier reads."""
    kept = []
    for record in map(_plain, records):
        if record.get(ACC) is None:
            continue
        name = record.get("trial_id") or record.get("mask_id") or "?"
        for field in ("setting", NOMINAL) + (() if record.get("setting") == SEARCH else ("budget",)):
            if record.get(field) is None:
                raise HfpruneError(f"sparse-study record {name} has no '{field}'; the frontier report reads "
                                   f"setting, budget, nonzeros and final_test_acc of every finished trial")
        kept.append(record)
    return kept


def _effective(record: Mapping[str, Any]) -> float | None:
    # A search candidate's supports have no zero row or column, so every weight lies on a path.
    value = record.get(EFFECTIVE)
    return record[NOMINAL] if value is None and record.get("setting") == SEARCH else value


def _x(record: Mapping[str, Any], x: str) -> float | None:
    return _effective(record) if x == EFFECTIVE else record.get(x)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def search_frontier(records: Iterable[Any], x: str = NOMINAL) -> list[tuple[float, float]]:
    """The search's frontier over ``x`` (``nonzeros`` or ``effective_nonzeros``)."""
    return frontier((_x(r, x), r[ACC]) for r in _finished(records) if r["setting"] == SEARCH
                    and _x(r, x) is not None)


def _by_method(records: list[Mapping[str, Any]]) -> dict[str, dict[int, list[Mapping[str, Any]]]]:
    grouped: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for record in records:
        if record["setting"] != SEARCH:
            grouped.setdefault(record["setting"], {}).setdefault(int(record["budget"]), []).append(record)
    return {method: dict(sorted(budgets.items())) for method, budgets in sorted(grouped.items())}


def frontier_table(records: Iterable[Any], x: str = NOMINAL) -> list[dict[str, Any]]:
    """Per method and budget: runs, mean/best accuracy, mean nominal, effective and model nonzeros, the search's
    best accuracy at ≤ the best run's x, and the gaps (the smallest search − run over the runs, each run against
    the frontier at ≤ its own x; search − mean)."""
    finished = _finished(records)
    steps = search_frontier(finished, x)
    rows = []
    for method, budgets in _by_method(finished).items():
        for budget, runs in budgets.items():
            accs = [float(r[ACC]) for r in runs]
            effective = [float(v) for v in map(_effective, runs) if v is not None]
            model = [float(r[MODEL]) for r in runs if r.get(MODEL) is not None]
            best, mean = max(accs), _mean(accs)
            best_run = runs[accs.index(best)]
            at = [(best_at_most(steps, _x(r, x)) if _x(r, x) is not None else None, float(r[ACC])) for r in runs]
            gaps = [search - acc for search, acc in at if search is not None]
            search = best_at_most(steps, _x(best_run, x)) if _x(best_run, x) is not None else None
            rows.append({"method": method, "budget": budget, "runs": len(runs), "mean_acc": mean, "best_acc": best,
                         "mean_nonzeros": _mean([float(r[NOMINAL]) for r in runs]),
                         "mean_effective_nonzeros": _mean(effective), "mean_model_nonzeros": _mean(model),
                         "search_best_acc": search, "gap": min(gaps) if len(gaps) == len(at) else None,
                         "gap_mean": None if search is None else search - mean,
                         "best_trial": best_run.get("trial_id")})
    return rows


def _budget_list(budgets: list[int]) -> str:
    return ", ".join(map(str, budgets))


def frontier_findings(table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: the budgets where the search is above, level with, or below its best run, those without a
    search candidate at ≤ the budget, and the finding as one line."""
    findings: dict[str, dict[str, Any]] = {}
    for row in table:
        entry = findings.setdefault(row["method"], {"above": [], "level": [], "below": [], "no_search": []})
        gap = row["gap"]
        key = "no_search" if gap is None else "above" if gap > 0 else "level" if gap == 0 else "below"
        entry[key].append(row["budget"])
    for method, entry in findings.items():
        compared = entry["above"] + entry["level"] + entry["below"]
        if not compared:
            line = f"{method}: no search candidate at or below its budgets {_budget_list(entry['no_search'])}"
        elif len(entry["above"]) == len(compared):
            gaps = [row["gap"] for row in table if row["method"] == method and row["gap"] is not None]
            line = (f"search above {method} at every budget ({len(compared)} budgets; gap {min(gaps):+.4f} to "
                    f"{max(gaps):+.4f} against its best run)")
        else:
            parts = []
            if entry["below"]:
                parts.append(f"{method} above the search at budgets {_budget_list(entry['below'])}")
            if entry["level"]:
                parts.append(f"level with the search at budgets {_budget_list(entry['level'])}")
            if entry["above"]:
                parts.append(f"search above at budgets {_budget_list(entry['above'])}")
            line = "; ".join(parts) + " (its best run against the search's best at ≤ the budget)"
        if compared and entry["no_search"]:
            line += f"; no search candidate at ≤ budgets {_budget_list(entry['no_search'])}"
        entry["line"] = line
    return findings


def overall_finding(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's finding, checked: whether the search's frontier lies above every method's best run at every
    budget, with the smallest gap, or where it does not."""
    compared = [row for row in table if row["gap"] is not None]
    missing = sorted({row["budget"] for row in table if row["gap"] is None})
    below = [row for row in compared if row["gap"] <= 0]
    budgets = sorted({row["budget"] for row in table})
    if not table:
        return {"holds": None, "line": "no method trials to compare with the search"}
    if not below and not missing:
        smallest = min(compared, key=lambda row: row["gap"])
        line = (f"the search is above every method at every budget ({len({r['method'] for r in table})} methods × "
                f"budgets {_budget_list(budgets)}; smallest gap {smallest['gap']:+.4f}, {smallest['method']} at "
                f"{smallest['budget']})")
        return {"holds": True, "smallest_gap": smallest["gap"], "line": line}
    parts = [f"{row['method']} at {row['budget']} ({row['best_acc']:.4f} vs {row['search_best_acc']:.4f})"
             for row in below]
    line = "the search is not above every method: " + ("; ".join(parts) if parts else "")
    if missing:
        line += ("; " if parts else "") + f"no search candidate at ≤ budgets {_budget_list(missing)}"
    return {"holds": False, "line": line}


def sparsest_at(records: Iterable[Any], target: float, x: str = NOMINAL) -> dict[str, dict[str, Any]]:
    """Per setting (the search first, then each method): its sparsest run reaching ``target`` accuracy (fewest on
    ``x``, then the higher accuracy) as ``x``, ``acc``, ``trial_id`` and ``budget`` (None when no run reaches it),
    its runs, its best accuracy and the most ``x`` any of its runs had."""
    settings: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for record in _finished(records):
        value = _x(record, x)
        if value is not None:
            settings.setdefault(record["setting"], []).append((float(value), record))
    order = sorted(settings, key=lambda setting: (setting != SEARCH, setting))
    sparsest: dict[str, dict[str, Any]] = {}
    for setting in order:
        runs = settings[setting]
        reaching = [(value, -float(r[ACC]), r) for value, r in runs if float(r[ACC]) >= target]
        entry: dict[str, Any] = {"x": None, "acc": None, "trial_id": None, "budget": None, "runs": len(runs),
                                 "best_acc": max(float(r[ACC]) for _, r in runs),
                                 "max_x": max(value for value, _ in runs)}
        if reaching:
            value, _, record = min(reaching, key=lambda item: item[:2])
            entry.update(x=value, acc=float(record[ACC]), trial_id=record.get("trial_id"),
                         budget=record.get("budget"))
        sparsest[setting] = entry
    return sparsest


def _percent(target: float) -> str:
    return f"{target * 100:g}%"


def target_finding(sparsest: Mapping[str, Mapping[str, Any]], target: float, x: str = NOMINAL) -> dict[str, Any]:
    """The paper's headline at one target accuracy: whether the search's sparsest model reaching it has fewer
    nonzeros on ``x`` than every method's sparsest (a method none of whose runs reaches it counts as needing more
    than it was given), as one line; ``holds`` is None without a search or a method."""
    methods = {setting: entry for setting, entry in sparsest.items() if setting != SEARCH}
    search, at = sparsest.get(SEARCH), f"at ≥ {_percent(target)} accuracy"
    if search is None or not methods:
        return {"target": target, "holds": None,
                "line": f"{at}: no {'search candidates' if search is None else 'method runs'} to compare"}
    unit = X_UNITS.get(x, x)
    reached = sorted((entry["x"], setting) for setting, entry in methods.items() if entry["x"] is not None)
    if search["x"] is None:
        line = (f"{at}: no search candidate reaches it (best {search['best_acc']:.4f})"
                + (f"; {reached[0][1]} does at {reached[0][0]:g} {unit}" if reached else "; no method run either"))
        return {"target": target, "holds": False, "line": line}
    said = [f"{setting} {value:g} (budget {methods[setting]['budget']}, {methods[setting]['acc']:.4f})"
            for value, setting in reached]
    never = [setting for setting, entry in methods.items() if entry["x"] is None]
    if never:
        best = max(methods[setting]["best_acc"] for setting in never)
        said.append(f"{', '.join(never)} with no run reaching it (best {best:.4f})")
    holds = all(value > search["x"] for value, _ in reached)
    line = (f"{at} the search's sparsest model has {search['x']:g} {unit} ({search['acc']:.4f}), "
            + ("fewer than every method's" if holds else "not fewer than every method's") + ": " + "; ".join(said))
    return {"target": target, "holds": holds, "line": line}


def disconnected_share(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per setting (methods and the search): pooled nominal and effective nonzeros over its runs that record
    both, and the share of nonzero weights on no input→output path."""
    totals: dict[str, list[float]] = {}
    for record in _finished(records):
        effective = _effective(record)
        if effective is None:
            continue
        total = totals.setdefault(record["setting"], [0.0, 0.0, 0])
        total[0] += float(record[NOMINAL])
        total[1] += float(effective)
        total[2] += 1
    return {setting: {"runs": runs, "nonzeros": nominal, "effective_nonzeros": effective,
                      "share": (nominal - effective) / nominal if nominal else None}
            for setting, (nominal, effective, runs) in sorted(totals.items())}


def _panel(axes, finished: list[Mapping[str, Any]], x: str) -> None:
    search = [(_x(r, x), float(r[ACC])) for r in finished if r["setting"] == SEARCH and _x(r, x) is not None]
    if search:
        axes.scatter([p[0] for p in search], [p[1] for p in search], s=10, color="0.45", alpha=0.35,
                     linewidths=0, zorder=1, label=f"search candidates ({len(search)})")
        steps = frontier(search)
        xs = [n for n, _ in steps] + [max(p[0] for p in search)]
        ys = [a for _, a in steps] + [steps[-1][1]]
        axes.step(xs, ys, where="post", color="black", linewidth=1.6, label="search frontier (best at ≤ n)")
    for method, budgets in _by_method(finished).items():
        points = []
        for runs in budgets.values():
            xs = [float(_x(r, x)) for r in runs if _x(r, x) is not None]
            if xs:
                points.append((_mean(xs), _mean([float(r[ACC]) for r in runs])))
        if points:
            points.sort()
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, linewidth=1.2,
                      label=f"{method} (mean per budget)")
    axes.set_xlabel(X_LABELS.get(x, x))
    axes.set_ylabel("final test accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")


def frontier_plot(records: Iterable[Any], path: str | Path, x: str = NOMINAL,
                  second_x: str | None = EFFECTIVE) -> Path:
    """Write a PNG of accuracy against ``x`` (linear axis): the search's candidates faint, its frontier as a step
    line, each method's mean accuracy per budget as a line; a second panel against ``second_x`` (default the
    effective nonzeros, where pruned models' disconnected weights show as a shift to the left)."""
    finished = _finished(records)
    panels = [x] + ([second_x] if second_x and second_x != x else [])
    figure = Figure(figsize=(5.8 * len(panels), 4.4), dpi=120)
    for position, panel_x in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        _panel(axes, finished, panel_x)
        axes.set_title(f"accuracy vs {X_LABELS.get(panel_x, panel_x).split(' (')[0]}", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _cell(value: Any, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def frontier_json(records: Iterable[Any], x: str = NOMINAL, targets: Iterable[float] = ()) -> dict[str, Any]:
    """The frontier report as plain data: the x-axis, the search's frontiers, the table, findings (the overall one
    first), the sparsest model of every setting at each of ``targets`` (accuracies) with its finding, and
    disconnected shares."""
    finished = _finished(records)
    search = [r for r in finished if r["setting"] == SEARCH]
    phases: dict[str, int] = {}
    for record in search:
        phases[str(record.get("phase"))] = phases.get(str(record.get("phase")), 0) + 1
    table = frontier_table(finished, x)
    return {"x_axis": x, "x_label": X_LABELS.get(x, x),
            "search": {"candidates": len(search), "by_phase": phases,
                       "frontier": [list(step) for step in search_frontier(finished, x)],
                       "frontier_effective": [list(step) for step in search_frontier(finished, EFFECTIVE)]},
            "table": table, "finding": overall_finding(table), "findings": frontier_findings(table),
            "targets": [_target(finished, target, x) for target in targets],
            "disconnected": disconnected_share(finished)}


def _target(finished: list[Mapping[str, Any]], target: float, x: str) -> dict[str, Any]:
    sparsest = sparsest_at(finished, target, x)
    return {**target_finding(sparsest, target, x), "sparsest": sparsest}


def frontier_markdown(records: Iterable[Any], x: str = NOMINAL, targets: Iterable[float] = ()) -> list[str]:
    """A markdown section: the x-axis, the search's frontier, the table per method and budget, the overall finding
    and one per method, the sparsest model of every setting at each target accuracy, and each method's share of
    disconnected nonzero weights."""
    report = frontier_json(records, x, targets)
    lines = ["## Search frontier against the sparse-training methods", "",
             f"x-axis: {report['x_label']} (`{x}`); budgets count nonzero weights.", ""]
    search = report["search"]
    if not search["candidates"] and not report["table"]:
        return lines + ["No finished sparse-study trials yet.", ""]
    steps = ", ".join(f"{n:g} → {acc:.4f}" for n, acc in search["frontier"]) or "none"
    phases = ", ".join(f"phase {p}: {count}" for p, count in sorted(search["by_phase"].items()))
    lines += [f"The search trained {search['candidates']} candidates" + (f" ({phases})" if phases else "")
              + f"; its frontier (best final test accuracy at ≤ n on the x-axis) steps at: {steps}.", ""]
    if report["table"]:
        lines += ["| method | budget | runs | mean acc | best acc | mean nonzeros | mean effective | "
                  "mean with biases | search best ≤ x | gap (search − best) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in report["table"]:
            lines.append(f"| {row['method']} | {row['budget']} | {row['runs']} | {_cell(row['mean_acc'])} | "
                         f"{_cell(row['best_acc'])} | {_cell(row['mean_nonzeros'], '.1f')} | "
                         f"{_cell(row['mean_effective_nonzeros'], '.1f')} | "
                         f"{_cell(row['mean_model_nonzeros'], '.1f')} | {_cell(row['search_best_acc'])} | "
                         f"{_cell(row['gap'], '+.4f')} |")
        lines += ["", f"**Finding: {report['finding']['line']}.**", "", "Per method:"]
        lines += [f"- {entry['line']}" for entry in report["findings"].values()]
    for found in report["targets"]:
        lines += ["", f"Sparsest model at ≥ {_percent(found['target'])} accuracy (fewest on the x-axis among the "
                  "runs reaching it): **" + found["line"] + ".**", "",
                  "| setting | sparsest | its acc | budget | trial | runs | best acc | runs up to |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for setting, entry in found["sparsest"].items():
            lines.append(f"| {setting} | {_cell(entry['x'], 'g')} | {_cell(entry['acc'])} | "
                         f"{'—' if entry['budget'] is None else entry['budget']} | {entry['trial_id'] or '—'} | "
                         f"{entry['runs']} | {entry['best_acc']:.4f} | {entry['max_x']:g} |")
    shares = {m: s for m, s in report["disconnected"].items() if m != SEARCH and s["share"] is not None}
    if shares:
        lines += ["", "Disconnected weights (nonzero, but on no input→output path):"]
        lines += [f"- {method}: {share['share']:.1%} of {share['nonzeros']:g} nonzero weights over "
                  f"{share['runs']} runs" for method, share in shares.items()]
    return lines + [""]
