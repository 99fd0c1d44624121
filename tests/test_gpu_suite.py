"""benchmarks/gpu_suite.py: its CPU dry run reports every step, and a step that fails — by an error, a crash of
its process or a hang past its cap — is reported failed with why while the other steps still run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_suite  # noqa: E402

from hfprune.models import FAMILIES  # noqa: E402
from waiting import patience, process_gone, wait_until  # noqa: E402


def gpu_suite_targets():
    import llm_structured_speed

    return llm_structured_speed.TARGETS


def _suite(out: Path, *args: str, env: dict | None = None, idle_seconds: int = 900) -> dict:
    """The dry run with ``args``; the steps' own caps and the budget lifted (``--cap-scale inf``): they are not
    what these tests check, and a loaded machine would reach them."""
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--cpu-dry-run", "--out", str(out),
               "--cap-scale", "inf", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(idle_seconds), cwd=ROOT,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads((out / "gpu_suite.json").read_text())


@pytest.mark.slow
def test_dry_run_reports_every_step_and_a_failing_step_stops_only_itself(tmp_path):
    # one failure injected through the environment (an error), one through --fail (the step's process is killed)
    report = _suite(tmp_path, "--fail", "equivalence_vit:crash", env={gpu_suite.FAIL_ENV: "masked_bf16"})
    steps = report["steps"]
    assert list(steps) == [step.name for step in gpu_suite.STEPS]
    assert all(step["status"] in gpu_suite.STATUSES and step["seconds"] >= 0 for step in steps.values())
    assert steps["masked_bf16"]["status"] == "failed" and "injected failure" in steps["masked_bf16"]["why"]
    assert steps["equivalence_vit"]["status"] == "failed" and "SIGKILL" in steps["equivalence_vit"]["why"]
    for step in gpu_suite.STEPS:
        if step.name in ("masked_bf16", "equivalence_vit"):
            continue
        result = steps[step.name]
        if step.family is not None and step.family not in FAMILIES:
            assert result == {"status": "skipped", "why": "family not installed", "figures": {}, "seconds": 0.0}
        else:
            assert result["status"] == "ok", (step.name, result["why"])
            assert result["figures"], step.name
    assert report["counts"]["failed"] == 2 and report["device"] == "cpu"
    assert report["budget_s"] is None and report["cap_scale"] == "inf"

    # the figures are the checks' own
    for case in ("masked_plain", "masked_bf16_checkpointing"):
        figures = steps[case]["figures"]
        assert figures["violations"] == 0 and figures["kept_changed"] > 0.5 and figures["device"] == "cpu"
        assert figures["pruned_fraction"] == pytest.approx(0.44, abs=1e-3)
    lenet = steps["equivalence_lenet5_mini"]["figures"]
    assert lenet["gated_vs_physical"] <= 1e-4 and lenet["pruned_parameters"] < lenet["parameters"]
    assert steps["prune_vit_b16"]["figures"]["pruned_vs_gated"] <= 1e-4
    for method in gpu_suite.UNSTRUCTURED:
        assert steps[f"prune_llava_{method}"]["figures"]["sparsity"] == pytest.approx(0.4375, abs=2e-3), method
    gmp = steps["gmp_threshold"]["figures"]
    assert gmp["same_count"] and gmp["same_threshold"] and gmp["pruned"] == round(0.4375 * gmp["weights"])
    assert steps["masked_step_overhead"]["figures"]["violations"] == 0
    assert steps["generation_throughput"]["figures"]["same_answers"] is True
    assert steps["trial_overhead"]["figures"]["trial_device"] == "cpu"
    assert steps["trials_per_hour_lenet"]["figures"]["packed_trials_per_hour"]["2"] > 0  # packs of 2 in the dry run
    assert steps["trials_per_hour_resnet56"]["figures"]["packing_speedup"]["1"] == 1.0
    llm = steps["llm_structured_speed"]["figures"]  # decoder layers of hidden 48, FFN 128, 4 heads in 4 KV groups
    assert llm["ffn50_kv25_decoder_parameters"] == pytest.approx((2 * 48 * 36 * 2 + 3 * 48 * 64 + 96)
                                                                 / (2 * 48 * 48 * 2 + 3 * 48 * 128 + 96))
    assert llm["depth25_decoder_parameters"] == 0.75 and set(llm["targets"]) == set(gpu_suite_targets())
    assert steps["masked_step_overhead"]["target_met"] is None  # no speed verdict at dry-run sizes

    table = (tmp_path / "gpu_suite.md").read_text()
    assert all(f"| {name} | {step['status']} |" in table for name, step in steps.items())
    assert (tmp_path / "logs" / "masked_plain.log").is_file() and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_spawned_steps_and_a_step_past_its_cap(tmp_path):
    """A step that never ends is ended by its cap (a --cap, which --cap-scale leaves as it is) and reported so;
    the other step, uncapped, runs to its end however slow the machine."""
    report = _suite(tmp_path, "--isolation", "spawn", "--only", "equivalence_lenet5_mini,gmp_threshold",
                    "--fail", "gmp_threshold:hang", "--cap", "gmp_threshold=3")
    assert report["isolation"] == "spawn" and list(report["steps"]) == ["equivalence_lenet5_mini", "gmp_threshold"]
    assert report["steps"]["equivalence_lenet5_mini"]["status"] == "ok"
    hung = report["steps"]["gmp_threshold"]
    assert hung["status"] == "failed" and hung["why"].startswith("timed out after 3 s")


def test_a_timed_out_step_takes_what_it_started_with_it(tmp_path):
    """The cap kills the step's whole process group: a process the step started, which would never end by itself,
    ends with it. Judged by the effect, not the clock: the step never ends on its own either, so being reported
    timed out shows the cap ended it."""
    pid_file = tmp_path / "sleeper.pid"

    def start_and_hang(ctx):
        sleeper = subprocess.Popen(["sleep", "1000000"])
        pid_file.write_text(str(sleeper.pid))
        signal.pause()  # until killed

    ctx = gpu_suite.Context("cpu", True, tmp_path)
    cap = 1.0
    while not (pid_file.is_file() and pid_file.read_text()):  # a loaded machine may reach a cap before the step
        step = gpu_suite.Step("hangs", "starts a process and hangs", start_and_hang, cap=cap)  # started its process
        outcome = gpu_suite.run_isolated(step, ctx, cap, tmp_path, {})
        assert outcome["status"] == "failed" and outcome["why"].startswith(f"timed out after {cap:.0f} s")
        cap *= 2
    sleeper = int(pid_file.read_text())
    wait_until(lambda: process_gone(sleeper), f"the end of process {sleeper}, which the step started", 1)


def test_cap_scale_multiplies_the_steps_own_caps_but_not_a_given_cap():
    step = gpu_suite.Step("s", "", lambda ctx: {}, cap=60, dry_cap=90)
    assert (step.cap_for(False), step.cap_for(True), step.cap_for(True, 4)) == (60, 90, 360)
    assert step.cap_for(True, 4, given=3) == 3 and step.cap_for(False, float("inf")) == float("inf")
    assert gpu_suite.STEPS and all(s.cap_for(True, 2) == 2 * s.dry_cap for s in gpu_suite.STEPS)


def test_an_error_is_one_line_with_its_type_and_a_skip_is_not_a_failure(tmp_path):
    def fails(ctx):
        raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    def skips(ctx):
        raise gpu_suite.Skip("dataset cifar10 not registered")

    ctx = gpu_suite.Context("cpu", True, tmp_path)  # steps that end by themselves: no cap, whatever the load
    failed = gpu_suite.run_isolated(gpu_suite.Step("fails", "", fails, cap=30), ctx, math.inf, tmp_path, {})
    assert failed["status"] == "failed"
    assert failed["why"] == "MemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "Traceback" in (tmp_path / "fails.log").read_text()
    skipped = gpu_suite.run_isolated(gpu_suite.Step("skips", "", skips, cap=30), ctx, math.inf, tmp_path, {})
    assert skipped["status"] == "skipped" and skipped["why"] == "dataset cifar10 not registered"


def test_bad_options_are_one_line_errors():
    with pytest.raises(SystemExit, match="raise, crash or hang"):
        gpu_suite.parse_failures("masked_plain:explode")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--cpu-dry-run", "--out",
                             "/tmp/unused", "--only", "no_such_step"], capture_output=True, text=True,
                            timeout=patience(120))
    assert result.returncode != 0 and "unknown step(s) no_such_step; --list shows them" in result.stderr


@pytest.mark.parametrize("device, message", [
    ("cuda", "--device cuda: torch sees no CUDA GPU here; drop --device to prune on the CPU"),
    ("gpu0", "--device 'gpu0' is not a torch device; give cpu, cuda or cuda:N"),
])
def test_prune_device_that_is_not_here_is_a_one_line_error_before_any_loading(tmp_path, device, message):
    import torch

    from hfprune.errors import HfpruneError
    from hfprune.oneshot.unstructured import prune_unstructured_checkpoint

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(HfpruneError) as error:
        prune_unstructured_checkpoint(str(tmp_path / "no-such-model"), "ump", 0.5, tmp_path / "out", device=device)
    assert str(error.value) == message
