"""The command line as a user types it: errors are one line, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hfprune.errors import HfpruneError

from study_helpers import tiny_recipe
from waiting import patience


def hfprune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hfprune", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=patience(300))


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["retrain"].update(epochs="ten"), "retrain.epochs"),
    (lambda r: r["retrain"].update(epocs=3), "unknown key 'epocs' in retrain"),
    (lambda r: r["pruning"]["settings"][0]["ratios"].update(conv1=1.5), "must be in (0, 1), got 1.5"),
    (lambda r: r["data"].update(dataset="cifar-1000"), "unknown dataset 'cifar-1000'"),
])
def test_malformed_recipe_gets_one_clear_line(tmp_path, change, expected):
    recipe = tiny_recipe()
    change(recipe)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = hfprune("run", path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid recipe") and expected in lines[0], result.stderr
    assert not (tmp_path / "out").exists(), "nothing is created for a recipe that does not validate"


def test_missing_recipe_file_names_it(tmp_path):
    result = hfprune("run", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "nope.yaml" in result.stderr and "Traceback" not in result.stderr


def test_recipes_lists_the_shipped_ones():
    result = hfprune("recipes")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    shipped = sorted(p.stem for p in (Path(__file__).parent.parent / "recipes").glob("*.yaml"))
    assert names == shipped
    assert all(len(line.split()) > 3 for line in result.stdout.splitlines()), "each recipe has a description"


def test_report_json_over_a_csv_table(tmp_path):
    table = tmp_path / "trials.csv"
    table.write_text("pruned_train_loss,final_test_acc\n0.1,0.9\n0.2,0.8\n0.3,0.85\n0.4,0.7\n")
    result = hfprune("report", table, "--x", "pruned_train_loss", "--y", "final_test_acc", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["n"] == 4 and payload["higher_is_better"] is True
    assert payload["counterexample_ratio"] == pytest.approx(1 / 6)
    assert payload["anomaly_ratio"] == 0.0
    assert payload["kendall_tau"] == pytest.approx(-2 / 3)


def test_report_unknown_column_is_one_line(tmp_path):
    table = tmp_path / "trials.csv"
    table.write_text("pruned_train_loss,final_test_acc\n0.1,0.9\n0.2,0.8\n")
    result = hfprune("report", table, "--x", "pruned_train_loss", "--y", "final_acc", "--json")
    assert result.returncode == 2 and "final_acc" in result.stderr and "Traceback" not in result.stderr


def test_prune_modes_each_show_only_their_own_options():
    from hfprune.cli import app

    helps = {mode: CliRunner().invoke(app, ["prune", mode, "--help"], env={"COLUMNS": "200"}).output
             for mode in ("structured", "unstructured", "select")}
    assert "--sparsity" in helps["unstructured"] and "--sparsity" not in helps["structured"] + helps["select"]
    assert "--train-data" in helps["select"] and "--train-data" not in helps["structured"] + helps["unstructured"]
    assert "--calibration-path" in helps["structured"] and "--calibration-path" not in helps["select"]
    overview = CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "200"}).output
    assert all(mode in overview for mode in ("structured", "unstructured", "select"))


@pytest.mark.parametrize("args, message", [
    (["m", "--out", "o", "--structure", "conv1=0.5", "--select", "successive-halving", "--method", "l1"],
     "--method applies to `hfprune prune structured / unstructured`, not to pruning select"),
    (["m", "--out", "o", "--structure", "conv1=0.5", "--sparsity", "0.5"], "exactly one of --structure"),
    (["m", "--out", "o", "--sparsity", "0.5", "--select", "successive-halving"], "use it with --structure"),
    (["m", "--out", "o", "--method", "ump"], "--method needs --structure"),
    (["m", "--out", "o"], "say how to prune"),
    (["unstructured", "m", "--out", "o", "--sparsity", "0.5", "--train-data", "mnist_sample"],
     "--train-data applies to `hfprune prune select`"),
])
def test_prune_mode_mistakes_are_one_line_before_any_work(tmp_path, args, message):
    from hfprune.cli import app

    result = CliRunner().invoke(app, ["prune", *args])
    assert isinstance(result.exception, HfpruneError) and message in str(result.exception), result.output


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGTERM",)])
def test_interrupts_end_in_one_line_saying_what_is_kept_and_how_to_resume(tmp_path, signals):
    """Ctrl-C (or SIGTERM), even twice, during a study: status 130, one 'interrupted;' line that says the
    finished trials are kept and the command that resumes, no traceback; the same command then resumes."""
    import signal
    import tempfile

    from study_helpers import write_recipe
    from waiting import wait_until

    recipe, out = write_recipe(tmp_path), tmp_path / "out"
    command = [sys.executable, "-m", "hfprune", "run", str(recipe), "--out", str(out), "--no-progress"]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_until(lambda: process.poll() is not None or (out / "trials.jsonl").exists(),
                       "a first trial record", idle_seconds=120)
            assert process.poll() is None, "the study finished before it could be interrupted"
            for name in signals:
                process.send_signal(getattr(signal, name))
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
        stderr.seek(0)
        text = stderr.read().decode()
    assert process.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if line.startswith("interrupted;")]
    assert lines == [f"interrupted; finished trials are saved in {out}. Run the same command to resume."]


def test_help_is_plain_text_whose_option_names_are_never_cut():
    from hfprune.cli import app

    for command in (["prune", "unstructured", "--help"], ["prune", "structured", "--help"], ["run", "--help"],
                    ["--help"]):
        text = CliRunner().invoke(app, command, env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}).output
        assert "…" not in text and "╭" not in text, text
        assert "--help <bool>" not in text
    unstructured = CliRunner().invoke(app, ["prune", "unstructured", "--help"], env={"COLUMNS": "80"}).output
    assert "--calibration-data" in unstructured and "--calibration-samples" in unstructured
