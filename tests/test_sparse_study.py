"""The sparse-training study end to end: the quick recipe, shrunk, through `hfprune run`; resuming; recipe errors."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.study.registry import load_recipe, parse_recipe
from hfprune.errors import HfpruneError
from hfprune.study.runner import run_study
from hfprune.records.store import read_trials

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def tiny(**sparse) -> dict:
    """The quick recipe on few points and epochs, a width-3 model and a small search, without its sweep."""
    recipe = yaml.safe_load((RECIPES / "cubist_spiral_quick.yaml").read_text())
    recipe["model"]["config"] = {"hidden_sizes": [3, 3, 3]}
    recipe.pop("sweep"), recipe.pop("execution")  # one run per candidate, one at a time
    recipe["data"]["train_limit"] = 256
    recipe["training"].update(epochs=2, batch_size=64)
    recipe["sparse"] = {"budgets": [8, 12], "methods": ["gradual_magnitude", "snip", "random_at_init"],
                        "search": {"phase1": {"low": 1, "high": 2},
                                   "phase2": {"widths": "auto", "target_acc": 0.05, "budgets": [],
                                              "per_budget_limit": 2}},
                        **sparse}
    return recipe


def test_tiny_study_runs_through_the_cli_and_reports_frontier_and_effective_nonzeros(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    records = read_trials(out)
    by_setting = {}
    for record in records:
        by_setting.setdefault(record["setting"], []).append(record)
    # dense + 8 phase-1 width tuples (1..2 each) + 3 methods x 2 budgets + phase 2 (auto widths)
    assert len(by_setting["dense"]) == 1 and by_setting["dense"][0]["nonzeros"] == 2 * 3 + 3 * 3 + 3 * 3 + 3
    phase1 = [r for r in by_setting["search"] if r["phase"] == 1]
    assert len(phase1) == 8
    for record in phase1:
        d1, d2, d3 = record["widths"]
        assert record["budget"] == 2 * d1 + d1 * d2 + d2 * d3 + d3 == record["nonzeros"]
    phase2 = [r for r in by_setting["search"] if r["phase"] == 2]
    assert phase2, "auto widths at a target every width reaches give phase-2 candidates"
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["kind"] == "sparse" and tuple(manifest["phase2_widths"]) == tuple(phase2[0]["widths"])
    for method in ("gradual_magnitude", "snip", "random_at_init"):
        assert sorted(r["nonzeros"] for r in by_setting[method]) == [8, 12]  # every budget reached exactly
    for record in records:
        assert 0 <= record["effective_nonzeros"] <= record["nonzeros"]
        assert record["disconnected_weights"] == record["nonzeros"] - record["effective_nonzeros"]
        assert (out / "checkpoints" / record["trial_id"].replace(":", "_") / "config.json").is_file()
    report = (out / "report.md").read_text()
    assert "effective" in report and "search" in report and "gradual_magnitude" in report
    assert "measured on the training points" in report and "| acc on training points |" in report
    assert "run-to-run noise is not measured" in report, "one run per method and budget: no noise figure"
    summary = json.loads((out / "report.json").read_text())
    assert [found["target"] for found in summary["targets"]] == [0.95]  # the default: the paper's 95% bench
    assert set(summary["targets"][0]["sparsest"]) == {"search", "gradual_magnitude", "snip", "random_at_init"}
    assert "Sparsest model at ≥ 95% accuracy" in report and f"finding: {summary['targets'][0]['line']}" in \
        " ".join(result.output.split())
    assert (out / "frontier.png").stat().st_size > 0 and (out / "cubist_spiral.png").stat().st_size > 0

    pruned = by_setting["gradual_magnitude"][0]
    diagnosed = CliRunner().invoke(app, ["diagnose", str(out), "--trial", pruned["trial_id"], "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    facts = json.loads(diagnosed.stdout[diagnosed.stdout.index("{"):])  # after any library warning line
    totals = facts["totals"]
    assert (totals["nonzeros"], totals["effective_nonzeros"]) == (pruned["nonzeros"], pruned["effective_nonzeros"])

    again = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert f"0 trials run, {len(records)} in the study" in again.output  # resumed: nothing repeated
    assert len(read_trials(out)) == len(records)


def test_search_trials_keep_exactly_their_support(tmp_path):
    recipe = parse_recipe(tiny(methods=[], search={"phase2": {"widths": [2, 2, 1], "budgets": [], "per_budget_limit": 1}}))
    result = run_study(recipe, tmp_path / "s", progress=False)
    search = [r for r in result.records if r["setting"] == "search"]
    assert search and all(r["phase"] == 2 and r["widths"] == [2, 2, 1] for r in search)
    assert all(r["nonzeros"] == r["budget"] for r in search)  # trained weights stay exactly on the support


def test_same_initialisation_across_trials_of_a_repeat(tmp_path):
    from hfprune.models import get_adapter
    from hfprune.study.sparse.trial import initial_model

    adapter = get_adapter("sparse_mlp")
    config = adapter.config(0, 0, 0, {"hidden_sizes": [3, 3, 3]})
    a, b, c = (initial_model(adapter, config, 0, repeat) for repeat in (0, 0, 1))
    assert all((x == y).all() for x, y in zip(a.parameters(), b.parameters()))
    assert any((x != y).any() for x, y in zip(a.parameters(), c.parameters()))


def test_budgets_beyond_the_model_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(HfpruneError, match="not below the model's 27 prunable weights"):
        run_study(parse_recipe(tiny(budgets=[100])), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("change, message", [
    ({"budgets": []}, "sparse.methods need sparse.budgets"),
    ({"budgets": [3, 3]}, "distinct positive nonzero counts"),
    ({"methods": [], "search": None}, "give sparse.methods"),
    ({"search": {"phase2": {"widths": "auto"}}}, "phase2.widths: auto picks widths from phase 1"),
    ({"search": {"phase1": {"low": 1, "high": 5}}}, "exceeds the model's width 3"),
    ({"methods": ["gradual_magnitude", "nope"]}, "nope"),
    ({"methods": ["gmp"]}, "'gmp' is global magnitude pruning.*'gradual_magnitude'"),
])
def test_bad_sparse_recipes_get_one_clear_line(change, message):
    with pytest.raises(HfpruneError, match=message):
        parse_recipe(tiny(**change))


def test_target_accuracies_are_fractions():
    with pytest.raises(HfpruneError, match=r"report.target_acc.*give accuracies in \(0, 1\], such as 0.95, got 95"):
        parse_recipe({**tiny(), "report": {"target_acc": [95]}})
    assert parse_recipe({**tiny(), "report": {"target_acc": [0.9, 0.995]}}).report.target_acc == [0.9, 0.995]
    from test_recipe_limits import HOSTILE

    for value in HOSTILE + [[value] for value in HOSTILE]:  # each accepted as a list of fractions, or one line
        try:
            targets = parse_recipe({**tiny(), "report": {"target_acc": value}}).report.target_acc
        except HfpruneError as error:
            assert "\n" not in str(error) and "target_acc" in str(error), value
        else:
            assert all(0 < target <= 1 for target in targets), value


def test_a_sparse_family_recipe_without_sparse_section_says_what_to_give():
    recipe = tiny()
    recipe.pop("sparse")
    with pytest.raises(HfpruneError, match="sparse: required field is missing"):
        parse_recipe(recipe)
    recipe.pop("training")
    recipe.update(pruning={"settings": [{"ratios": {"layers.0": 0.5}}]},
                  retrain={"epochs": 1, "batch_size": 8, "optimizer": {"lr": 0.1}})
    with pytest.raises(HfpruneError, match="give a sparse section"):
        parse_recipe(recipe)


def test_shipped_sparse_recipes_load():
    for path in sorted(RECIPES.glob("cubist_spiral_*.yaml")):
        recipe = load_recipe(path)
        assert recipe.kind == "sparse" and (recipe.sparse.budgets or recipe.sparse.search), path.name


def _count(name: str) -> dict[str, int]:
    """Trials per part, as the engine and hfprune run count them from the recipe alone."""
    from hfprune.study.sparse.plan import count_trials

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    parts, _ = count_trials(recipe.sparse, recipe.sweep)
    return parts


def test_the_paper_recipes_count_the_trials_of_the_reference_configurations():
    """The reference's README: parallel_run_fixed_init_95.py has 12,774 runs, _995 83,958 and the random-
    initialisation runs 389,106 (the over-parameterisation pruning, both searches' phase 1 and the (3, 3, 3) and
    restricted (7, 3, 3) phase 2, every one at its lr x schedule grid)."""
    fixed_95 = _count("cubist_spiral_fixed_init_95")
    width_3 = _count("cubist_spiral_optimal_width")
    assert fixed_95["methods"] + width_3["methods"] + fixed_95["search phase 1"] + fixed_95["search phase 2"] \
        == 12_774
    fixed_995 = _count("cubist_spiral_fixed_init_995")
    width_6 = _count("cubist_spiral_optimal_width_995")
    assert fixed_995["methods"] + width_6["methods"] + fixed_995["search phase 1"] + fixed_995["search phase 2"] \
        == 83_958
    widths = [f"cubist_spiral_overparam_w{w}" for w in (3, 4, 5, 6, 7, 8, 32, 64, 128, 256)]
    # the reference's nine methods (our recipes add a random mask: one trial in ten)
    overparam = sum(_count(name)["methods"] * 9 // 10 for name in widths + ["cubist_spiral_pruning"])
    search = _count("cubist_spiral_search")
    phase2_333 = 25_992 * 6  # (3, 3, 3), the widths phase 1 reaches 95% with (auto: counted when phase 1 is done)
    assert overparam + search["search phase 1"] + phase2_333 + _count("cubist_spiral_search_995")["search phase 2"] \
        == 389_106


@pytest.mark.slow
def test_two_ray_workers_give_the_records_of_the_in_process_run(tmp_path):
    ray = pytest.importorskip("ray")
    sections = {"methods": ["gradual_magnitude", "synflow"], "search": {"phase1": {"low": 1, "high": 1}}}
    recipe = tiny(**sections)
    recipe["execution"] = {"threads_per_trial": 1}  # the same arithmetic in-process and on Ray
    expected = run_study(parse_recipe(recipe), tmp_path / "in_process", progress=False)
    try:
        fanned = run_study(parse_recipe(recipe), tmp_path / "ray", progress=False, workers=2)
        packed = run_study(parse_recipe(recipe), tmp_path / "ray_packed", progress=False, workers=2, pack=2)
    finally:
        ray.shutdown()

    def without_timings(records):
        return {r["trial_id"]: {k: v for k, v in r.items() if k != "timings"} for r in records}

    assert fanned.trials_run == packed.trials_run == len(expected.records) == 1 + 1 + 2 * 2
    assert without_timings(fanned.records) == without_timings(expected.records)
    assert without_timings(packed.records) == without_timings(expected.records)  # each worker ran whole packs


def test_run_to_run_spread_is_best_minus_worst_run_of_one_method_at_one_budget():
    from hfprune.study.sparse.report import run_to_run

    def run(method, budget, acc):
        return {"kind": "method", "method": method, "budget": budget, "final_test_acc": acc}

    records = [run("snip", 8, 0.9), run("snip", 8, 0.7), run("imp", 8, 0.5), run("imp", 8, 0.45),
               run("imp", 8, 0.4), run("imp", 12, 0.3), {"kind": "search", "method": "search", "budget": 8,
                                                           "final_test_acc": 0.1}]
    noise = run_to_run(records)
    assert noise["median_spread"] == pytest.approx(0.15) and noise["max_spread"] == pytest.approx(0.2)
    assert noise["runs"] == 2  # the median of 2, 3 and 1 runs
    assert run_to_run([run("snip", 8, 0.9), run("snip", 12, 0.8)]) is None
