"""`hfprune report`, `hfprune prune` and `hfprune score` on hostile inputs: one line each, never a traceback or a
hang."""

import io
import json
import os
import random
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


# --- hfprune score: answers files from other tools -------------------------------------------------------------

CLEAN_ANSWERS = {  # valid rows of each benchmark, in the README's schema, on which the scorers disagree
    "gqa": [{"question_id": 1, "prediction": "Red.", "answer": "red"}, {"prediction": "yes", "answer": "no"},
            {"id": "q3", "prediction": "a dog", "answer": "dog"}],
    "sqa_img": [{"prediction": "B", "answer": 1, "choices": ["cat", "dog"]},
                {"prediction": "The answer is A.", "answer": 0, "choices": ["x", "y", "z"]},
                {"prediction": "C", "answer": 0, "choices": ["a", "b", "c"]}],
    "textvqa": [{"prediction": "Coke", "answers": ["coke"] * 7 + ["coca cola"] * 3},
                {"prediction": "two", "answers": ["2"] * 6 + ["two"] * 4},
                {"prediction": "stöp", "answers": ["stop"] * 10}],
    "pope": [{"prediction": "Yes", "answer": "yes", "category": "adversarial"},
             {"prediction": "No.", "answer": "yes", "category": "popular"},
             {"prediction": "no", "answer": "no", "category": "random"},
             {"prediction": "yes", "answer": "no", "category": "random"}],
    "mmvet": [{"prediction": "a giraffe", "answer": "giraffe", "question": "What animal?", "capability": "rec"},
              {"prediction": "5", "answer": "4", "question": "2+2?", "capability": ["math"]}],
}
READ_FIELDS = ("prediction", "id", "question_id", "answer", "answers", "choices", "category", "question", "capability")
WRONG_VALUES = (1, 2.5, True, None, [], {}, ["x"], {"a": 1}, "yes", -1, 10**30)


def _cli(monkeypatch, capsys, *args):
    """``hfprune ARGS`` in this process: (exit status, stdout, stderr); any exception but SystemExit escapes."""
    monkeypatch.setattr(sys, "argv", ["hfprune", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def _jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _deep(depth):
    return "[" * depth + "]" * depth


def _corrupt(rng, rows):
    """One seeded corruption of a valid answers file: (kind, bytes)."""
    data = _jsonl(rows).encode()
    kind = rng.choice(["truncate", "flip", "wrong_type", "missing", "deep", "encoding", "layout"])
    if kind == "truncate":
        return kind, data[:rng.randrange(len(data))]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(data))] ^= rng.randint(1, 255)
        return kind, bytes(flipped)
    row = rng.randrange(len(rows))
    changed = [dict(r) for r in rows]
    field = rng.choice(sorted(changed[row]))
    if kind == "wrong_type":
        changed[row][field] = rng.choice(WRONG_VALUES)
        return kind, _jsonl(changed).encode()
    if kind == "missing":
        del changed[row][field]
        return kind, _jsonl(changed).encode()
    if kind == "deep":  # written as text: too deep for json.dumps, which is the point
        changed[row][field] = "@@DEEP@@"
        return kind, _jsonl(changed).replace('"@@DEEP@@"', _deep(rng.choice([50, 900, 5000, 100_000]))).encode()
    text = _jsonl(rows)
    if kind == "encoding":
        return kind, rng.choice([lambda: text.encode("utf-16"), lambda: text.encode("utf-16-le"),
                                 lambda: text.encode("utf-32"), lambda: text.replace("a", "é").encode("latin-1"),
                                 lambda: text.replace("e", "é").encode("cp1252"),
                                 lambda: data[:5] + b"\x00" + data[5:], lambda: b"\xef\xbb\xbf" + data])()
    return kind, rng.choice([lambda: text.replace("\n", "\r\n").encode(), lambda: text.replace("\n", "\r").encode(),
                             lambda: text.replace("\n", "\n\n  \n").encode(), lambda: text.rstrip("\n").encode()])()


def _reference_rows(data):
    """The rows of ``data`` as the README defines the file (UTF-8, one JSON object per line), with only the fields
    a score reads; None when the file is not that."""
    try:
        lines = io.StringIO(data.decode("utf-8-sig"), newline=None).read().split("\n")
        rows = [json.loads(line) for line in lines if line.strip()]
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not all(isinstance(row, dict) for row in rows):
        return None
    return [{k: v for k, v in row.items() if k in READ_FIELDS} for row in rows]


def _score(monkeypatch, capsys, path, benchmark, judge_args):
    code, out, err = _cli(monkeypatch, capsys, "score", benchmark, path, "--json", *judge_args)
    return code, (json.loads(out)["score"] if code == 0 else None), out, err


@pytest.mark.parametrize("benchmark", sorted(CLEAN_ANSWERS))
def test_score_fuzz_gives_the_clean_score_or_one_error_line(tmp_path, monkeypatch, capsys, benchmark):
    """Seeded corruptions of a valid answers file: each run either exits 0 with the score of a clean file holding
    the same rows, or exits 2 with exactly one 'error:' line on stderr; valid layouts (CRLF, CR, blank lines,
    a BOM, no final newline) score like the clean file."""
    from judge_server import JudgeServer

    rng = random.Random(benchmark)
    with JudgeServer() as server:
        judge_args = ("--judge-base-url", server.base_url, "--judge-model", "judge-1") if benchmark == "mmvet" else ()
        clean = tmp_path / "clean.jsonl"
        clean.write_text(_jsonl(CLEAN_ANSWERS[benchmark]), encoding="utf-8")
        clean_code, clean_score, _, err = _score(monkeypatch, capsys, clean, benchmark, judge_args)
        assert clean_code == 0, err
        outcomes = set()
        for case in range(30):
            kind, data = _corrupt(rng, CLEAN_ANSWERS[benchmark])
            path = tmp_path / f"case{case}.jsonl"
            path.write_bytes(data)
            code, score, out, err = _score(monkeypatch, capsys, path, benchmark, judge_args)
            assert code in (0, 2), (kind, data[:200], err)
            outcomes.add(code)
            if code == 2:
                assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (kind, err)
                assert "Traceback" not in err and str(path) in err
                continue
            rows = _reference_rows(data)
            assert rows is not None, (kind, data[:200])  # exit 0 only for a file the README allows
            reference = tmp_path / f"reference{case}.jsonl"
            reference.write_text(_jsonl(rows), encoding="utf-8")
            assert _score(monkeypatch, capsys, reference, benchmark, judge_args)[:2] == (0, score), (kind, data[:200])
            if kind == "layout" or data.startswith(b"\xef\xbb\xbf"):
                assert score == clean_score
    assert outcomes == {0, 2}  # the corruptions exercised both outcomes


GOOD_ROW = b'{"prediction": "red", "answer": "red"}\n'


@pytest.mark.parametrize("content, expected", [
    ('{"prediction": "caf\xe9", "answer": "red"}\n'.encode("latin-1"),
     "row 1: not UTF-8 text (byte 0xe9 at column 20)"),
    (GOOD_ROW.decode().encode("utf-16"), "is UTF-16 or UTF-32 text; save it as UTF-8"),
    (GOOD_ROW.decode().encode("utf-16-le"), "row 1: holds NUL bytes"),
    (GOOD_ROW + bytes(range(256)) * 4, "row 2: holds NUL bytes"),
    (GOOD_ROW + b'{"prediction": "a", "answer": ' + _deep(100_000).encode() + b"}\n", "row 2: nested deeper"),
    (GOOD_ROW + b'{"prediction": "a", "answer": ' + _deep(900).encode() + b"}\n", "row 2: field 'answer' is [[["),
    (GOOD_ROW + b'{"prediction": "a", "answer": "a", "id": ' + _deep(900).encode() + b"}\n", "row 2: field 'id'"),
    (b'{"prediction": "' + b"a" * (17 << 20) + b'", "answer": "a"}\n', "row 1 is longer than 16 MiB"),
    (b"", "has no rows"),
    (b"\n \r\n\n", "has no rows"),
])
def test_unreadable_answers_files_are_one_line(tmp_path, monkeypatch, capsys, content, expected):
    path = tmp_path / "answers.jsonl"
    path.write_bytes(content)
    code, out, err = _cli(monkeypatch, capsys, "score", "gqa", path)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {path}") and expected in err


def test_sqa_answer_index_too_long_to_read_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"prediction": "A", "choices": ["x"], "answer": ' + "1" * 5000 + "}\n")
    code, _, err = _cli(monkeypatch, capsys, "score", "sqa_img", path)
    assert code == 2 and "row 1: unreadable JSON" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make, expected", [
    (lambda d: d, "is a directory; give a JSONL file"),
    (lambda d: d / "absent.jsonl", "is not found"),
])
def test_answers_path_that_is_no_file_is_one_line(tmp_path, monkeypatch, capsys, make, expected):
    code, _, err = _cli(monkeypatch, capsys, "score", "gqa", make(tmp_path))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target, expected", [
    (lambda d: d / "answers.jsonl", "is the answers file itself and would replace it"),
    (lambda d: d, "is a directory; give a file path"),
    (lambda d: d / "answers.jsonl" / "scores.jsonl", "answers.jsonl' is a file, not a folder"),
    (lambda d: d / "judge_cache.jsonl", "is the judge's grade cache"),
])
def test_per_sample_paths_that_would_break_are_refused_before_scoring(tmp_path, monkeypatch, capsys, target,
                                                                      expected):
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(GOOD_ROW)
    (tmp_path / "judge_cache.jsonl").write_text("")
    code, out, err = _cli(monkeypatch, capsys, "score", "gqa", answers, "--per-sample", target(tmp_path))
    assert code == 2 and out == "" and expected in err and len(err.strip().splitlines()) == 1
    assert answers.read_bytes() == GOOD_ROW  # the answers are untouched


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_per_sample_fifo_is_refused_rather_than_written(tmp_path, monkeypatch, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(GOOD_ROW)
    os.mkfifo(tmp_path / "fifo")  # writing to it would block until someone reads
    code, _, err = _cli(monkeypatch, capsys, "score", "gqa", answers, "--per-sample", tmp_path / "fifo")
    assert code == 2 and "is not a regular file" in err


def test_per_sample_makes_missing_folders_and_replaces_an_old_output(tmp_path, monkeypatch, capsys):
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(GOOD_ROW + b'{"prediction": "blue", "answer": "red"}\n')
    new = tmp_path / "new" / "deeper" / "scores.jsonl"
    old = tmp_path / "scores.jsonl"
    old.write_text("an earlier run's output, longer than the new one\n" * 10)
    for target in (new, old):
        code, _, err = _cli(monkeypatch, capsys, "score", "gqa", answers, "--per-sample", target)
        assert code == 0, err
        assert [json.loads(line)["score"] for line in target.read_text().splitlines()] == [1.0, 0.0]
        assert not target.with_name(target.name + ".partial").exists()
