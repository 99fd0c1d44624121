"""Every shipped recipe's description agrees with the fields it names: MLP widths, phase-1 width ranges, nonzero
budgets, sparsities, sampled mask counts, retraining epochs, and the running time the README gives for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _settings(recipe: dict) -> list[dict]:
    return (recipe.get("pruning") or {}).get("settings") or []


def exhaustive_count(recipe: dict) -> int | None:
    """How many masks the recipe's one structured setting has in all (None for other recipes)."""
    from hfprune.models import get_adapter
    from hfprune.pruning.structured.groups import expand_kinds
    from hfprune.pruning.structured.samplers import candidates_for

    if len(_settings(recipe)) != 1:
        return None
    adapter = get_adapter(recipe["model"]["family"])
    groups = adapter.groups(adapter.config_class(**(recipe["model"].get("config") or {})))
    ratios = _settings(recipe)[0]["ratios"]
    return len(candidates_for(groups, expand_kinds(groups, ratios), "all", "exhaustive", 10**6, 0))


def claims(description: str, recipe: dict) -> list[tuple[str, object, object]]:
    """(claim, what the description says, what the fields hold) for every claim the description makes."""
    found = []
    sparse = recipe.get("sparse") or {}
    hidden = (recipe.get("model", {}).get("config") or {}).get("hidden_sizes")
    for width in re.findall(r"width-(\d+) MLP", description):
        found.append(("width-N MLP", int(width), int(width) if hidden and int(width) in hidden else hidden))
    for low, high in re.findall(r"widths (\d+)\.\.(\d+)", description):
        phase1 = (sparse.get("search") or {}).get("phase1") or {}
        found.append(("phase-1 widths", (int(low), int(high)), (phase1.get("low"), phase1.get("high"))))
    for limit in re.findall(r"up to (\d+) phase-2 supports per budget", description):
        phase2 = (sparse.get("search") or {}).get("phase2") or {}
        found.append(("phase-2 supports per budget", int(limit), phase2.get("per_budget_limit")))
    for low, high in re.findall(r"(\d+)-(\d+) nonzero weights", description):
        budgets = sparse.get("budgets") or []
        found.append(("nonzero budgets", (int(low), int(high)), (min(budgets), max(budgets)) if budgets else None))
    for sparsity in re.findall(r"(?:at )?sparsity (0\.\d+)", description):
        found.append(("sparsity", float(sparsity), (recipe.get("pruning") or {}).get("sparsity")))
    for count in re.findall(r"(\d[\d,]*) sampled(?: masks| combinations)?", description):
        nums = {setting.get("candidates", {}).get("num") for setting in _settings(recipe)
                if setting.get("candidates", {}).get("mode") == "random"}
        found.append(("sampled masks", _number(count), _number(count) if _number(count) in nums else nums))
    for count in re.findall(r"(?:all|every one of the) (\d[\d,]*) (?:masks|ways)", description):
        found.append(("every mask", _number(count), exhaustive_count(recipe)))
    for epochs in re.findall(r"retrained (\d+) epochs", description):
        found.append(("retraining epochs", int(epochs), (recipe.get("retrain") or {}).get("epochs")))
    return found


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_the_description_agrees_with_the_fields_it_names(path):
    recipe = yaml.safe_load(path.read_text())
    for claim, said, held in claims(" ".join(recipe["description"].split()), recipe):
        assert said == held, f"{path.name}: the description says {claim} {said}, the recipe holds {held}"


def test_the_rules_catch_a_stale_description():
    recipe = {"model": {"config": {"hidden_sizes": [12, 12, 12]}},
              "sparse": {"budgets": [40, 60], "search": {"phase1": {"low": 4, "high": 6}}}}
    stale = claims("phase 1 over widths 2..4 on a width-6 MLP at 15-26 nonzero weights", recipe)
    assert [said != held for _, said, held in stale] == [True, True, True]
    fresh = claims("phase 1 over widths 4..6 on a width-12 MLP at 40-60 nonzero weights", recipe)
    assert [said == held for _, said, held in fresh] == [True, True, True]


def test_the_readme_and_the_recipes_give_one_running_time():
    """The main command's time in the README is the quickstart recipe's; any other recipe the README gives a time
    for in minutes says the same in its description."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    main = readme[readme.index("## Two commands"):readme.index("<!-- main-command -->")]
    quickstart = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())["description"]
    assert re.findall(r"about (\d+) minutes", main) == re.findall(r"about (\d+) minutes", quickstart, re.IGNORECASE) != []
    for path in RECIPES:
        said = re.search(r"about (\d+) minutes", yaml.safe_load(path.read_text())["description"], re.IGNORECASE)
        for line in re.findall(rf"`{path.stem}`[^.]*?about (\d+) minutes", readme):
            assert said is not None and line == said.group(1), f"{path.stem}: README says {line} minutes"
