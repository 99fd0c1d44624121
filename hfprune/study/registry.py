"""The registered study kinds (one line each), and what dispatches on them: reading a recipe of any kind, and
writing a study directory's report.

A recipe names its kind with ``kind:`` or shows it by its own sections (an oracle study's ``pruning`` and
``retrain``, a sparse study's ``sparse`` and ``training``); a study directory's ``study.json`` records its kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from hfprune.config.schema import read_yaml, validate_document
from hfprune.errors import HfpruneError
from hfprune.study.directory import read_manifest
from hfprune.study.kind import StudyKind
from hfprune.study.oracle.kind import OracleKind
from hfprune.study.recipe import StudyRecipe
from hfprune.study.sparse.kind import SparseKind

KINDS: dict[str, type[StudyKind]] = {kind.name: kind for kind in (
    OracleKind,
    SparseKind,
)}
DEFAULT_KIND = OracleKind.name  # what a directory whose manifest names no kind holds (studies of earlier versions)


def _kind_of_document(data: dict, source: str) -> type[StudyKind]:
    """The kind a recipe document names (``kind:``), else the one whose own sections it has."""
    if "kind" in data:
        if data["kind"] not in KINDS:
            raise HfpruneError(f"invalid recipe {source}: kind: unknown study kind {data['kind']!r}; choose one of: "
                               f"{', '.join(KINDS)}")
        return KINDS[data["kind"]]
    present = [kind for kind in KINDS.values() if any(section in data for section in kind.sections)]
    if len(present) > 1:
        sections = "; ".join(f"{kind.name}: {', '.join(kind.sections)}" for kind in present)
        raise HfpruneError(f"invalid recipe {source}: it mixes the sections of several study kinds ({sections}); a "
                           "recipe describes one study: keep one kind's sections, or name it with kind:")
    if not present:
        sections = "; ".join(f"{kind.name}: {', '.join(kind.sections)}" for kind in KINDS.values())
        raise HfpruneError(f"invalid recipe {source}: no study sections; give those of one kind ({sections})")
    return present[0]


def parse_recipe(data: Any, source: str = "recipe") -> StudyRecipe:
    """Validate a recipe given as a dict, as the recipe of its study kind; raises HfpruneError with one line
    naming every problem."""
    if not isinstance(data, dict):
        raise HfpruneError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return validate_document(_kind_of_document(data, source).recipe_class, data, "recipe", source)


def load_recipe(path: str | Path) -> StudyRecipe:
    """Read a recipe YAML file (``yaml.safe_load``: nothing in a recipe is executed)."""
    path = Path(path)
    if not path.is_file():
        raise HfpruneError(f"recipe file '{path}' not found; `hfprune recipes` lists the shipped ones")
    return parse_recipe(read_yaml(path, "recipe"), source=str(path))


def kind_of(recipe: StudyRecipe) -> type[StudyKind]:
    """The registered kind of a parsed recipe."""
    return KINDS[recipe.kind]


def study_kind(directory: str | Path) -> type[StudyKind]:
    """The kind of the study in ``directory`` (its manifest's; oracle for studies that name none)."""
    name = read_manifest(Path(directory)).get("kind", DEFAULT_KIND)
    if name not in KINDS:
        raise HfpruneError(f"{Path(directory) / 'study.json'} names study kind {name!r}, which this hfprune does not "
                           f"know ({', '.join(KINDS)}); report it with the hfprune that ran it")
    return KINDS[name]


def report_study(directory: str | Path, plots: bool = True, **options) -> dict[str, Any]:
    """Write the report of the study in ``directory`` as its kind does; return it as JSON data. ``options`` go to
    the oracle report (e.g. ``directions``)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise HfpruneError(f"'{directory}' is not a study directory; for a table use --x and --y or --json")
    kind = study_kind(directory)
    return kind.report(directory, plots=plots, **options)


def print_study_summary(summary: dict[str, Any], directory: str | Path, console: Console | None = None) -> None:
    """Print the short view of a study's report, as its kind shows it."""
    study_kind(directory).print_summary(summary, console or Console())
