"""A wheel is as complete as the checkout: installed non-editable, it ships every recipe and benchmark spec."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from waiting import patience

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "hfprune", "recipes", "eval")


def _run(*command, cwd=None, timeout=300):
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd,
                            timeout=patience(timeout))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh virtualenv with hfprune installed from a freshly built wheel; the dependencies are this
    environment's (a .pth file points at its site-packages, whose own .pth files, such as an editable
    hfprune's, are not read from there)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: a build in the checkout would leave a stale build/ behind
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist")
    (wheel,) = (root / "dist").glob("hfprune-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = root / "elsewhere"
    outside.mkdir()
    return venv, outside


def test_the_wheel_carries_recipes_and_benchmark_specs(wheel_env):
    venv, outside = wheel_env
    listed = _run(venv / "bin" / "hfprune", "recipes", cwd=outside)
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    assert names == sorted(path.stem for path in (REPO / "recipes").glob("*.yaml"))
    script = (
        "import hfprune, sys\n"
        f"assert hfprune.__file__.startswith({str(venv)!r}), hfprune.__file__\n"
        "from hfprune.evaluation.benchmarks import list_specs\n"
        "from hfprune.cli import _resolve_recipe\n"
        "from hfprune.study.registry import load_recipe\n"
        "print(' '.join(spec.name for spec in list_specs()))\n"
        "print(load_recipe(_resolve_recipe('quickstart')).name)\n"
    )
    specs, recipe = _run(venv / "bin" / "python", "-c", script, cwd=outside).split("\n")[:2]
    assert specs.split() == sorted(path.stem for path in (REPO / "eval").glob("*.yaml"))
    assert recipe == "quickstart"
