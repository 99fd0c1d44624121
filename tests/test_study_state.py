"""Broken study state: foreign or duplicate records, corrupt manifest and caches, a full or read-only disk.

Every case stops with one line or heals a cache; no recorded trial is ever lost or rewritten.
"""

import errno
import json
import shutil
import sys

import pytest

from hfprune import cli
from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.records import store as store_module
from hfprune.study.runner import run_study
from hfprune.records.store import FINGERPRINT, read_trials
from study_helpers import tiny_recipe, write_recipe


def _recipe(**changes) -> dict:
    recipe = tiny_recipe(data={"dataset": "mnist_sample", "train_limit": 128, "test_limit": 64}, **changes)
    recipe["pretrain"].update(epochs=1)
    recipe["retrain"].update(epochs=1, short_fraction=None, schedule={"name": "constant"})
    recipe["pruning"] = {"settings": [{"ratios": {"conv1": 0.5}, "candidates": {"mode": "random", "num": 3}}]}
    return recipe


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("state") / "study"
    run_study(parse_recipe(_recipe()), directory, progress=False)
    return directory


@pytest.fixture
def study(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    return copy


def _resume(directory, **changes):
    return run_study(parse_recipe(_recipe(**changes)), directory, progress=False)


def test_every_record_names_its_recipe(study):
    fingerprint = parse_recipe(_recipe()).fingerprint()
    assert {record[FINGERPRINT] for record in read_trials(study)} == {fingerprint}


def test_records_of_another_recipe_are_refused_even_without_the_manifest(study):
    (study / "study.json").unlink()
    with pytest.raises(HfpruneError, match=r"trials.jsonl, line 1: a record of another recipe"):
        _resume(study, seed=8)
    assert len(read_trials(study)) == 3


@pytest.mark.parametrize("edit, expected", [
    (lambda record: {**record, FINGERPRINT: "0123456789abcdef"}, "line 4: a record of another recipe"),
    (lambda record: record, "line 4: a second record of trial"),
])
def test_foreign_or_duplicate_lines_are_refused_with_their_line(study, edit, expected):
    trials = study / "trials.jsonl"
    first = json.loads(trials.read_text().splitlines()[0])
    with open(trials, "a") as handle:
        handle.write(json.dumps(edit(first)) + "\n")
    before = trials.read_bytes()
    with pytest.raises(HfpruneError, match=expected):
        _resume(study)
    assert trials.read_bytes() == before  # a record file is never rewritten


def test_a_line_of_bytes_that_are_not_utf8_is_skipped_like_a_torn_line(study):
    trials = study / "trials.jsonl"
    lines = trials.read_bytes().splitlines(keepends=True)
    trials.write_bytes(lines[0] + b'{"trial_id": "\xff\xfe broken"}\n' + b"".join(lines[2:]))  # line 2 corrupted
    result = _resume(study)
    assert result.trials_run == 1 and len(result.records) == 3  # only the corrupted trial runs again
    assert trials.read_bytes().startswith(lines[0] + b'{"trial_id": "\xff\xfe broken"}\n')


@pytest.mark.parametrize("content", [b'{"name": "tiny", "finger', b"[1, 2]", b"\xff\xfe{}"])
def test_a_corrupt_manifest_is_one_line_and_is_never_rewritten(study, content):
    (study / "study.json").write_bytes(content)
    before = (study / "trials.jsonl").read_bytes()
    with pytest.raises(HfpruneError, match="study manifest .*study.json.*delete it") as caught:
        _resume(study)
    assert "\n" not in str(caught.value)
    assert (study / "study.json").read_bytes() == content and (study / "trials.jsonl").read_bytes() == before


def test_a_truncated_dense_cache_is_made_again_identically(study, capsys):
    weights = study / "dense" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:100])
    result = _resume(study)
    assert result.trials_run == 0
    assert "cached dense model" in capsys.readouterr().err
    assert weights.read_bytes() == original  # pretraining is deterministic: the same model again


def test_a_corrupt_best_json_is_rebuilt_from_the_records(study, capsys):
    original = json.loads((study / "best.json").read_text())
    (study / "best.json").write_text('{"trial_id": "x", "met')
    (study / "trials.jsonl").write_text("\n".join((study / "trials.jsonl").read_text().splitlines()[:2]) + "\n")
    _resume(study)  # the third trial reruns and is compared with the rebuilt best
    assert "best.json" in capsys.readouterr().err
    assert json.loads((study / "best.json").read_text()) == original


def _main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["hfprune", *map(str, args)])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    return caught.value.code, capsys.readouterr().err


def test_out_an_existing_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "taken").write_text("mine")
    code, err = _main(monkeypatch, capsys, "run", write_recipe(tmp_path), "--out", tmp_path / "taken")
    assert code == 2 and "is an existing file" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("number, expected", [(errno.ENOSPC, "no space left"), (errno.EROFS, "Read-only")])
def test_a_full_or_read_only_disk_stops_with_one_line_and_keeps_the_records(reference, tmp_path, monkeypatch,
                                                                          capsys, number, expected):
    study = tmp_path / "study"
    shutil.copytree(reference, study)
    trials = study / "trials.jsonl"
    trials.write_text("\n".join(trials.read_text().splitlines()[:1]) + "\n")  # two trials still to run
    recorded = trials.read_bytes()
    real_fsync = store_module.os.fsync

    def failing_fsync(descriptor):
        raise OSError(number, "No space left on device" if number == errno.ENOSPC else "Read-only file system")

    monkeypatch.setattr(store_module.os, "fsync", failing_fsync)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(_recipe()))
    code, err = _main(monkeypatch, capsys, "run", path, "--out", study, "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and expected in lines[-1] and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    assert trials.read_bytes().startswith(recorded)  # what was recorded is intact
    monkeypatch.setattr(store_module.os, "fsync", real_fsync)
    result = _resume(study)
    assert len(result.records) == 3 and len({r["trial_id"] for r in result.records}) == 3
