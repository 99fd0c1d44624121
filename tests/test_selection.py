"""Successive halving over masks: rung sizes, continuation from checkpoints, the validation split, resuming."""

import hashlib
import json

import pytest
import torch

from hfprune.study.registry import parse_recipe
from hfprune.data import ImageClassificationData, TensorImageSet
from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.study.oracle.context import OracleContext
from hfprune.study.executors.inprocess import InProcessExecutor
from hfprune.study.oracle.plan import plan_for
from hfprune.study.oracle.halving import Rung, rungs, successive_halving
from hfprune.study.oracle.halving.stage import RungStore
from hfprune.study.oracle.halving.rung_trial import checkpoint_path, load_checkpoint
from hfprune.study.oracle.halving.rungs import epochs_spent
from hfprune.data.validation import hold_out
from hfprune.study.tasks.image_classification import ImageClassificationTask
from study_helpers import tiny_recipe

EPOCHS, TRAIN, BATCH = 9, 40, 20  # 2 steps per epoch


def test_rungs_grow_by_eta_and_end_with_the_full_retraining():
    assert rungs(9, 3, 1 / 9, 9) == [Rung(1, 9), Rung(3, 3), Rung(9, 1)]
    assert rungs(252, 3, 0.1, 10) == [Rung(1, 252), Rung(3, 84), Rung(9, 28), Rung(10, 10)]
    assert rungs(5, 3, 0.5, 4) == [Rung(2, 5), Rung(4, 2)]
    assert rungs(3, 2, 1.0, 4) == [Rung(4, 3)]  # min_fraction 1: every candidate fully retrained
    assert epochs_spent(rungs(252, 3, 0.1, 10)) == 252 * 1 + 84 * 2 + 28 * 6 + 10 * 1
    with pytest.raises(HfpruneError, match="retrain.epochs"):
        rungs(4, 3, 0.1, 0)


class CountingTask(ImageClassificationTask):
    """A classification task whose metric is a known function of the mask and the training done.

    The model carries a ``seen`` buffer that the loss adds every batch's size to, so it travels in checkpoints.
    Metric: quality(mask) · seen / (EPOCHS · train size), quality = 1 − (the pruned conv1 index) / 10
    (pruning filter 0 is best). ``calls`` lists the split of every evaluation.
    """

    def __init__(self, data, validation):
        super().__init__(data, 64, validation=validation)
        self.calls = []

    def loss_fn(self, section=None):
        base = super().loss_fn(section)

        def loss(model, batch):  # counts training batches only (criteria such as Taylor-FO score in eval mode)
            if model.training:
                getattr(model, "module", model).seen += len(batch["labels"])
            return base(model, batch)

        return loss

    @staticmethod
    def quality(model):
        pruned = [i for i, w in enumerate(dict(model.named_parameters())["conv1.weight"]) if torch.all(w == 0)]
        return 1 - sum(pruned) / 10

    def evaluate(self, model, split, workdir=None):
        self.calls.append(split)
        acc = self.quality(model) * float(model.seen) / (EPOCHS * len(self.train_set))
        return {"acc": acc, "loss": 1 - acc}



def _images(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return TensorImageSet(torch.randn(n, 1, 32, 32, generator=generator), torch.arange(n) % 10)


def _recipe(**selection):
    recipe = tiny_recipe(
        data={"dataset": "mnist_sample", "validation_fraction": 0.2},
        export={"checkpoints": "none"},
        pruning={"settings": [{"ratios": {"conv1": 0.1}, "candidates": {"mode": "exhaustive"}}],
                 "selection": {"method": "successive_halving", "eta": 3, "min_fraction": 1 / 9, **selection}},
        retrain={"epochs": EPOCHS, "batch_size": BATCH, "optimizer": {"name": "sgd", "lr": 0.01},
                 "schedule": {"name": "multistep", "milestones": [4, 8], "gamma": 0.5}})
    return parse_recipe(recipe)


def _setup(directory):
    recipe = _recipe()
    adapter = get_adapter("lenet5_mini")
    data = ImageClassificationData("stub", _images(TRAIN + 10, 0), _images(10, 1), 10)
    data, validation = hold_out(data, 10 / (TRAIN + 10), recipe.seed)
    task = CountingTask(data, validation)
    torch.manual_seed(0)
    dense = adapter.build(adapter.config(10, 1, 32, {}))
    dense.register_buffer("seen", torch.zeros((), dtype=torch.float64))
    groups = adapter.groups(dense.config)
    plan = plan_for(recipe, adapter, groups, task)
    return OracleContext(recipe, dense, task, plan, directory), plan.trials()


def _run(context, specs, finished=frozenset()):
    with InProcessExecutor() as executor:
        return list(successive_halving(context, executor, specs, set(finished)))


def test_successive_halving_rungs_continue_from_checkpoints_and_choose_by_validation_only(tmp_path):
    context, specs = _setup(tmp_path)
    assert len(specs) == 10  # the 10 ways to prune one of conv1's 10 filters
    executor = InProcessExecutor()
    choices = successive_halving(context, executor, specs, set())
    chosen = next(choices)
    rung_records = list(RungStore(tmp_path).records().values())
    by_rung = {k: [r for r in rung_records if r["rung"] == k] for k in range(3)}
    assert [len(by_rung[k]) for k in range(3)] == [10, 4, 2]  # 10 → ceil(10/3) → ceil(4/3)
    assert {r["budget"] for r in by_rung[1]} == {3} and {r["start_epoch"] for r in by_rung[2]} == {3}
    for record in rung_records:
        # continued, not restarted: the metric counts every epoch since pruning (a restart would count
        # budget - start_epoch), and the schedule took budget × 2 steps in all
        quality = 1 - sum(i for i in range(10) if i not in record["mask"]["conv1"]) / 10
        assert record["val_acc"] == pytest.approx(quality * record["budget"] / EPOCHS)
        assert record["retrain_steps"] == 2 * (record["budget"] - record["start_epoch"])
        assert record["mask_violations"] == 0
    # the best 1/3 continue: rung 1's candidates are the 4 best of rung 0 (pruning filter 0, 1, 2 or 3)
    pruned = lambda r: (set(range(10)) - set(r["mask"]["conv1"])).pop()  # noqa: E731
    assert {pruned(r) for r in by_rung[1]} == {0, 1, 2, 3} and {pruned(r) for r in by_rung[2]} == {0, 1}
    # the choice prunes filter 0 (the known best), fully retrained, its schedule where 9 epochs leave it
    assert chosen.record.candidate["mask"]["conv1"] == list(range(1, 10))
    saved = load_checkpoint(tmp_path, chosen.spec, EPOCHS)
    assert saved["state"]["epoch"] == EPOCHS and saved["state"]["schedule"]["last_epoch"] == EPOCHS * 2
    assert float(saved["model"]["seen"]) == EPOCHS * TRAIN
    assert chosen.record.metrics["final_test_acc"] == pytest.approx(1.0)
    selection = chosen.record.facts["selection"]
    assert selection["epochs_spent"] == 10 * 1 + 4 * 2 + 2 * 6 and selection["exhaustive_epochs"] == 10 * EPOCHS
    assert [r["size"] for r in selection["rungs"]] == [10, 4, 2]
    # the test split is looked at once, after the choice; selection evaluated the validation split only
    calls = context.task.calls
    assert calls.count("test") == 1 and calls.index("test") > max(i for i, c in enumerate(calls) if c == "validation")
    assert calls.count("validation") == 10 + 4 + 2
    # checkpoints of candidates that stopped are gone; the choice's full one is kept until it is recorded,
    # which the driver does before it asks for the next choice
    left = sorted(p.name for p in tmp_path.glob("trials/*/selection/*.pt"))
    assert left == ["epoch9.pt"] and checkpoint_path(tmp_path, chosen.spec, EPOCHS).is_file()
    assert list(choices) == [] and not any(tmp_path.glob("trials/*/selection/*.pt"))


class Killed(Exception):
    pass


class KilledExecutor(InProcessExecutor):
    """Runs trials in this process, and dies when trial number ``after`` + 1 would start."""

    def __init__(self, after):
        super().__init__()
        self.left = after

    def run(self, context, specs):
        for finished in super().run(context, specs):
            yield finished
            self.left -= 1
            if self.left == 0:
                raise Killed


def test_a_study_killed_during_a_rung_resumes_there_with_the_same_choice(tmp_path):
    reference = _run(*_setup(tmp_path / "whole"))[0]
    context, specs = _setup(tmp_path / "killed")
    with pytest.raises(Killed), KilledExecutor(after=10 + 4 + 1) as executor:  # killed before the last rung trial
        list(successive_halving(context, executor, specs, set()))
    context.task.calls.clear()
    (again,) = _run(context, specs)
    assert context.task.calls.count("validation") == 1  # only the lost rung trial ran again
    strip = lambda record: {**record.to_json(), "timings": {}}  # noqa: E731
    assert strip(again.record) == strip(reference.record)
    assert _run(context, specs, finished={again.spec.trial_id}) == []  # a chosen setting is not selected again


def _row_hashes(images):
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in images}


def test_the_validation_split_is_seeded_held_out_from_train_and_disjoint_from_test():
    recipe = parse_recipe(tiny_recipe(data={"dataset": "mnist_sample", "validation_fraction": 0.1}))
    full = ImageClassificationTask.from_recipe(parse_recipe(tiny_recipe(data={"dataset": "mnist_sample"})))
    task = ImageClassificationTask.from_recipe(recipe)
    n = len(full.data.train)
    assert len(task.validation) == round(0.1 * n) and len(task.data.train) == n - len(task.validation)
    validation, train, test = (_row_hashes(s.images) for s in (task.validation, task.data.train, task.data.test))
    assert validation <= _row_hashes(full.data.train.images)
    assert not validation & train and not validation & test
    assert len(task.train_set) == len(task.data.train)  # training never sees the validation rows
    again = ImageClassificationTask.from_recipe(recipe)
    assert torch.equal(again.validation.images, task.validation.images)
    other = ImageClassificationTask.from_recipe(parse_recipe({**tiny_recipe(data={"dataset": "mnist_sample",
                                                                                  "validation_fraction": 0.1}),
                                                              "seed": 8}))
    assert not torch.equal(other.validation.labels, task.validation.labels) or \
        not torch.equal(other.validation.images, task.validation.images)
    with pytest.raises(HfpruneError, match="validation_fraction"):
        full.evaluate(None, "validation")


def test_selection_needs_a_validation_split_and_new_fields_leave_old_fingerprints_alone():
    with pytest.raises(HfpruneError, match="data.validation_fraction"):
        parse_recipe(tiny_recipe(pruning={"settings": [{"ratios": {"conv1": 0.5}}],
                                          "selection": {"method": "successive_halving"}}))
    with pytest.raises(HfpruneError, match="eta"):
        _recipe(eta=1)
    plain = parse_recipe(tiny_recipe())
    payload = plain.model_dump(mode="json", exclude={"kind", "name", "description", "report", "export", "execution"})
    del payload["data"]["validation_fraction"], payload["pruning"]["selection"]  # fields added after studies ran,
    del payload["data"]["text"], payload["retrain"]["lora"], payload["evaluation"]["final_train"]  # unset: None
    del payload["sweep"]
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    assert plain.fingerprint() == expected
    assert _recipe().fingerprint() != _recipe(eta=4).fingerprint()


def test_hfprune_run_with_selection_records_one_chosen_trial_per_setting_and_reports_it(tmp_path):
    """End to end through run_study on the bundled data: two settings, each choosing one of its masks."""
    from hfprune.study.registry import report_study
    from hfprune.study.runner import run_study

    recipe = parse_recipe(tiny_recipe(
        data={"dataset": "mnist_sample", "train_limit": 300, "test_limit": 100, "validation_fraction": 0.2},
        pretrain={"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}},
        pruning={"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random", "num": 4}},
                              {"ratios": {"conv2": 0.5}, "candidates": {"mode": "random", "num": 3}}],
                 "selection": {"method": "successive_halving", "eta": 2, "min_fraction": 0.5}},
        retrain={"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.02}}))
    result = run_study(recipe, tmp_path, progress=False)
    assert result.trials_total == 2 and len(result.records) == 2
    for record in result.records:
        assert record["selection"]["rungs"][-1]["budget"] == 2 and "final_test_acc" in record
        assert record["val_acc"] is not None and record["pruned_train_loss"] is not None
    rung_lines = (tmp_path / "selection.jsonl").read_text().splitlines()
    assert len(rung_lines) == (4 + 2) + (3 + 2)  # rungs of 1 and 2 epochs: ceil(4/2) and ceil(3/2) continue
    assert (tmp_path / "best" / "config.json").is_file()
    summary = report_study(tmp_path, plots=False)
    assert [row["setting"] for row in summary["halving"]] == sorted(r["setting"] for r in result.records)
    assert "## Successive halving" in (tmp_path / "report.md").read_text()
    assert run_study(recipe, tmp_path, progress=False).trials_run == 0  # a rerun selects nothing again


@pytest.mark.slow
def test_rung_trials_on_ray_give_the_records_of_an_in_process_run(tmp_path):
    """The rung trials go through the study's executor: on two Ray workers, the same rung records and choice."""
    pytest.importorskip("ray")
    import ray

    from hfprune.study.runner import run_study

    recipe = parse_recipe(tiny_recipe(
        data={"dataset": "mnist_sample", "train_limit": 200, "test_limit": 100, "validation_fraction": 0.2},
        pretrain={"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}},
        pruning={"settings": [{"ratios": {"conv1": 0.8}, "candidates": {"mode": "random", "num": 4}}],
                 "selection": {"method": "successive_halving", "eta": 2, "min_fraction": 0.5}},
        retrain={"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.02}},
        execution={"threads_per_trial": 1}))
    try:
        local = run_study(recipe, tmp_path / "local", progress=False).records
        fanned = run_study(recipe, tmp_path / "ray", progress=False, workers=2).records
    finally:
        ray.shutdown()
    strip = lambda path: {r["trial_id"]: {k: v for k, v in r.items() if k != "timings"}  # noqa: E731
                          for r in RungStore(path).records().values()}
    assert strip(tmp_path / "ray") == strip(tmp_path / "local") and len(strip(tmp_path / "local")) == 4 + 2
    assert [{k: v for k, v in r.items() if k != "timings"} for r in fanned] == \
        [{k: v for k, v in r.items() if k != "timings"} for r in local]
