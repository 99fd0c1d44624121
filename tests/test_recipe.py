"""Recipes: shipped ones validate; bad input gets one clear line naming the field."""

from pathlib import Path

import pytest
import yaml

from hfprune.errors import HfpruneError
from hfprune.study.registry import load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def _quickstart() -> dict:
    return yaml.safe_load((Path(__file__).parent.parent / "recipes" / "quickstart.yaml").read_text())


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.name and recipe.description


def _error(data) -> str:
    with pytest.raises(HfpruneError) as caught:
        parse_recipe(data, source="r.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_the_key_and_the_allowed_ones():
    data = _quickstart()
    data["retrain"]["epocs"] = 3
    message = _error(data)
    assert "unknown key 'epocs' in retrain" in message and "epochs" in message and "batch_size" in message


def test_unknown_top_level_key():
    data = _quickstart()
    data["prunning"] = {}
    assert "unknown key 'prunning' in the top level" in _error(data)


def test_wrong_type_names_the_field():
    data = _quickstart()
    data["retrain"]["epochs"] = "many"
    message = _error(data)
    assert message.startswith("invalid recipe r.yaml: retrain.epochs:") and "'many'" in message


def test_ratio_out_of_range():
    data = _quickstart()
    data["pruning"]["settings"][0]["ratios"]["conv1"] = 1.5
    message = _error(data)
    assert "pruning.settings.0.ratios" in message and "must be in (0, 1), got 1.5" in message


def test_unknown_dataset_lists_the_known_ones():
    data = _quickstart()
    data["data"]["dataset"] = "imagenet-42"
    message = _error(data)
    assert "data.dataset: unknown dataset 'imagenet-42'" in message and "mnist_sample" in message


def test_unknown_optimizer_lists_the_allowed_values():
    data = _quickstart()
    data["retrain"]["optimizer"]["name"] = "lion"
    message = _error(data)
    assert "retrain.optimizer.name" in message and "'sgd', 'adam' or 'adamw'" in message


def test_missing_dense_source():
    data = _quickstart()
    del data["pretrain"]
    assert "model.pretrained" in _error(data)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    with pytest.raises(HfpruneError, match=r"not valid YAML at line \d+"):
        load_recipe(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(HfpruneError, match="not valid YAML"):
        load_recipe(path)


def test_fingerprint_ignores_name_but_not_settings():
    data = _quickstart()
    base = parse_recipe(data).fingerprint()
    assert parse_recipe({**data, "name": "other"}).fingerprint() == base
    data["retrain"]["epochs"] += 1
    assert parse_recipe(data).fingerprint() != base
