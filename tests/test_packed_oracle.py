"""Oracle trials with their retraining packed: every record is the trial's alone (LeNet5-Mini: metrics within the
packed engine's tolerance; masks, nonzeros and every fact identical), masked and physically pruned, with a sweep
over lr and with the data's augmentation; trials the packed engine cannot retrain run alone."""

from __future__ import annotations

import pytest

import hfprune.study.oracle.trial as oracle_trial
from hfprune.records.store import TrialStore, read_trials
from hfprune.study.oracle.context import OracleContext
from hfprune.study.oracle.kind import OracleKind
from hfprune.study.registry import parse_recipe
from hfprune.study.runner import run_study
from hfprune.train.packed import TOLERANCE, train_packed
from study_helpers import tiny_recipe

METRICS = ("final_test_acc", "final_test_loss")


def _recipe(**retrain) -> dict:
    recipe = tiny_recipe(name="packed_oracle", seed=3)
    recipe["data"] = {"dataset": "mnist_sample", "train_limit": 160, "test_limit": 64}
    recipe["pretrain"]["epochs"] = 1
    recipe["pruning"] = {"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 3}},
                                      {"ratios": {"conv2": 0.3}, "candidates": {"mode": "random", "num": 2}}]}
    recipe["retrain"] = {"epochs": 2, "batch_size": 32,
                         "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
                         "schedule": {"name": "multistep", "milestones": [1]}, **retrain}
    recipe["evaluation"] = {"batch_size": 64}
    recipe["export"] = {"checkpoints": "none"}
    return recipe


def _records(result) -> dict[str, dict]:
    return {r["trial_id"]: {k: v for k, v in r.items() if k != "timings"} for r in result.records}


def _assert_alike(packed: dict, alone: dict) -> None:
    assert set(packed) == set(alone)
    for trial, record in packed.items():
        solo = alone[trial]
        assert {k: v for k, v in record.items() if k not in METRICS} == \
            {k: v for k, v in solo.items() if k not in METRICS}, trial  # masks, nonzeros, steps, pruned metrics
        for key in METRICS:
            assert record[key] == pytest.approx(solo[key], abs=max(TOLERANCE, 1 / 64)), (trial, key)


@pytest.fixture
def pack_sizes(monkeypatch) -> list[int]:
    """The size of every pack the oracle trials retrain in."""
    sizes = []

    def spy(jobs, *args, **kwargs):
        sizes.append(len(jobs))
        return train_packed(jobs, *args, **kwargs)

    monkeypatch.setattr(oracle_trial, "train_packed", spy)
    return sizes


@pytest.mark.parametrize("physical", [True, False])
def test_packed_oracle_trials_record_what_they_give_alone(tmp_path, physical, pack_sizes):
    recipe = _recipe(physical=physical)
    recipe["sweep"] = {"lr": [0.02, 0.05]}
    parsed = parse_recipe(recipe)
    alone = _records(run_study(parsed, tmp_path / "alone", progress=False, pack=1))
    assert pack_sizes == []
    packed = run_study(parsed, tmp_path / "packed", progress=False, pack=4)
    assert len(alone) == 2 * (3 + 2) and packed.trials_run == len(alone)
    # physical: packs within a setting (6 and 4 trials: 4+2, 4); masked: across settings (10 trials: 4+4+2)
    assert sorted(pack_sizes) == [2, 4, 4]
    records = _records(packed)
    assert {r["retrain_form"] for r in records.values()} == {"physical" if physical else "masked"}
    _assert_alike(records, alone)


def test_augmented_retraining_packs_with_each_trials_own_random_stream(tmp_path, pack_sizes):
    recipe = _recipe()
    recipe["data"]["augment"] = ["pad_crop", "hflip"]
    parsed = parse_recipe(recipe)
    _assert_alike(_records(run_study(parsed, tmp_path / "packed", progress=False, pack=3)),
                  _records(run_study(parsed, tmp_path / "alone", progress=False, pack=1)))
    assert sorted(pack_sizes) == [2, 3]


def _context(tmp_path, **retrain) -> tuple[OracleContext, list]:
    kind = OracleKind(parse_recipe(_recipe(**retrain)), tmp_path)
    kind.check()
    dense = kind.adapter.build(kind.config)
    return OracleContext(kind.recipe, dense, kind.task, kind.plan, tmp_path), kind.specs


def test_masked_trials_of_every_setting_share_a_pack_and_physical_ones_pack_per_setting(tmp_path):
    context, specs = _context(tmp_path / "masked", physical=False)
    assert len({context.pack_key(spec) for spec in specs}) == 1
    context, specs = _context(tmp_path / "physical")
    keys = {spec.candidate.setting: context.pack_key(spec) for spec in specs}
    assert None not in keys.values() and len(set(keys.values())) == 2


def test_trials_the_packed_engine_cannot_retrain_run_alone(tmp_path):
    context, specs = _context(tmp_path / "short", short_fraction=0.5)
    assert {context.pack_key(spec) for spec in specs} == {None}
    context, specs = _context(tmp_path / "accumulate", gradient_accumulation_steps=2)
    assert {context.pack_key(spec) for spec in specs} == {None}


def test_an_oracle_pack_killed_part_way_reruns_only_its_unrecorded_trials(tmp_path, monkeypatch):
    parsed = parse_recipe(_recipe())
    original, appended = TrialStore.append, []

    def dying(self, record):
        if len(appended) == 2:  # the third of the first pack's four trials: dies between two records
            raise KeyboardInterrupt
        appended.append(record.trial_id)
        original(self, record)

    monkeypatch.setattr(TrialStore, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        run_study(parsed, tmp_path, progress=False, pack=4)
    monkeypatch.setattr(TrialStore, "append", original)
    resumed = run_study(parsed, tmp_path, progress=False, pack=4)
    ids = [r["trial_id"] for r in read_trials(tmp_path)]
    assert resumed.trials_run == 5 - 2 and ids[:2] == appended and len(ids) == len(set(ids)) == 5
