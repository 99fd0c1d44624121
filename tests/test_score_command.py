"""``hfprune score BENCHMARK FILE``: answers from any tool, scored like ``hfprune eval --rescore`` scores its own."""

import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from benchmark_fixtures import BUILDERS, write_fixture
from judge_server import JudgeServer
from hfprune.errors import HfpruneError
from hfprune.evaluation import benchmark_suite as runner
from hfprune.evaluation.benchmarks import JudgeConfig, Prediction, load_samples, load_spec
from hfprune.evaluation.score_command import run_score_command, score_file
from waiting import patience

OUTPUTS = {  # raw answers on which the styles disagree, one per fixture sample
    "gqa": ["Red.", "yes", "Dog...", "cup .", "NO"],
    "sqa_img": ["b", "A.", "The answer is A."],
    "textvqa": ["Coke", "Two.", "stop!"],
    "pope": ["Yes", "No.", "NO", "no", "Yes.", "Not really."],
    "mmvet": ["x = -1 or x = -5", "d is 5/4", "a giraffe"],
}


def fixture_rows(name):
    """The fixture's rows that the loader keeps, as JSON-able dicts in the Hub schema (images dropped)."""
    configs = BUILDERS[name]()
    rows = configs.get("testdev_balanced_instructions") or next(iter(configs.values()))
    kept = [i for i, image in enumerate(rows["image"]) if image is not None] if "image" in rows.column_names \
        else range(len(rows))
    rows = rows.remove_columns([c for c in rows.column_names if c == "image"])
    return [rows[i] for i in kept]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("style", ["official", "lmms_eval"])
@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_score_equals_eval_rescore_on_every_fixture(tmp_path, name, style):
    spec = load_spec(name)
    samples = load_samples(spec, str(write_fixture(name, tmp_path)))
    outputs = OUTPUTS[name]
    assert len(samples) == len(outputs)
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    write_jsonl(out / name / "predictions.jsonl",
                [asdict(Prediction(s.sample_id, o, s.references, s.meta)) for s, o in zip(samples, outputs)])
    answers = write_jsonl(tmp_path / "answers.jsonl", [{**row, "prediction": o} for row, o in zip(fixture_rows(name), outputs)])
    with JudgeServer() as server:
        judge = JudgeConfig(server.base_url, "judge-1")
        summary = runner.evaluate_model(tmp_path / "no-model", [name], out, judge=judge, rescore=True, style=style,
                                        progress=False)
        scored = score_file(name, answers, style=style, judge=judge)
    assert scored["metrics"] == summary["metrics"][name]
    assert scored["style"] == summary["styles"][name] == style
    assert json.loads((out / name / "metrics.json").read_text())["style"] == style
    eval_rows = [json.loads(line) for line in (out / name / "scores.jsonl").read_text().splitlines()]
    assert [r["score"] for r in scored["per_sample"]] == [r["score"] for r in eval_rows]


def test_the_styles_differ_on_these_answers(tmp_path):
    scores = {}
    for style in ("official", "lmms_eval"):
        for name in ("gqa", "sqa_img", "pope"):
            rows = [{**row, "prediction": o} for row, o in zip(fixture_rows(name), OUTPUTS[name])]
            scores[name, style] = score_file(name, write_jsonl(tmp_path / f"{name}.jsonl", rows), style)
    # GQA: official 'red', 'yes', 'dog', 'cup ' (wrong), 'no' -> 4/5; lmms-eval: the same ('cup ' keeps its space)
    assert scores["gqa", "official"]["metrics"]["score"] == scores["gqa", "lmms_eval"]["metrics"]["score"] == 80
    # SQA (answers B, A, A): official reads None, None, A; lmms-eval reads b, A, None
    assert [s["score"] for s in scores["sqa_img", "official"]["per_sample"]] == [0, 0, 1]
    assert [s["score"] for s in scores["sqa_img", "lmms_eval"]["per_sample"]] == [1, 1, 0]
    # POPE 'Yes', 'No.', 'NO', 'no', 'Yes.', 'Not really.': only exact yes/no count for lmms-eval; NO is yes officially
    assert [s["parsed"] for s in scores["pope", "official"]["per_sample"]] == ["yes", "no", "yes", "no", "yes", "yes"]
    assert [s["parsed"] for s in scores["pope", "lmms_eval"]["per_sample"]] == ["yes", None, "no", "no", None, None]


def test_the_command_line(tmp_path):
    rows = [{"question_id": 7, "prediction": "Coke", "answers": ["coke"] * 7 + ["coca cola"] * 3},
            {"prediction": "Two.", "answers": ["two"] * 4 + ["2"] * 6}, {"prediction": "x", "answers": ["y"] * 10}]
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(row) + "\n" for row in rows[1:]))
    per_sample = tmp_path / "scores" / "per_sample.jsonl"
    result = subprocess.run([sys.executable, "-m", "hfprune", "score", "textvqa", str(path), "--json", "--per-sample",
                             str(per_sample)], capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["benchmark"] == "textvqa" and printed["style"] == "official"
    assert printed["score"] == pytest.approx(200 / 3) and printed["metrics"]["num_samples"] == 3
    written = [json.loads(line) for line in per_sample.read_text().splitlines()]
    assert [(r["row"], r["sample_id"], r["score"]) for r in written] == [(1, "7", 1.0), (3, "3", 1.0), (4, "4", 0.0)]
    human = subprocess.run([sys.executable, "-m", "hfprune", "score", "textvqa", str(path), "--style", "lmms_eval"],
                           capture_output=True, text=True, timeout=patience(120))
    assert human.returncode == 0 and human.stdout.startswith("textvqa (lmms_eval scoring): 66.67 over 3 samples")


@pytest.mark.parametrize(
    "benchmark, line, message",
    [
        ("gqa", '{"answer": "red"}', "row 2: field 'prediction' is missing; it must be the model's raw output"),
        ("gqa", '{"prediction": "red"}', "row 2: field 'answer' is missing; it must be the reference answer"),
        ("gqa", '{"prediction": "red", "answer": 3}', "row 2: field 'answer' is 3; it must be the reference answer"),
        ("gqa", '{"prediction": "red", "answer": "red"', "row 2: not valid JSON"),
        ("gqa", '["red", "red"]', "row 2: must be a JSON object"),
        ("textvqa", '{"prediction": "a", "answers": []}', "row 2: field 'answers' is []; it must be the human answers"),
        ("textvqa", '{"prediction": "a", "answers": "a"}', "row 2: field 'answers' is \"a\""),
        ("pope", '{"prediction": "yes", "answer": "maybe"}', "row 2: field 'answer' is \"maybe\"; it must be \"yes\""),
        ("pope", '{"prediction": "yes", "answer": "no", "category": 1}', "row 2: field 'category' is 1"),
        ("sqa_img", '{"prediction": "B", "answer": "B", "choices": ["x", "y"]}',
         "row 2: field 'answer' is \"B\"; it must be the 0-based index of the right choice"),
        ("sqa_img", '{"prediction": "B", "answer": 2, "choices": ["x", "y"]}',
         "row 2: field 'answer' (2) is not the 0-based index of one of its 2 choices"),
        ("sqa_img", '{"prediction": "B", "answer": 0}', "row 2: field 'choices' is missing"),
        ("mmvet", '{"prediction": "B", "answer": "b"}', "row 2: field 'question' is missing"),
    ],
)
def test_malformed_rows_name_the_row_and_field(tmp_path, benchmark, line, message):
    first = {"gqa": '{"prediction": "a", "answer": "a"}', "textvqa": '{"prediction": "a", "answers": ["a"]}',
             "pope": '{"prediction": "a", "answer": "yes"}',
             "sqa_img": '{"prediction": "A", "answer": 0, "choices": ["x"]}',
             "mmvet": '{"prediction": "a", "answer": "a", "question": "q"}'}[benchmark]
    path = tmp_path / "answers.jsonl"
    path.write_text(first + "\n" + line + "\n")
    with pytest.raises(HfpruneError) as error:
        score_file(benchmark, path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_files_and_flags_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(HfpruneError, match="has no rows"):
        score_file("gqa", empty)
    with pytest.raises(HfpruneError, match="answers file .* not found"):
        score_file("gqa", tmp_path / "absent.jsonl")
    good = write_jsonl(tmp_path / "good.jsonl", [{"prediction": "a", "answer": "a"}])
    with pytest.raises(HfpruneError, match="unknown benchmark 'vqav2'"):
        score_file("vqav2", good)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prediction": 1, "answer": "a"}])
    result = subprocess.run([sys.executable, "-m", "hfprune", "score", "gqa", str(bad)], capture_output=True,
                            text=True, timeout=patience(120))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {bad} row 1: field 'prediction' is 1; it must be the "
                                                  "model's raw output, a string"]
    result = subprocess.run([sys.executable, "-m", "hfprune", "score", "gqa", str(good), "--style", "llava"],
                            capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 2 and "unknown scoring style 'llava'" in result.stderr


def test_mmvet_needs_a_judge_and_caches_beside_the_file(tmp_path, monkeypatch, capsys):
    for name in ("HFPRUNE_JUDGE_BASE_URL", "OPENAI_BASE_URL", "HFPRUNE_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    path = write_jsonl(tmp_path / "mmvet.jsonl", [{"prediction": "a giraffe", "answer": "giraffe",
                                                   "question": "What animal?", "capability": "rec"}])
    with pytest.raises(HfpruneError, match="MM-Vet needs an LLM judge"):
        score_file("mmvet", path)
    with JudgeServer() as server:
        result = run_score_command("mmvet", path, judge=JudgeConfig(server.base_url, "judge-1"))
    assert result["metrics"]["cap.rec"] == 100.0 and (tmp_path / "judge_cache.jsonl").is_file()
    assert capsys.readouterr().out.startswith("mmvet (official scoring): 100.00 over 1 samples\n  cap.rec: 100.00")
