"""The shipped TinyLLaVA recipes, pointed at a tiny random LLaVA and fixtures in the real schemas."""

from pathlib import Path

import yaml

from benchmark_fixtures import write_fixture
from llava_fixtures import write_llava_fixture
from hfprune.models.llava.tiny import build_tiny_llava

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def llava_setup(root: Path) -> dict[str, Path]:
    """A tiny TinyLLaVA checkpoint, a LLaVA-1.5-format dataset and a POPE fixture under ``root``."""
    json_path, image_root = write_llava_fixture(root / "llava", n=12)
    benchmarks = root / "benchmarks"
    benchmarks.mkdir(parents=True)
    write_fixture("pope", root).rename(benchmarks / "pope")
    return {"model": build_tiny_llava(root / "dense", num_layers=2), "json": json_path, "images": image_root,
            "benchmarks": benchmarks}


def tiny_llava_recipe(name: str, setup: dict[str, Path], **sections) -> dict:
    """Shipped recipe ``name`` at toy size: one short epoch on CPU, six POPE questions, short answers."""
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    recipe["model"].update(pretrained=str(setup["model"]))
    recipe["data"].update(path=str(setup["json"]), image_root=str(setup["images"]), max_length=256, test_limit=2)
    recipe["retrain"].update(epochs=1, batch_size=4, mixed_precision="no", gradient_checkpointing=False,
                             optimizer={"name": "adamw", "lr": 1e-3, "weight_decay": 0.01})
    recipe["evaluation"].update(batch_size=4, loss_samples=6, benchmarks=["pope"],
                                benchmark_data_dir=str(setup["benchmarks"]), benchmark_limit=6, max_new_tokens=3)
    for section, values in sections.items():
        recipe[section].update(values)
    return recipe


def write_llava_recipe(directory: Path, name: str, setup: dict[str, Path], **sections) -> Path:
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_llava_recipe(name, setup, **sections)))
    return path
