"""Hostile recipes: every field's range, model.config against the family, YAML limits, and a seeded fuzz.

Each malformed recipe must end in one HfpruneError line (never another exception, never a hang); a valid
one must still validate.
"""

import copy
import random

import pytest
import torch
import yaml

from hfprune.cli import _resolve_recipe
from hfprune.train.sections import TrainingSection
from hfprune.study.registry import load_recipe, parse_recipe
from hfprune.data import TensorImageSet
from hfprune.errors import HfpruneError
from hfprune.evaluation.classification import classification_loss
from hfprune.models import get_adapter
from hfprune.models.overrides import check_buildable
from hfprune.train.trainer import train
from study_helpers import tiny_recipe


def _refused(recipe: dict) -> str:
    with pytest.raises(HfpruneError) as caught:
        parse_recipe(recipe)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(seed=-1), "seed"),
    (lambda r: r["retrain"]["optimizer"].update(lr=1e308), "retrain.optimizer.lr"),
    (lambda r: r["retrain"]["optimizer"].update(lr=float("inf")), "finite"),
    (lambda r: r["retrain"]["optimizer"].update(weight_decay=float("inf")), "weight_decay"),
    (lambda r: r["retrain"]["optimizer"].update(betas=[2, 3]), "betas"),
    (lambda r: r["retrain"]["optimizer"].update(betas=[float("nan"), 0.9]), "betas"),
    (lambda r: r["retrain"]["schedule"].update(warmup_epochs=float("inf")), "warmup_epochs"),
    (lambda r: r["retrain"].update(mixup=float("inf")), "mixup"),
    (lambda r: r["data"].update(image_size=100000), "data.image_size"),
    (lambda r: r["model"].update(config={"conv_filters": [0, 0, 0]}), "conv_filters"),
    (lambda r: r["model"].update(config={"conv_filters": [-1, 10, 10]}), "conv_filters"),
    (lambda r: r["model"].update(config={"num_labels": 0}), "num_labels"),
    (lambda r: r["model"].update(config={"hidden_sizes": "abc"}), "hidden_sizes"),
    (lambda r: r["model"].update(config={"widht": 3}), "unknown key 'widht' in model.config"),
])
def test_out_of_range_fields_are_one_line(change, expected):
    recipe = tiny_recipe()
    change(recipe)
    assert expected in _refused(recipe)


def test_valid_model_overrides_still_validate():
    recipe = tiny_recipe(model={"family": "lenet5_mini", "config": {"conv_filters": [20, 10, 10],
                                                                     "hidden_sizes": [10, 10]}})
    assert parse_recipe(recipe).model.config["conv_filters"] == [20, 10, 10]


@pytest.mark.parametrize("overrides, size", [({"kernel_size": 100}, 32), ({"kernel_size": 7}, 40), ({}, 16)])
def test_a_model_that_cannot_be_built_fails_on_the_meta_device(overrides, size):
    adapter = get_adapter("lenet5_mini")
    with pytest.raises(HfpruneError, match="model.config"):
        check_buildable(adapter.model_class, adapter.config(10, 1, size, overrides))
    check_buildable(adapter.model_class, adapter.config(10, 1, 46, {"kernel_size": 7}))  # the smallest that fits


def test_freezing_every_parameter_is_one_line():
    adapter = get_adapter("lenet5_mini")
    model = adapter.build(adapter.config(10, 1, 32, {}))
    data = TensorImageSet(torch.zeros(8, 1, 32, 32), torch.zeros(8, dtype=torch.long))
    section = TrainingSection(epochs=1, batch_size=4, optimizer={"lr": 0.1}, freeze=[".*"])
    with pytest.raises(HfpruneError, match="retrain: freeze"):
        train(model, data, section, classification_loss, seed=0, progress=False, description="retrain")
    assert all(param.requires_grad for param in model.parameters())


def _laughs(levels=9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(levels):
        text += f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
    return text


@pytest.mark.parametrize("content, expected", [
    (_laughs().encode(), "aliases expand"),
    (b"name: &a [*a]\n", "recursive"),
    (b"a: &x\n  b: *x\n", "recursive"),
    (("a: " + "[" * 3000 + "]" * 3000 + "\n").encode(), "nests deeper"),
    ("name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("name: x\n".encode("utf-16"), "not UTF-8"),
    (b"#" * (2 << 20), "bytes"),
    (b"name: [unclosed\n", "not valid YAML"),
])
def test_yaml_limits_refuse_hostile_files_before_building_them(tmp_path, monkeypatch, content, expected):
    """Refused from the bytes or the parser's events alone: the document is never built (a billion laughs built
    and walked would take hours), whatever the machine's speed."""
    built = []
    monkeypatch.setattr(yaml, "safe_load", lambda *args, **kwargs: built.append(args) or {})
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(HfpruneError, match=expected) as caught:
        load_recipe(path)
    assert not built and "\n" not in str(caught.value)


def test_a_few_aliases_are_fine(tmp_path):
    recipe = tiny_recipe()
    text = yaml.safe_dump(recipe).replace("optimizer:\n", "optimizer: &opt\n", 1)
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    assert load_recipe(path).name == "tiny"


def test_a_path_that_does_not_exist_never_runs_a_shipped_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HfpruneError, match="does not exist"):
        _resolve_recipe(str(tmp_path / "nowhere" / "quickstart.yaml"))
    (tmp_path / "quickstart").mkdir()
    with pytest.raises(HfpruneError, match="is a directory"):
        _resolve_recipe("quickstart")
    (tmp_path / "quickstart").rmdir()
    assert _resolve_recipe("quickstart").name == "quickstart.yaml"  # a bare name is the shipped recipe


def test_onp_lambda_beyond_the_sparsity_is_refused():
    recipe = tiny_recipe(model={"family": "llava", "pretrained": "some/llava"},
                         data={"dataset": "llava_v1_5", "path": "x.json", "image_root": "img"},
                         pruning={"methods": [{"name": "onp", "lam": 0.5}], "sparsity": 0.4375})
    recipe.pop("pretrain")
    assert "lam 0.5" in _refused(recipe)


# -- fuzzing ------------------------------------------------------------------------------------------------------
HOSTILE = [-1, 0, 1, 2**70, -2**70, 1e308, float("inf"), float("-inf"), float("nan"), 0.5, "abc", "", None, True,
           [], {}, [0, 0, 0], [[[]]], {"a": {"b": 1}}, "1e3", "../../etc/passwd", "x" * 5000]


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, path + (key,))
    elif isinstance(tree, list) and tree:
        for index, value in enumerate(tree):
            yield from _leaves(value, path + (index,))
    yield path


def _set(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def test_fuzzed_recipes_validate_or_fail_with_one_line():
    rng = random.Random(1234)
    base = tiny_recipe()
    base["model"]["config"] = {"conv_filters": [10, 10, 10]}
    paths = [path for path in _leaves(base) if path]
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(400):
        recipe = copy.deepcopy(base)
        for path in rng.sample(paths, rng.randint(1, 3)):
            try:
                _set(recipe, path, rng.choice(HOSTILE))
            except (TypeError, KeyError, IndexError):  # an earlier change replaced a parent
                pass
        try:
            parse_recipe(recipe)
            outcomes["accepted"] += 1
        except HfpruneError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300, outcomes


def test_fuzzed_yaml_bytes_load_or_fail_with_one_line(tmp_path):
    rng = random.Random(99)
    text = bytearray(yaml.safe_dump(tiny_recipe()).encode())
    specials = b"&*[]{}:-!|>'\"#%@`\t\n\x00\xff\xfe"
    path = tmp_path / "fuzz.yaml"
    for _ in range(300):
        mutated = bytearray(text)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(mutated))
            mutated[position:position + 1] = bytes([rng.choice(specials)]) * rng.randint(1, 3)
        path.write_bytes(bytes(mutated))
        try:
            load_recipe(path)
        except HfpruneError as error:
            assert "\n" not in str(error)


def test_prune_structure_that_prunes_nothing_or_everything_is_refused(tmp_path):
    from hfprune.oneshot.structured import prune_checkpoint

    adapter = get_adapter("lenet5_mini")
    adapter.build(adapter.config(10, 1, 32, {})).save_pretrained(tmp_path / "dense")
    for structure, expected in (("conv1=0", "prunes nothing"), ("conv1=0.01", "removes nothing"),
                                ("conv1=0.99", "removes every unit"), ("conv1=1", "removes every unit")):
        with pytest.raises(HfpruneError, match=expected):
            prune_checkpoint(str(tmp_path / "dense"), structure, "l1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../../escaped_study", "/tmp/absolute_study", "a/b", "..", "~study", "x\\y"])
def test_a_recipe_name_that_is_a_path_is_refused_and_nothing_is_written(tmp_path, monkeypatch, name):
    """Without --out a study goes to runs/<name>: a name that is a path would write outside runs/."""
    from typer.testing import CliRunner

    from hfprune.cli import app

    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(name=name)))
    result = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert isinstance(result.exception, HfpruneError) and "not a plain name" in str(result.exception)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "recipe.yaml", "work"]
