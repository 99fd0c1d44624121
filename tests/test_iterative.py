"""The iterative pipeline (App. B.2): nested rounds that end at the candidate mask, one pruned loss per round."""

import math

import pytest
import torch

from hfprune.train.sections import ScheduleSection
from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.models.lenet.modeling_lenet import LeNet5MiniConfig
from hfprune.study.oracle.iterative import round_masks
from hfprune.study.runner import run_study
from hfprune.study.registry import report_study
from hfprune.train.optim import build_schedule
from study_helpers import tiny_recipe

GROUPS = get_adapter("lenet5_mini").groups(LeNet5MiniConfig(conv_filters=[20, 10, 10]))


def test_rounds_are_nested_equal_shares_ending_at_the_candidate():
    mask = {"conv1": tuple(range(0, 20, 2)), "conv2": (0, 1, 2, 3, 4)}  # 10 and 5 units removed
    rounds = round_masks(GROUPS, mask, 5, seed=3)
    assert rounds[-1] == mask
    for k, kept in enumerate(rounds, start=1):
        assert len(kept["conv1"]) == 20 - round(10 * k / 5) and len(kept["conv2"]) == 10 - round(5 * k / 5)
        assert set(mask["conv1"]) <= set(kept["conv1"])  # the candidate's kept units are never removed
    for earlier, later in zip(rounds, rounds[1:]):
        assert set(later["conv1"]) < set(earlier["conv1"]) and set(later["conv2"]) <= set(earlier["conv2"])
    assert round_masks(GROUPS, mask, 5, seed=3) == rounds and round_masks(GROUPS, mask, 5, seed=4) != rounds


def test_lr2_round_schedule_multiplies_per_milestone_gammas():
    section = ScheduleSection(name="multistep", milestones=[5, 10], gammas=[0.01, 0.1])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = build_schedule(optimizer, section, steps_per_epoch=2, epochs=15)
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(1e-3) and lrs[20] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="one positive factor per milestone"):
        ScheduleSection(name="multistep", milestones=[5, 10], gammas=[0.1])


def iterative_recipe(**pruning) -> dict:
    recipe = tiny_recipe(data={"dataset": "mnist_sample", "train_limit": 200, "test_limit": 100})
    recipe["pretrain"]["epochs"] = 2
    round_retrain = {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.01, "momentum": 0.9}}
    recipe["pruning"] = {"schedule": {"rounds": 3, "retrain": round_retrain},
                         "settings": [{"ratios": {"conv1": 0.6, "conv2": 0.5}, "candidates": {"num": 3}}], **pruning}
    recipe["retrain"] = {"epochs": 1, "batch_size": 64, "optimizer": {"lr": 0.01, "momentum": 0.9}}
    recipe["export"] = {"checkpoints": "all"}
    return recipe


def test_iterative_study_reaches_the_total_sparsity_with_one_pruned_loss_per_round(tmp_path):
    result = run_study(parse_recipe(iterative_recipe()), tmp_path / "study", progress=False)
    assert len(result.records) == 3
    for record in result.records:
        losses = [record[f"pruned_train_loss_round{k}"] for k in (1, 2, 3)]
        assert all(math.isfinite(loss) for loss in losses) and "pruned_train_loss_round4" not in record
        assert losses[-1] == record["pruned_train_loss"]
        assert record["mask_violations"] == 0 and record["round1_mask_violations"] == 0
        assert record["higher_is_better"]["pruned_train_loss_round1"] is False
    # the exported (physically pruned) models have the asked widths: 60% of conv1 and 50% of conv2 removed
    from transformers import AutoConfig

    for folder in (tmp_path / "study" / "checkpoints").iterdir():
        assert AutoConfig.from_pretrained(folder, trust_remote_code=True).conv_filters == [4, 5, 10]
    summary = report_study(tmp_path / "study", plots=False)
    pairs = [(p["x"], p["y"]) for p in summary["pairs"]]
    assert ("pruned_train_loss_round1", "final_test_acc") in pairs and ("pruned_train_loss_round3",
                                                                        "final_test_loss") in pairs
    markdown = (tmp_path / "study" / "report.md").read_text()
    assert "Table A3" in markdown and "| conv1@0.6+conv2@0.5 | 2 |" in markdown


def test_earlier_rounds_leave_their_share_of_filters_pruned(tmp_path):
    """After round R-1 the model has exactly round(n (R-1)/R) zero filters per group, before the last round."""
    from hfprune.models.lenet.modeling_lenet import LeNet5MiniForImageClassification
    from hfprune.study.oracle.iterative import run_earlier_rounds
    from hfprune.records.record import TrialRecord
    from hfprune.study.tasks.image_classification import ImageClassificationTask
    from hfprune.data.registry import load_image_classification

    recipe = parse_recipe(iterative_recipe())
    task = ImageClassificationTask(load_image_classification("mnist_sample", train_limit=100, test_limit=10))
    torch.manual_seed(0)
    model = LeNet5MiniForImageClassification(LeNet5MiniConfig())
    groups = get_adapter("lenet5_mini").groups(model.config)
    mask = {"conv1": (0, 1, 2, 3), "conv2": (0, 1, 2, 3, 4)}
    record = TrialRecord("t", "s", "m", 0, 0)
    run_earlier_rounds(model, groups, mask, recipe.pruning.schedule, task, record, seed=1)
    zero_filters = lambda conv: int((conv.weight.flatten(1).abs().sum(1) == 0).sum())
    assert zero_filters(model.conv1) == round(6 * 2 / 3) and zero_filters(model.conv2) == round(5 * 2 / 3)
    assert sorted(record.metrics) == ["pruned_train_loss_round1", "pruned_train_loss_round2"]


def test_fewer_than_two_rounds_is_rejected():
    recipe = iterative_recipe()
    recipe["pruning"]["schedule"]["rounds"] = 1
    with pytest.raises(HfpruneError, match="rounds"):
        parse_recipe(recipe)


def test_short_proxy_scales_per_milestone_gammas_and_merges_coinciding_milestones():
    from hfprune.train.sections import TrainingSection

    section = TrainingSection(epochs=15, batch_size=8, optimizer={"lr": 0.1},
                              schedule={"name": "multistep", "milestones": [5, 10], "gammas": [0.01, 0.1]})
    short = section.scaled(0.1)  # 2 epochs; both milestones fall on epoch 1
    assert short.epochs == 2 and short.schedule.milestones == [1]
    assert short.schedule.gammas == [pytest.approx(1e-3)]
    assert section.scaled(0.5).schedule.milestones == [2, 5] and section.scaled(0.5).schedule.gammas == [0.01, 0.1]
