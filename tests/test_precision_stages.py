"""Mixed precision per stage: pretraining and retraining in one process may each use their own (CPU bf16 autocast)."""

import torch

from hfprune.train.sections import TrainingSection
from hfprune.study.registry import parse_recipe
from hfprune.data import TensorImageSet
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.study.runner import run_study
from hfprune.train.trainer import get_accelerator, train
from study_helpers import tiny_recipe


def _data(n=64):
    generator = torch.Generator().manual_seed(0)
    return TensorImageSet(torch.randn(n, 1, 32, 32, generator=generator), torch.arange(n) % 10)


def _section(mixed_precision):
    return TrainingSection(epochs=1, batch_size=32, mixed_precision=mixed_precision,
                           optimizer={"name": "sgd", "lr": 0.01})


def _conv_dtypes(model):
    seen = set()
    model.conv1.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    return seen


def test_each_run_trains_in_its_own_precision_in_one_process():
    get_accelerator()  # the coordination Accelerator exists first, as in a study
    adapter = get_adapter("lenet5_mini")
    for precision, expected in (("bf16", torch.bfloat16), ("no", torch.float32), ("bf16", torch.bfloat16)):
        model = adapter.build(adapter.config(10, 1, 32, {}))
        seen = _conv_dtypes(model)
        train(model, _data(), _section(precision), classification_loss, seed=0, progress=False)
        assert seen == {expected}, (precision, seen)
        assert model.conv1.weight.dtype == torch.float32  # autocast: the weights stay fp32


def _bf16_recipe(pretrain: str, retrain: str) -> dict:
    recipe = tiny_recipe(data={"dataset": "mnist_sample", "train_limit": 128, "test_limit": 64})
    recipe["pretrain"].update(epochs=1, mixed_precision=pretrain)
    recipe["retrain"].update(epochs=1, mixed_precision=retrain, short_fraction=None, schedule={"name": "constant"})
    recipe["pruning"] = {"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 2}}]}
    return recipe


def test_a_study_pretrains_and_retrains_in_bf16(tmp_path):
    for pretrain, retrain in (("bf16", "bf16"), ("no", "bf16"), ("bf16", "no")):
        out = tmp_path / f"{pretrain}-{retrain}"
        result = run_study(parse_recipe(_bf16_recipe(pretrain, retrain)), out, progress=False)
        assert result.trials_run == 2 and len(result.records) == 2
        assert all(record["final_test_acc"] is not None for record in result.records)
