"""``hfprune eval`` as a user runs it: a tiny random TinyLLaVA on fixtures of all five benchmarks in their
Hub schemas, MM-Vet graded by a judge server on loopback; killed mid-run and resumed; rescored offline."""

import json
import os
import signal
import subprocess
import sys

import pytest

from benchmark_fixtures import write_fixture
from judge_server import JudgeServer
from waiting import patience, wait_until
from hfprune.errors import HfpruneError
from hfprune.evaluation import benchmark_suite as runner
from hfprune.evaluation.benchmarks.judge import JudgeConfig
from hfprune.models.llava.tiny import build_tiny_llava

TASKS = ["gqa", "sqa_img", "textvqa", "pope", "mmvet"]
SAMPLES = {"gqa": 5, "sqa_img": 3, "textvqa": 3, "pope": 6, "mmvet": 3}  # sqa_img: one of 4 rows has no image
KEY = "sk-test-secret-key"


def record(sample_id, output, references, **meta):
    return {"sample_id": sample_id, "output": output, "references": references, "meta": meta}


RECORDS = {  # saved answers whose scores are known
    "gqa": [record("q1", "Red.", ["red"])],
    "sqa_img": [record("0", "The answer is B.", ["B"], choices=["cat", "bird"]),
                record("1", "C", ["A"], choices=["nail", "cork", "glass"])],
    "textvqa": [record("34602", "Coca Cola", ["coca cola"] * 10)],
    "pope": [record(f"{split}{truth}", "Yes, there is." if truth == "yes" else "No.", [truth], category=split)
             for split in ("adversarial", "popular", "random") for truth in ("yes", "no")],
    "mmvet": [record("v1_0", "x = -1 or x = -5", ["-1<AND>-5"], question="What is x?", capabilities=["ocr", "math"]),
              record("v1_1", "d is 5/4", ["1.25<OR>5/4"], question="What is d?", capabilities=["ocr", "math"]),
              record("v1_2", "a giraffe", ["giraffe"], question="What is the animal?", capabilities=["rec"])],
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    data.mkdir()
    for name in TASKS:
        write_fixture(name, root).rename(data / name)
    return build_tiny_llava(root / "model"), data


def command(model, data, out, base_url, *extra):
    return [sys.executable, "-m", "hfprune", "eval", str(model), "--tasks", ",".join(TASKS), "--out", str(out),
            "--data-dir", str(data), "--judge-base-url", base_url, "--judge-model", "judge-1", "--no-progress",
            *map(str, extra)]


def environment():
    """One torch thread: a tiny model gains nothing from more, and spinning threads crawl on a busy machine."""
    return {**os.environ, "HFPRUNE_JUDGE_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def prediction_ids(out, task):
    path = out / task / "predictions.jsonl"
    return [json.loads(line)["sample_id"] for line in path.read_text().splitlines()] if path.exists() else []


def lines_written(out):
    """Complete records so far (the run may be mid-write)."""
    return sum(path.read_bytes().count(b"\n") for path in out.glob("*/predictions.jsonl"))


def test_eval_all_five_benchmarks_killed_and_resumed(setup, tmp_path):
    model, data = setup
    out = tmp_path / "out"
    with JudgeServer(api_key=KEY) as server:
        args = command(model, data, out, server.base_url, "--batch-size", 1, "--max-new-tokens", 12)
        process = subprocess.Popen(args, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: lines_written(out) >= 7 or process.poll() is not None, "7 predictions written", 120)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert process.returncode == -signal.SIGKILL and not (out / "summary.json").exists(), "killed mid-run"
        before = {task: (out / task / "predictions.jsonl").read_text() for task in TASKS
                  if (out / task / "predictions.jsonl").exists()}
        assert 0 < sum(len(text.splitlines()) for text in before.values()) < sum(SAMPLES.values())

        result = subprocess.run(args, env=environment(), capture_output=True, text=True, timeout=patience(300))
        assert result.returncode == 0, result.stderr
        assert len(server.requests) == SAMPLES["mmvet"]
        summary = json.loads((out / "summary.json").read_text())
        finished = runner.evaluate_model(tmp_path / "no-model", TASKS, out, data_dir=data, progress=False,
                                         judge=JudgeConfig(server.base_url, "judge-1", KEY))
        assert len(server.requests) == SAMPLES["mmvet"], "a finished run needs neither the model nor the judge"

    for task in TASKS:
        ids = prediction_ids(out, task)
        assert len(ids) == len(set(ids)) == SAMPLES[task], task
        text = (out / task / "predictions.jsonl").read_text()
        assert text.startswith(before.get(task, "").rpartition("\n")[0]), "finished answers kept, not redone"
        metrics = json.loads((out / task / "metrics.json").read_text())
        assert metrics["num_predictions"] == SAMPLES[task] and 0 <= metrics["score"] <= 100
    assert summary["scores"] == finished["scores"]
    assert list(summary["scores"]) == ["sqa_img", "textvqa", "gqa", "mmvet", "pope"]  # Table A6 order
    assert summary["mean"] == pytest.approx(sum(summary["scores"].values()) / 5)
    table = (out / "summary.md").read_text()
    assert "| SQA-IMG | TextVQA | GQA | MM-Vet | POPE | mean |" in table
    for name in ("SQA-IMG", "MM-Vet", "mean"):
        assert name in result.stdout
    files = [path.read_text() for path in out.rglob("*") if path.is_file()]
    assert all(KEY not in text for text in files + [result.stdout, result.stderr]), "the judge key leaks nowhere"


def test_rescore_reads_the_predictions_without_the_model(tmp_path, monkeypatch):
    """Score saved predictions again: no model, no data, no generation; MM-Vet grades from the judge cache."""
    out = tmp_path / "out"
    for task in TASKS:
        (out / task).mkdir(parents=True)
        (out / task / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in RECORDS[task]))
    monkeypatch.setattr(runner, "generate_predictions", None)  # any generation would fail
    with JudgeServer(api_key=KEY) as server:
        judge = JudgeConfig(server.base_url, "judge-1", KEY)
        summary = runner.evaluate_model(tmp_path / "no-model", TASKS, out, judge=judge, rescore=True)
        assert len(server.requests) == SAMPLES["mmvet"]
        again = runner.evaluate_model(tmp_path / "no-model", TASKS, out, judge=judge, rescore=True)
        assert len(server.requests) == SAMPLES["mmvet"], "the judge's grades are cached"
    assert again == summary
    assert summary["scores"] == {"sqa_img": 50.0, "textvqa": 100.0, "gqa": 100.0, "mmvet": 100.0, "pope": 100.0}
    assert json.loads((out / "pope" / "metrics.json").read_text())["metrics"]["adversarial.f1"] == 100.0
    assert [json.loads(line)["sample_id"] for line in (out / "gqa" / "scores.jsonl").read_text().splitlines()] == ["q1"]


def test_rescore_in_another_style_from_the_command_line(tmp_path):
    out = tmp_path / "out"
    for task in ("sqa_img", "pope"):
        (out / task).mkdir(parents=True)
        (out / task / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in RECORDS[task]))
    result = subprocess.run([sys.executable, "-m", "hfprune", "eval", str(tmp_path / "no-model"), "--tasks",
                             "sqa_img,pope", "--out", str(out), "--rescore", "--style", "lmms_eval", "--no-progress"],
                            env=environment(), capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["styles"] == {"sqa_img": "lmms_eval", "pope": "lmms_eval"}
    # lmms-eval reads 'The answer is B.' as no letter, and 'Yes, there is.' / 'No.' as neither yes nor no
    assert summary["scores"] == {"sqa_img": 0.0, "pope": 0.0}
    assert json.loads((out / "pope" / "metrics.json").read_text())["style"] == "lmms_eval"
    official = runner.evaluate_model(tmp_path / "no-model", ["sqa_img", "pope"], out, rescore=True, progress=False)
    assert official["scores"] == {"sqa_img": 50.0, "pope": 100.0} and set(official["styles"].values()) == {"official"}


def test_rescore_without_predictions_says_so(tmp_path):
    with pytest.raises(HfpruneError, match="no predictions to rescore for 'gqa'"):
        runner.evaluate_model(tmp_path / "no-model", ["gqa"], tmp_path / "out", rescore=True)




def test_unknown_benchmark_is_one_line_naming_the_known_ones(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hfprune", "eval", str(tmp_path), "--tasks", "gqa,vqav2",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "vqav2" in lines[0] and all(task in lines[0] for task in TASKS), result.stderr
    assert not (tmp_path / "out").exists()
