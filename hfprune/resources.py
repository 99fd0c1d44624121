"""The recipes and benchmark specs that ship with hfprune.

They live at the repository's top level (``recipes/``, ``eval/``), where users browse them, and install as the
packages ``hfprune.recipes`` and ``hfprune.benchmark_specs`` (see setup.py), so a wheel carries them too. Both
are read through :mod:`importlib.resources`, never relative to the source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RECIPES = "hfprune.recipes"
BENCHMARK_SPECS = "hfprune.benchmark_specs"


def shipped_dir(package: str) -> Path:
    """The folder of a package of shipped YAML documents (an installed wheel's, or the checkout's)."""
    folder = resources.files(package)
    if not isinstance(folder, Path):  # e.g. a zipped install: nothing here reads YAML out of an archive
        raise RuntimeError(f"{package} is not installed as plain files ({folder!r}); reinstall hfprune with pip")
    return folder


def shipped(package: str) -> dict[str, Path]:
    """``{name: path}`` of the YAML documents in ``package``, sorted by name."""
    return {path.stem: path for path in sorted(shipped_dir(package).glob("*.yaml"))}


def shipped_recipes() -> dict[str, Path]:
    """The shipped study recipes by name (``quickstart``, ``lenet5_mnist``, ...)."""
    return shipped(RECIPES)


def shipped_benchmark_specs() -> dict[str, Path]:
    """The shipped benchmark specs by name (``gqa``, ``pope``, ...)."""
    return shipped(BENCHMARK_SPECS)
