"""Trials of a study trained as packs: each record is the trial's alone (sparse MLP: equal; LeNet5-Mini: within the
packed engine's tolerance, masks and nonzero counts identical), a pack killed part way reruns only its unrecorded
trials, and a study counts its trials before any work, refusing a huge one with a line that says how to go on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.errors import HfpruneError
from hfprune.records.store import TrialStore, read_trials
from hfprune.study.registry import parse_recipe
from hfprune.study.runner import run_study
from hfprune.study.sparse.plan import refuse_before_the_engine
from hfprune.train.packed import TOLERANCE
from study_helpers import tiny_recipe
from test_sparse_study import tiny
from waiting import patience

ROOT = Path(__file__).resolve().parent.parent

METHODS = ["gradual_magnitude", "snip", "synflow", "random_at_init", {"name": "imp", "rounds": 2},
           {"name": "rigl", "delta": 3}]


def _packing_recipe() -> dict:
    recipe = tiny(methods=METHODS, budgets=[8, 12],
                  search={"phase1": {"low": 1, "high": 2},
                          "phase2": {"widths": [2, 2, 2], "budgets": [], "per_budget_limit": 1}})
    recipe["sweep"] = {"lr": [0.05, 0.1], "runs": 2, "init": "fresh"}
    recipe["sparse"]["checkpoints"] = "none"
    return recipe


def _without_timings(records: list[dict]) -> dict[str, dict]:
    return {r["trial_id"]: {k: v for k, v in r.items() if k != "timings"} for r in records}


def test_a_packed_sparse_mlp_study_records_what_its_trials_give_alone(tmp_path):
    recipe = parse_recipe(_packing_recipe())
    alone = run_study(recipe, tmp_path / "alone", progress=False, pack=1)
    packed = run_study(recipe, tmp_path / "packed", progress=False, pack=8)
    settings = {r["setting"] for r in packed.records}
    assert {"search", "gradual_magnitude", "snip", "synflow", "random_at_init", "imp", "rigl"} <= settings
    # bit for bit on the CPU: accuracy, loss, masks (nonzero and effective counts), every fact
    assert _without_timings(packed.records) == _without_timings(alone.records)
    assert packed.trials_run == len(alone.records) == len(packed.records)


def test_lenet5_mini_trials_pack_within_the_engines_tolerance(tmp_path):
    recipe = {
        "name": "lenet_pack", "seed": 3, "model": {"family": "lenet5_mini"},
        "data": {"dataset": "mnist_sample", "train_limit": 96, "test_limit": 64},
        "training": {"epochs": 1, "batch_size": 32,
                     "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}},
        "sparse": {"budgets": [1500], "methods": ["random_at_init", "snip"], "checkpoints": "none",
                   "structured": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 2}}]},
        "sweep": {"lr": [0.02, 0.05]},
    }
    parsed = parse_recipe(recipe)
    alone = _without_timings(run_study(parsed, tmp_path / "alone", progress=False, pack=1).records)
    packed = _without_timings(run_study(parsed, tmp_path / "packed", progress=False, pack=4).records)
    assert set(packed) == set(alone) and len(packed) == 2 * (1 + 2 + 2)
    for trial, record in packed.items():
        solo = alone[trial]
        for key in ("nonzeros", "effective_nonzeros", "budget", "candidate", "mask"):
            assert record.get(key) == solo.get(key), (trial, key)
        for key in ("final_test_acc", "final_test_loss"):
            assert record[key] == pytest.approx(solo[key], abs=max(TOLERANCE, 1 / 64)), (trial, key)


def test_a_pack_killed_part_way_reruns_only_its_unrecorded_trials(tmp_path, monkeypatch):
    recipe = parse_recipe(_packing_recipe())
    expected = _without_timings(run_study(recipe, tmp_path / "whole", progress=False, pack=8).records)

    original, appended = TrialStore.append, []

    def dying(self, record):
        if len(appended) == 5:  # the third of a pack's trials: the process dies between two records
            raise KeyboardInterrupt
        appended.append(record.trial_id)
        original(self, record)

    monkeypatch.setattr(TrialStore, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        run_study(recipe, tmp_path / "killed", progress=False, pack=8)
    monkeypatch.setattr(TrialStore, "append", original)
    assert len(read_trials(tmp_path / "killed")) == 5
    resumed = run_study(recipe, tmp_path / "killed", progress=False, pack=8)
    assert resumed.trials_run == len(expected) - 5  # the five recorded are not repeated
    ids = [r["trial_id"] for r in read_trials(tmp_path / "killed")]
    assert len(ids) == len(set(ids)) == len(expected)  # each exactly once
    assert _without_timings(read_trials(tmp_path / "killed")) == expected


def _huge() -> dict:
    """A phase 2 of about 3e8 candidates at widths (4, 4, 5) (every count, every support)."""
    recipe = tiny(methods=[], search={"phase2": {"widths": [4, 4, 5], "budgets": []}})
    recipe["model"]["config"] = {"hidden_sizes": [5, 5, 5]}
    return recipe


def test_a_huge_study_is_counted_and_refused_before_any_work(tmp_path, capsys):
    from hfprune.study.sparse.search import count_phase2

    count = count_phase2([4, 4, 5])
    assert count > 10 ** 8
    with pytest.raises(HfpruneError, match=rf"{count + 1:,} trials, more than execution.max_trials \(20,000\); to "
                                           r"run them give `hfprune run --yes`, or set execution.max_trials"):
        run_study(parse_recipe(_huge()), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    assert f"{count + 1:,} trials (dense 1, search phase 2 {count:,})" in capsys.readouterr().err


def test_the_cli_refuses_a_huge_study_in_one_line_and_yes_goes_on(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(_huge()))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "s"), "--no-progress"])
    said = result.output + str(result.exception)  # the count, then the refusal (main() prints it as one line)
    assert result.exit_code != 0 and "296,842,157 trials" in said and "--yes" in said and "max_trials" in said
    from hfprune.study.sparse.kind import SparseKind

    kind = SparseKind(parse_recipe(_huge()), tmp_path / "s", go_on=True)
    kind.check()  # counted, printed, and let through; nothing runs here
    bounded = {**_huge(), "execution": {"max_trials": 10 ** 9}}
    SparseKind(parse_recipe(bounded), tmp_path / "s").check()


def test_the_cli_counts_and_refuses_a_huge_study_before_it_imports_torch(tmp_path):
    """The count and the refusal come from the recipe alone, so hfprune run answers at once: nothing of the engine
    (torch, transformers, accelerate) is imported before it refuses."""
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(_huge()))
    engine = ("torch", "transformers", "accelerate")
    code = "\n".join([
        "import atexit, sys",
        f"atexit.register(lambda: print([name for name in {engine!r} if name in sys.modules]))",
        f"sys.argv = ['hfprune', 'run', {str(path)!r}, '--out', {str(tmp_path / 's')!r}]",
        "from hfprune.cli import main",
        "main()",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=patience(60))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()  # the count, then the refusal, as the engine prints them
    assert lines[0] == "cubist_spiral_quick: 296,842,157 trials (dense 1, search phase 2 296,842,156)"
    assert lines[1].startswith("error: cubist_spiral_quick has 296,842,157 trials, more than execution.max_trials "
                               "(20,000); to run them give `hfprune run --yes`, or set execution.max_trials: "
                               "296842157")
    assert result.stdout.strip() == "[]", f"imported before the refusal: {result.stdout}"
    assert not (tmp_path / "s").exists()


def test_only_a_sparse_recipe_beyond_its_bound_is_refused_before_the_engine(capsys):
    huge = _huge()
    with pytest.raises(HfpruneError, match="296,842,157 trials, more than execution.max_trials"):
        refuse_before_the_engine(huge)
    assert "296,842,157 trials (dense 1, search phase 2 296,842,156)" in capsys.readouterr().err
    for let_through in ({**huge, "execution": {"max_trials": 10 ** 9}},  # within its bound: the engine counts it
                        {**huge, "pruning": {}},  # another kind's section: the engine says what is wrong
                        {**huge, "kind": "oracle"},
                        {**huge, "sparse": {**huge["sparse"], "search": {"phase3": {}}}},  # the engine names it
                        tiny_recipe()):
        refuse_before_the_engine(let_through)
    refuse_before_the_engine(huge, go_on=True)  # hfprune run --yes
    assert capsys.readouterr().err == ""


def test_pack_sizes_from_the_command_line():
    result = CliRunner().invoke(app, ["run", "cubist_spiral_quick", "--pack", "zero"])
    assert result.exit_code != 0 and "pack size in 1..4096 or auto" in result.output
    with pytest.raises(HfpruneError, match="pack size in 1..4096 or auto"):
        parse_recipe({**tiny(), "execution": {"pack": 0}})


def test_auto_packs_after_a_short_calibration(tmp_path, capsys):
    recipe = tiny(methods=["random_at_init"], budgets=[8], search=None)
    recipe["sweep"] = {"runs": 3}
    recipe["execution"] = {"pack": "auto"}
    result = run_study(parse_recipe(recipe), tmp_path / "s", progress=False)
    assert len(result.records) == 6
    assert "execution.pack auto: packs of" in capsys.readouterr().err


def test_hfprune_methods_says_how_each_sparse_training_method_packs():
    listed = CliRunner().invoke(app, ["methods"]).output
    for name in ("gradual_magnitude", "imp", "rigl", "snip", "synflow", "magnitude"):
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert "packs: yes" in line, line
    assert "round by round" in next(line for line in listed.splitlines() if line.startswith("imp "))
