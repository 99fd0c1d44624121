"""A study's directory: claimed by one recipe, its manifest (``study.json``), the environment it started on.

Every study kind writes the same files here: ``recipe.yaml`` (the recipe as run), ``study.json`` (its kind,
fingerprint, planned trials, environment and the kind's own facts), ``trials.jsonl`` (the records, see
:mod:`hfprune.records.store`) and ``trials/<trial>/`` (what a trial keeps on its way).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from hfprune import __version__
from hfprune.errors import HfpruneError
from hfprune.io import read_json, write_json_atomically
from hfprune.study.environment import differences

MANIFEST, RECIPE_FILE = "study.json", "recipe.yaml"
RETRAINED = "retrained"  # in a trial's directory: its retrained model and record, until the trial is recorded


def read_manifest(directory: Path) -> dict[str, Any]:
    """The study's ``study.json`` ({} before the study starts); a corrupt one is one HfpruneError line (it is
    never rewritten: deleting it is safe, the records carry their recipe's fingerprint)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = read_json(path, "study manifest")
    except HfpruneError as error:
        raise HfpruneError(f"{error}; delete it to start the manifest again (recorded trials are kept: "
                           "each names its recipe)") from None
    if not isinstance(manifest, dict):
        raise HfpruneError(f"study manifest {path} is a JSON {type(manifest).__name__}, not an object; delete it "
                           "to start the manifest again (recorded trials are kept: each names its recipe)")
    return manifest


def write_manifest(directory: Path, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into ``study.json`` (written atomically)."""
    current = read_manifest(directory)
    current.update(updates)
    write_json_atomically(Path(directory) / MANIFEST, current)


def claim_directory(recipe, directory: Path) -> None:
    """Make ``directory`` the study of ``recipe``: refuse one that holds another recipe's study, write the recipe
    as run (again, where it was deleted) and the manifest."""
    if directory.exists() and not directory.is_dir():
        raise HfpruneError(f"the study directory '{directory}' is an existing file; choose another --out")
    manifest = read_manifest(directory)
    if manifest:
        recorded = manifest.get("fingerprint")
        if recorded != recipe.fingerprint():
            raise HfpruneError(
                f"'{directory}' holds a study of a different recipe (fingerprint {recorded}, this recipe "
                f"{recipe.fingerprint()}); choose another --out or delete that directory"
            )
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / RECIPE_FILE).is_file():
        (directory / RECIPE_FILE).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    if not manifest:
        write_manifest(directory, {"name": recipe.name, "kind": recipe.kind, "fingerprint": recipe.fingerprint(),
                                   "hfprune_version": __version__})


def recipe_as_run(directory: Path) -> dict[str, Any]:
    """The study's ``recipe.yaml`` as plain data ({} where it is missing or unreadable)."""
    path = Path(directory) / RECIPE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    return data if isinstance(data, dict) else {}


def record_environment(directory: Path, environment: dict) -> None:
    """The environment the study started on goes into study.json; a later one that differs says how, once."""
    recorded = read_manifest(directory).get("environment")
    if recorded is None:
        write_manifest(directory, {"environment": environment})
        return
    changed = differences(recorded, environment)
    if changed:
        print(f"warning: this run's environment differs from the one that started the study ({'; '.join(changed)}); "
              "trials recorded now may differ in the last digits from those recorded before", file=sys.stderr)


def trial_directory(directory: Path, trial_id: str) -> Path:
    """Where one trial keeps what it writes on its way (answers, its retrained model until it is recorded)."""
    return Path(directory) / "trials" / trial_id.replace(":", "_")
