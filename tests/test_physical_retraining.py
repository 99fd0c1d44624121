"""Retraining physically pruned models: the same as masked retraining with the pruned units held at zero
(SGD with momentum, weight decay and gradient clipping), in the trainer and in a whole study."""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from convnet_fixtures import tiny_model
from hfprune.study.oracle.recipe import RetrainSection
from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.structured.groups import parameter_masks
from hfprune.study.runner import run_study
from hfprune.train.trainer import train
from study_helpers import tiny_recipe

FAMILY = {"lenet": "lenet5_mini", "resnet_cifar": "resnet_cifar", "vgg_cifar": "vgg_cifar",
          "hf_resnet50": "hf_resnet"}
SECTION = RetrainSection(epochs=2, batch_size=16, grad_clip=1.0,
                         optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
                         schedule={"name": "multistep", "milestones": [1]})


def _model(kind):
    if kind == "lenet":
        adapter = get_adapter("lenet5_mini")
        torch.manual_seed(0)
        return adapter.build(adapter.config(5, 3, 32, {}))
    return tiny_model(kind)


def _data(n=48):
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(n, 3, 32, 32, generator=generator)
    labels = torch.randint(5, (n,), generator=generator)
    return [{"pixel_values": images[i], "labels": labels[i]} for i in range(n)]


@pytest.mark.parametrize("kind", list(FAMILY))
def test_physical_retraining_equals_masked_retraining(kind):
    dense, adapter = _model(kind).train(), get_adapter(FAMILY[kind])
    groups = adapter.groups(dense.config)
    names = list(groups)
    mask = {names[0]: tuple(range(0, groups[names[0]].size, 2)), names[-1]: tuple(range(1, groups[names[-1]].size, 2))}
    masked_model = copy.deepcopy(dense)
    masked = MaskedParameters(masked_model, parameter_masks(groups, mask, dict(masked_model.named_parameters())))
    masked.apply()
    physical = adapter.prune_physically(masked_model, mask)
    assert physical.training
    train(masked_model, _data(), SECTION, classification_loss, seed=3, masks=masked, progress=False)
    result = train(physical, _data(), SECTION, classification_loss, seed=3, progress=False)
    assert result.steps == 6 and masked.violations() == 0
    # the kept weights, BN statistics included, moved identically; the pruned ones stayed zero
    expected = adapter.prune_physically(masked_model, mask).state_dict()
    for name, tensor in physical.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=1e-5, msg=name)
    assert any(not torch.equal(tensor, adapter.prune_physically(dense, mask).state_dict()[name])
               for name, tensor in physical.state_dict().items()), "training moved the weights"
    x = torch.stack([item["pixel_values"] for item in _data(6)])
    torch.testing.assert_close(physical.eval()(x).logits, masked_model.eval()(x).logits, atol=1e-5, rtol=0)


def _study(tmp_path, physical):
    recipe = tiny_recipe(pretrain={**tiny_recipe()["pretrain"], "epochs": 1},
                         pruning={"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 2}}]},
                         retrain={**tiny_recipe()["retrain"], "physical": physical})
    return run_study(parse_recipe(recipe), tmp_path / str(physical), progress=False)


def test_a_study_retrains_physically_by_default_and_records_stay_comparable(tmp_path):
    physical, masked = _study(tmp_path, None), _study(tmp_path, False)
    assert [r["trial_id"] for r in physical.records] == [r["trial_id"] for r in masked.records]
    for a, b in zip(physical.records, masked.records):
        assert a["retrain_form"] == "physical" and b["retrain_form"] == "masked"
        assert a["retrain_params"] < b["retrain_params"]
        assert a["higher_is_better"] == b["higher_is_better"]  # the same metrics, in the same directions
        assert a["pruned_train_loss"] == b["pruned_train_loss"]
        for key in ("short_test_loss", "final_test_loss", "final_test_acc"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    for directory in (physical.directory, masked.directory):  # the export is the smaller model either way
        config = get_adapter("lenet5_mini").load_config(str(directory / "best"))
        assert config.conv_filters == [5, 10, 10]


def test_physical_retraining_is_refused_for_unstructured_pruning():
    recipe = yaml.safe_load((Path(__file__).resolve().parent.parent / "recipes" / "tinyllava_ump.yaml").read_text())
    parse_recipe(recipe)
    recipe["retrain"]["physical"] = True
    with pytest.raises(HfpruneError, match="retrain.physical applies to structured pruning"):
        parse_recipe(recipe)
