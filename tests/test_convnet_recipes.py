"""Every ConvNet and LeNet-variant recipe of the paper, shrunk to a tiny offline variant, runs end to end through
`hfprune run` on fixtures in the real Hub schemas (CIFAR, MNIST, ImageNet)."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cifar_fixtures import cifar10_copy, cifar100_copy
from convnet_fixtures import TINY_CONFIGS
from fixtures_data import make_mnist_like, write_save_to_disk
from hfprune.cli import app
from hfprune.resources import shipped_recipes

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONVNET = ["resnet56_cifar10", "vgg19_cifar100", "resnet18_imagenet", "resnet50_cifar100_criteria",
           "resnet50_cifar100_iterative"]
LENET = ["lenet5_width20", "lenet5_width30", "lenet5_width40", "lenet5_depth6", "lenet5_depth7", "lenet5_depth8",
         "lenet5_depth9"]
TINY_MODEL = {  # the recipes' architectures with few channels
    "resnet_cifar": {"depth": 8, "stage_widths": [4, 6, 8]},
    "vgg_cifar": {"depth": 19, "stage_widths": [4, 6, 8, 8, 6]},
    "hf_resnet": {k: v for k, v in TINY_CONFIGS["hf_resnet50"].items() if k != "num_labels"},
}


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


def _short(section: dict) -> dict:
    """One epoch, small batches, the schedule's milestones dropped."""
    section = {**section, "epochs": 1, "batch_size": 16}
    section.pop("short_fraction", None)
    schedule = dict(section.get("schedule") or {})
    schedule.pop("milestones", None), schedule.pop("gammas", None)
    section["schedule"] = {**schedule, "name": "constant"} if schedule else {"name": "constant"}
    return section


def shrink(recipe: dict, data_path: Path, pretrained: Path | None = None) -> dict:
    """The recipe as it is, but tiny: few images, channels, candidates and epochs."""
    recipe = json.loads(json.dumps(recipe))
    recipe["data"].update(path=str(data_path), train_limit=32, test_limit=16)
    if recipe["data"].get("num_workers"):
        recipe["data"]["num_workers"] = 2  # still decoded in workers, but few on a small machine
    family = recipe["model"]["family"]
    if pretrained is not None:
        recipe["model"]["pretrained"] = str(pretrained)
        recipe["data"]["image_size"] = 32
    elif family in TINY_MODEL:
        recipe["model"]["config"] = {**recipe["model"].get("config", {}), **TINY_MODEL[family]}
    if recipe.get("pretrain"):
        recipe["pretrain"] = _short(recipe["pretrain"])
    recipe["retrain"] = _short(recipe["retrain"])
    pruning = recipe["pruning"]
    pruning["repeats"] = 1
    pruning["calibration_samples"] = 16
    for setting in pruning["settings"]:
        setting["candidates"] = {"mode": "random", "num": 2}
        if setting.get("schedule"):
            setting["schedule"]["rounds"] = 2
            setting["schedule"]["retrain"] = _short(setting["schedule"]["retrain"])
    if pruning.get("schedule"):
        pruning["schedule"]["rounds"] = 2
        pruning["schedule"]["retrain"] = _short(pruning["schedule"]["retrain"])
    for point in (recipe.get("sweep") or {}).get("points", []):
        point["schedule"] = "constant"  # one short epoch: the points' milestones dropped, their lr kept
    recipe["evaluation"] = {"batch_size": 64}
    recipe["report"] = {"plots": False}
    return recipe


def run_tiny(tmp_path: Path, name: str, data_path: Path, pretrained: Path | None = None) -> tuple[Path, list[dict]]:
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    path = tmp_path / f"{name}_tiny.yaml"
    path.write_text(yaml.safe_dump(shrink(recipe, data_path, pretrained)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return out, records


def test_the_recipes_are_shipped():
    assert set(CONVNET + LENET) <= set(shipped_recipes())


@pytest.mark.parametrize("name", ["resnet56_cifar10", "vgg19_cifar100", "resnet50_cifar100_criteria"])
def test_cifar_recipe_runs_end_to_end(tmp_path, name):
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    assert recipe["data"]["augment"] == ["pad_crop", "hflip"]  # the standard CIFAR augmentation is on
    copy = (cifar10_copy if recipe["data"]["dataset"] == "cifar10" else cifar100_copy)(tmp_path, 40, 20)
    out, records = run_tiny(tmp_path, name, copy)
    assert len(records) == 2
    for record in records:
        assert record["mask_violations"] == 0
        assert record["pruned_taylor_fo"] > 0 and record["pruned_l1"] > 0
    report = json.loads((out / "report.json").read_text())
    assert ("pruned_taylor_fo", "final_test_loss") in [(p["x"], p["y"]) for p in report["pairs"]]
    assert (out / "best" / "config.json").is_file()


def test_resnet50_iterative_recipe_runs_both_round_schedules(tmp_path):
    out, records = run_tiny(tmp_path, "resnet50_cifar100_iterative", cifar100_copy(tmp_path, 40, 20))
    assert sorted(record["sweep_point"] for record in records) == ["LR1", "LR1", "LR2", "LR2"]
    assert {record["sweep_lr"] for record in records} == {1e-3, 0.1}
    for record in records:
        assert record["pruned_train_loss_round2"] == record["pruned_train_loss"]
        assert record["pruned_train_loss_round1"] > 0
    assert "Table A3" in (out / "report.md").read_text()


def test_resnet18_imagenet_recipe_runs_from_a_pretrained_hf_resnet(tmp_path):
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification
    from vit_fixtures import make_imagenet_like

    torch.manual_seed(0)
    config = {k: v for k, v in TINY_CONFIGS["hf_resnet18"].items() if k != "num_labels"}
    pretrained = tmp_path / "resnet18"
    ResNetForImageClassification(ResNetConfig(num_labels=1000, **config)).save_pretrained(pretrained)
    out, records = run_tiny(tmp_path, "resnet18_imagenet", make_imagenet_like(tmp_path), pretrained)
    assert len(records) == 2 and all(record["mask_violations"] == 0 for record in records)
    # the connectivity of a physically pruned HF ResNet at the data's image size (its config gives none): at 32 px
    # the last stage is 1x1, where a 3x3 kernel's outer taps only ever meet zero padding and count as disconnected
    assert all(0 < record["effective_nonzeros"] < record["nonzeros"] for record in records)
    saved = json.loads((out / "best" / "config.json").read_text())
    assert [[w[0] * 2 for w in stage] for stage in saved["block_widths"]] == [[4, 4], [6], [8], [10]]


@pytest.mark.parametrize("name", ["lenet5_width40", "lenet5_depth9"])
def test_lenet_variant_recipe_runs_end_to_end(tmp_path, name):
    dataset_dict, _ = make_mnist_like(60, 20)
    out, records = run_tiny(tmp_path, name, write_save_to_disk(tmp_path, dataset_dict))
    saved = json.loads((out / "best" / "config.json").read_text())
    if name == "lenet5_width40":
        assert saved["conv_filters"] == [20, 10, 10]  # 40 conv1 filters pruned at 0.5
    else:
        assert saved["hidden_sizes"] == [10] * 5  # 3 convs + 5 hidden Linear + classifier = 9 layers
    assert len(records) == 2 and all("pruned_taylor_fo" in record for record in records)


@pytest.mark.parametrize("name", LENET)
def test_lenet_variants_have_the_papers_widths_depths_and_schedules(name):
    from hfprune.study.registry import load_recipe

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    config = recipe.model.config
    if "width" in name:
        assert config["conv_filters"] == [int(name[-2:]), 10, 10]
        assert recipe.pruning.settings[0].candidates.num == 1000
    else:
        assert 3 + len(config["hidden_sizes"]) + 1 == int(name[-1])
    assert recipe.pruning.settings[0].ratios == {"conv1": 0.5} and recipe.pruning.repeats == 3
    assert (recipe.pretrain.optimizer.lr, recipe.pretrain.schedule.milestones) == (1e-2, [20])
    assert (recipe.retrain.optimizer.lr, recipe.retrain.epochs, recipe.retrain.batch_size) == (1e-3, 30, 256)
