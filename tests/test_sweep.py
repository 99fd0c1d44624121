"""Sweeps: a recipe's grid (or points) × runs expands into exactly those trials, each training with its point's
settings; the reference's schedules (cosine stepped per epoch, milestones at fractions of the epochs); the report's
best run per candidate; where each run starts (per_run, fixed, fresh); bad sweeps are one line."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.study.recipe import SweepSchedule, SweepSection
from hfprune.study.registry import parse_recipe
from hfprune.study.runner import run_study
from hfprune.study.sparse.trial import init_seed
from hfprune.study.spec import TrialSpec
from hfprune.study.sweep import best_per_candidate, best_records, variants
from hfprune.train.sections import TrainingSection
from test_sparse_study import tiny

PAPER_GRID = {"lr": [0.05, 0.1], "schedule": ["cosine", {"name": "multistep", "milestone_fractions": [0.3, 0.6]},
                                                "constant"], "runs": 2}


def test_a_sweep_expands_into_the_exact_grid_of_trials(tmp_path):
    recipe = tiny(methods=["random_at_init"], budgets=[8], search=None)
    recipe["sweep"] = PAPER_GRID
    recipe["training"]["epochs"] = 10  # milestones at ceil(3) and ceil(6) epochs
    result = run_study(parse_recipe(recipe), tmp_path / "s", progress=False)
    # dense + one method at one budget, each at 2 lr x 3 schedules x 2 runs
    assert len(result.records) == 2 * 2 * 3 * 2
    grid = {(r["setting"], r["sweep_lr"], r["sweep_schedule"], r["repeat"]) for r in result.records}
    assert grid == {(setting, lr, schedule, run) for setting in ("dense", "random_at_init") for lr in (0.05, 0.1)
                    for schedule in ("cosine", "step0.3-0.6", "constant") for run in (0, 1)}
    ids = {r["trial_id"] for r in result.records}
    assert "random_at_init:nnz8:lr0.05-step0.3-0.6:r1" in ids and "dense:full:lr0.1-cosine:r0" in ids


def test_each_point_trains_with_its_own_lr_schedule_and_epochs():
    training = TrainingSection(epochs=50, batch_size=128, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
                               schedule={"name": "cosine"})
    sweep = SweepSection(lr=[0.05, 0.2], schedule=[{"name": "multistep", "milestone_fractions": [0.3, 0.6]}],
                         epochs=[20, 50])
    points = {point.label: point.apply(training) for point in variants(sweep)}
    assert set(points) == {"lr0.05-e20", "lr0.05-e50", "lr0.2-e20", "lr0.2-e50"}  # only varying axes name a point
    section = points["lr0.2-e50"]
    # the reference: milestones [math.ceil(epochs * f) for f in (0.3, 0.6)], gamma 0.1
    assert (section.optimizer.lr, section.epochs, section.schedule.name) == (0.2, 50, "multistep")
    assert section.schedule.milestones == [15, 30] and section.schedule.gamma == 0.1
    assert points["lr0.05-e20"].schedule.milestones == [6, 12]
    assert section.optimizer.momentum == 0.9 and section.batch_size == 128  # the rest is the recipe's
    assert variants(None)[0].apply(training) == training


def test_cosine_per_epoch_is_torchs_cosine_annealing_stepped_once_per_epoch():
    """The reference: CosineAnnealingLR(optimizer, T_max=epochs), scheduler.step() after every epoch."""
    from hfprune.train.optim import build_schedule

    epochs, steps_per_epoch, lr = 7, 3, 0.1
    resolved = SweepSchedule(name="cosine_per_epoch").resolve(epochs)
    param = torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.SGD([param], lr=lr)
    schedule = build_schedule(ours, resolved, steps_per_epoch, epochs)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(reference, epochs)
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):  # constant within an epoch
            assert ours.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"], rel=1e-12)
            ours.step()
            schedule.step()
        reference.step()
        annealing.step()
    # and it is the closed form lr (1 + cos(pi e / E)) / 2 at epoch e
    assert reference.param_groups[0]["lr"] == pytest.approx(lr * (1 + math.cos(math.pi)) / 2, abs=1e-12)


def test_points_given_by_hand_name_their_trials():
    sweep = SweepSection(points=[{"label": "LR1", "lr": 1e-3, "schedule": "constant"},
                                 {"label": "LR2", "lr": 0.1, "schedule": {"name": "multistep", "milestones": [5, 10],
                                                                          "gammas": [0.01, 0.1]}}])
    first, second = variants(sweep)
    section = TrainingSection(epochs=15, batch_size=8, optimizer={"lr": 0.5})
    assert (first.label, first.apply(section).optimizer.lr, first.apply(section).schedule.name) == \
        ("LR1", 1e-3, "constant")
    assert second.apply(section).schedule.factors() == [0.01, 0.1] and second.apply(section).epochs == 15


def _records():
    """Hand-made records: two candidates of one method at two sweep points x two runs, and a search candidate."""
    def record(trial, setting, mask, point, run, acc):
        return {"trial_id": trial, "setting": setting, "mask_id": mask, "sweep_point": point, "repeat": run,
                "final_test_acc": acc}

    return [record("gmp:nnz8:a:r0", "gmp", "nnz8", "a", 0, 0.61), record("gmp:nnz8:a:r1", "gmp", "nnz8", "a", 1, 0.72),
            record("gmp:nnz8:b:r0", "gmp", "nnz8", "b", 0, 0.70), record("gmp:nnz8:b:r1", "gmp", "nnz8", "b", 1, 0.55),
            record("gmp:nnz9:a:r0", "gmp", "nnz9", "a", 0, 0.80), record("gmp:nnz9:b:r0", "gmp", "nnz9", "b", 0, 0.80),
            record("search:w1-1-1:a:r0", "search", "w1-1-1", "a", 0, 0.5), {"trial_id": "x", "setting": "gmp"}]


def test_best_per_candidate_is_the_maximum_over_points_and_runs():
    rows = {(row["setting"], row["mask_id"]): row for row in best_per_candidate(_records())}
    assert set(rows) == {("gmp", "nnz8"), ("gmp", "nnz9"), ("search", "w1-1-1")}  # unfinished records left out
    nnz8 = rows[("gmp", "nnz8")]
    assert (nnz8["best"], nnz8["runs"], nnz8["best_point"], nnz8["best_run"]) == (0.72, 4, "a", 1)
    assert nnz8["mean"] == pytest.approx((0.61 + 0.72 + 0.70 + 0.55) / 4)
    assert rows[("gmp", "nnz9")]["best_trial"] == "gmp:nnz9:a:r0"  # a tie: the first trial id
    assert [r["trial_id"] for r in best_records(_records())] == ["gmp:nnz8:a:r1", "gmp:nnz9:a:r0",
                                                                "search:w1-1-1:a:r0"]


def test_the_reports_best_per_candidate_is_the_best_of_every_run(tmp_path):
    recipe = tiny(methods=["snip", "random_at_init"], budgets=[8, 12],
                  search={"phase1": {"low": 1, "high": 1}})
    recipe["sweep"] = {"lr": [0.05, 0.2], "runs": 2, "init": "fresh"}
    result = run_study(parse_recipe(recipe), tmp_path / "s", progress=False)
    from hfprune.study.registry import report_study

    summary = report_study(tmp_path / "s", plots=False)
    by_hand: dict = {}
    for record in result.records:
        key = (record["setting"], record["mask_id"])
        by_hand[key] = max(by_hand.get(key, 0.0), record["final_test_acc"])
    reported = {(row["setting"], row["mask_id"]): row["best"] for row in summary["sweep"]["best_per_candidate"]}
    assert reported == by_hand and len(reported) == 1 + 1 + 2 * 2  # dense, w1-1-1, 2 methods x 2 budgets
    for row in summary["table"]:  # the frontier table's best run is the same maximum
        assert row["best_acc"] == by_hand[(row["method"], f"nnz{row['budget']}")] and row["runs"] == 4


def test_where_each_run_starts():
    adapter = get_adapter("sparse_mlp")
    spec = lambda candidate, run: TrialSpec(type("C", (), {"setting": candidate, "mask_id": "m"})(), run)  # noqa: E731
    a0, a1, b0 = spec("a", 0), spec("a", 1), spec("b", 0)
    assert init_seed(0, a0, "per_run") == init_seed(0, b0, "per_run") != init_seed(0, a1, "per_run")
    assert init_seed(0, a0, "fixed") == init_seed(0, a1, "fixed") == init_seed(0, b0, "fixed")
    assert len({init_seed(0, s, "fresh") for s in (a0, a1, b0)}) == 3
    assert adapter.searchable


def test_a_width_3_model_starts_from_the_slice_of_the_width_16_initialisation():
    from hfprune.study.sparse.trial import initial_model

    adapter = get_adapter("sparse_mlp")
    wide = initial_model(adapter, adapter.config(0, 0, 0, {"hidden_sizes": [16, 16, 16]}), 0, 0, seed=5)
    small = initial_model(adapter, adapter.config(0, 0, 0, {"hidden_sizes": [3, 3, 3]}), 0, 0, seed=5,
                          init_width=16)
    wide_params = dict(wide.named_parameters())
    for name, param in small.named_parameters():  # the reference: weight[:w, :w], bias[:w], classifier[:, :w]
        assert torch.equal(param, wide_params[name][tuple(slice(0, size) for size in param.shape)]), name


@pytest.mark.parametrize("sweep, message", [
    ({"lr": [0.1], "points": [{"label": "a", "lr": 0.2}]}, "grid axes .* or points, not both"),
    ({"lr": [0.1, 0.1]}, "distinct positive"),
    ({"schedule": ["cosine", "cosine"]}, "schedules must differ"),
    ({"schedule": [{"name": "cosine", "milestone_fractions": [0.3]}]}, "set name: multistep"),
    ({"schedule": [{"name": "multistep", "milestone_fractions": [0.6, 0.3]}]}, "increase within"),
    ({"points": [{"lr": 0.1}, {"lr": 0.2}]}, "give every point a label"),
    ({"report": "each"}, "reports each candidate's best run"),
])
def test_bad_sweeps_are_one_line(sweep, message):
    recipe = tiny()
    recipe["sweep"] = sweep
    with pytest.raises(HfpruneError, match=message) as error:
        parse_recipe(recipe)
    assert "\n" not in str(error.value)


def test_runs_are_given_in_one_place():
    recipe = tiny(repeats=2)
    recipe["sweep"] = {"runs": 3}
    with pytest.raises(HfpruneError, match="sparse.repeats and sweep.runs"):
        parse_recipe(recipe)


def test_oracle_sweeps_change_the_retraining_and_analyse_each_point(tmp_path):
    from study_helpers import tiny_recipe

    recipe = tiny_recipe(pruning={"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random",
                                                                                        "num": 2}}]})
    recipe["sweep"] = {"points": [{"label": "LR1", "lr": 0.001}, {"label": "LR2", "lr": 0.05}]}
    parsed = parse_recipe(recipe)
    from hfprune.study.oracle.kind import OracleKind

    kind = OracleKind(parsed, tmp_path / "o")
    kind.check()
    assert sorted(spec.trial_id.split(":")[-2] for spec in kind.specs) == ["LR1", "LR1", "LR2", "LR2"]
    for bad, message in (({"init": "fresh"}, "start from the dense model"), ({"report": "best"}, "report: each"),
                         ({"applies_to": "rounds"}, "give pruning.schedule")):
        with pytest.raises(HfpruneError, match=message):
            parse_recipe({**recipe, "sweep": {**recipe["sweep"], **bad}})
    from hfprune.study.oracle.report import by_sweep_point

    assert by_sweep_point({"setting": "conv1@0.5", "sweep_point": "LR2"})["setting"] == "conv1@0.5 [LR2]"


def test_the_shipped_iterative_recipe_sweeps_lr1_and_lr2():
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" /
                           "resnet50_cifar100_iterative.yaml").read_text())
    recipe = parse_recipe(data)
    points = {point.label: point for point in variants(recipe.sweep)}
    assert recipe.sweep.applies_to == "rounds" and set(points) == {"LR1", "LR2"}
    rounds = recipe.pruning.schedule.retrain
    lr1, lr2 = points["LR1"].apply(rounds), points["LR2"].apply(rounds)
    assert (lr1.optimizer.lr, lr1.schedule.name) == (1e-3, "constant")  # paper App. B.2, Table A3
    assert (lr2.optimizer.lr, lr2.schedule.milestones, lr2.schedule.factors()) == (0.1, [5, 10], [0.01, 0.1])
