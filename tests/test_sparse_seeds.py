"""benchmarks/sparse_seeds.py: one study per seed, each seed's findings as its report gives them, the count of
seeds each holds with, and finished studies read rather than rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from test_sparse_study import tiny
from waiting import patience

ROOT = Path(__file__).resolve().parents[1]


def _seeds(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "benchmarks" / "sparse_seeds.py"), "--recipe", str(recipe), "--seeds",
               "0,1", "--parallel", "2", "--out", str(out), "--json", str(out / "seeds.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(600), cwd=ROOT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def test_findings_per_seed_and_how_many_seeds_they_hold_with(tmp_path):
    recipe = {**tiny(budgets=[8], methods=["random_at_init"]), "report": {"target_acc": [0.5, 0.99]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "seeds"
    printed = _seeds(path, out).stdout
    figures = json.loads((out / "seeds.json").read_text())
    holds = {"frontier": 0, "at 0.5": 0, "at 0.99": 0}
    for seed in ("0", "1"):
        study = out / f"seed{seed}"
        report = json.loads((study / "report.json").read_text())
        assert yaml.safe_load((study / "recipe.yaml").read_text())["seed"] == int(seed)
        assert figures["seeds"][seed]["frontier"] == report["finding"]
        assert [found["target"] for found in figures["seeds"][seed]["targets"]] == [0.5, 0.99]
        assert f"seed {seed}: {report['finding']['line']}" in printed
        holds["frontier"] += bool(report["finding"]["holds"])
        for found in report["targets"]:
            holds[f"at {found['target']:g}"] += bool(found["holds"])
            assert found["line"] in printed
    assert figures["holds"] == holds
    assert "holds with: " + ", ".join(f"{name} {count} of 2 seeds" for name, count in holds.items()) in printed
    trials = {seed: (out / f"seed{seed}" / "trials.jsonl").read_text() for seed in (0, 1)}

    _seeds(path, out)  # finished: resumed with nothing to run
    assert {seed: (out / f"seed{seed}" / "trials.jsonl").read_text() for seed in (0, 1)} == trials
    assert "0 trials run" in (out / "seed0.log").read_text()


def test_a_missing_or_non_sparse_recipe_is_one_line(tmp_path):
    for recipe, said in ((tmp_path / "nope.yaml", "no such recipe file, nor a shipped recipe"),
                         ("quickstart", "quickstart: not a sparse study")):
        result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sparse_seeds.py"), "--recipe",
                                 str(recipe), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                                timeout=patience(120), cwd=ROOT)
        assert result.returncode != 0 and said in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
