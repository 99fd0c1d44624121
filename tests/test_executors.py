"""Choosing where trials run: in-process without flags (Ray never imported), refusals where Ray cannot help."""

import subprocess
import sys

import pytest

from hfprune.study.registry import parse_recipe
from hfprune.errors import HfpruneError
from hfprune.study.executors import executor_for
from hfprune.study.executors.inprocess import InProcessExecutor
from hfprune.study.tasks.image_classification import ImageClassificationTask
from hfprune.study.tasks.vision_language import VisionLanguageTask
from study_helpers import tiny_recipe, write_recipe
from waiting import patience


def test_without_flags_trials_run_in_process_and_ray_is_never_imported():
    code = ("import sys; from hfprune.cli import app; from hfprune.study.runner import run_study; "
            "from hfprune.study.executors import executor_for; from hfprune.study.registry import parse_recipe; "
            "sys.path.insert(0, 'tests'); from study_helpers import tiny_recipe; "
            "executor = executor_for(parse_recipe(tiny_recipe()), True); "
            "print(type(executor).__name__, 'ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["InProcessExecutor", "False"]


def test_workers_under_a_multi_process_launch_are_refused():
    with pytest.raises(HfpruneError, match="this run has 2 processes .*drop --workers"):
        executor_for(parse_recipe(tiny_recipe()), ImageClassificationTask.one_device_trials, workers=2, processes=2)


def test_workers_for_trials_that_need_several_gpus_are_refused():
    assert VisionLanguageTask.one_device_trials is False
    with pytest.raises(HfpruneError, match="needs several GPUs of its own.*accelerate launch"):
        executor_for(parse_recipe(tiny_recipe()), VisionLanguageTask.one_device_trials, ray_address="auto")


def test_more_than_one_gpu_per_trial_is_a_recipe_error_that_points_to_accelerate(tmp_path):
    recipe = write_recipe(tmp_path, execution={"gpus_per_trial": 2})
    result = subprocess.run([sys.executable, "-m", "hfprune", "run", str(recipe), "--workers", "2",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "execution.gpus_per_trial" in lines[0] and "accelerate launch" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_where_trials_run_does_not_change_the_study_fingerprint():
    base = parse_recipe(tiny_recipe())
    packed = parse_recipe(tiny_recipe(execution={"gpus_per_trial": 0.25, "cpus_per_trial": 2, "threads_per_trial": 1}))
    assert base.fingerprint() == packed.fingerprint(), "a study started in-process resumes on Ray"
    assert isinstance(executor_for(packed, ImageClassificationTask.one_device_trials), InProcessExecutor)


def test_a_ray_address_where_no_cluster_listens_fails_before_any_work(tmp_path):
    pytest.importorskip("ray")
    recipe = write_recipe(tmp_path)
    result = subprocess.run([sys.executable, "-m", "hfprune", "run", str(recipe), "--ray-address", "127.0.0.1:1",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=patience(120))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ray-address 127.0.0.1:1: no Ray cluster answers there" in lines[0], lines
    assert not (tmp_path / "out").exists()
