"""`hfprune report` and `hfprune prune` on hostile inputs: one line each, never a traceback or a hang."""

import json
import os
import sys

import pytest

from hfprune import cli
from hfprune.errors import HfpruneError
from hfprune.models import get_adapter
from hfprune.oneshot.structured import prune_checkpoint
from hfprune.report.tables import load_table

ROWS = [{"trial_id": t, "pruned_train_loss": loss, "final_test_acc": acc}
        for t, loss, acc in (("a", 1.0, 0.5), ("b", 2.0, 0.4), ("c", 3.0, 0.45))]


@pytest.mark.parametrize("name, content, expected", [
    ("latin.csv", "pruned_train_loss,final_test_acc,n\n1,2,caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("latin.jsonl", b'{"pruned_train_loss": 1, "n": "\xe9"}\n', "not UTF-8"),
    ("huge.csv", ("a,b\n1," + "x" * 200_000 + "\n").encode(), "field larger than field limit"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
    ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested deeper"),
])
def test_unreadable_tables_are_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(HfpruneError, match=expected) as caught:
        load_table(path)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_rather_than_read(tmp_path):
    os.mkfifo(tmp_path / "table.csv")  # opening it for reading would block forever
    with pytest.raises(HfpruneError, match="not a regular file"):
        load_table(tmp_path / "table.csv")


def test_trials_jsonl_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "trials.jsonl").mkdir()
    with pytest.raises(HfpruneError, match="trials.jsonl is not a regular file"):
        load_table(tmp_path)


def test_a_report_md_that_is_a_directory_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "trials.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    (tmp_path / "report.md").mkdir()
    monkeypatch.setattr(sys, "argv", ["hfprune", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and "report.md" in err and "Is a directory" in err
    assert len(err.splitlines()) == 1


@pytest.fixture
def checkpoint(tmp_path):
    adapter = get_adapter("lenet5_mini")
    adapter.build(adapter.config(10, 1, 32, {})).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300]), "deserializ"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 64), "deserializ"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "holds a JSON list"),
])
def test_prune_of_a_broken_checkpoint_is_one_line(checkpoint, tmp_path, break_it, expected):
    break_it(checkpoint)
    with pytest.raises(HfpruneError, match=expected) as caught:
        prune_checkpoint(str(checkpoint), "conv1=0.5", "l1", tmp_path / "out")
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_prune_seed_beyond_32_bits_is_a_usage_error(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hfprune", "prune", str(checkpoint), "--structure", "conv1=0.5",
                                      "--seed", str(2**70), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2 and "--seed" in capsys.readouterr().err
