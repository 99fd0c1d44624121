"""One GPU check: every GPU figure of hfprune from one script, each step in its own process with its own time cap.

Steps (``--list`` prints them): masked retraining keeps pruned weights exactly zero (plain, bf16, bf16 with
gradient checkpointing); gated == masked == physically pruned logits (LeNet5-Mini, ViT-B/16, and the ConvNet
families when they are registered); ``hfprune prune`` of a random ViT-B/16 and of a random LLaVA whose decoder
has Phi-2's layer shape (8 layers by default, ``--llava-layers 32`` for its full depth) with every unstructured
method; GMP at Phi-2's decoder shape against torch's ``global_unstructured``; the
masked-step overhead; batched generation at 729 image tokens; ``hfprune bench`` of a random ~1B Llama against its
FFN/KV-group and depth structured prunings (``benchmarks/llm_structured_speed.py``); oracle trials/hour of
LeNet5-Mini and ResNet56 with their retraining packed 1, 8, 32, 128 on one GPU (``benchmarks/packed_oracle.py``);
the bare-loop overhead of one trial.

A step runs in a child process (forked from this one, which imported torch but never touched CUDA, or a fresh
interpreter with ``--isolation spawn``): a crash, a CUDA out-of-memory error or a timeout ends that step only and
is reported ``failed`` with why; the others still run. The whole run keeps within ``--budget`` seconds (8 minutes
by default; ``--cap-scale`` multiplies the budget and every step's own cap, ``inf`` lifting them). Results:
``OUT/gpu_suite.json`` (per step: status ok/failed/skipped, why, figures, seconds),
``OUT/gpu_suite.md`` (a short table) and ``OUT/logs/STEP.log`` (each step's output).

    python benchmarks/gpu_suite.py --out gpu-results                  # on one H100/H200, < 8 min
    python benchmarks/gpu_suite.py --cpu-dry-run --out /tmp/dry       # every step at tiny sizes on the CPU
    python benchmarks/gpu_suite.py --cpu-dry-run --out /tmp/dry --fail masked_plain   # inject a failure
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (HERE, ROOT / "tests"):  # the other benchmark scripts and the tests' helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gpu_checks import Skip  # noqa: E402 - a step that cannot run here raises it
from isolated import finish, fork_keeps_cuda, one_line, run_forked, run_spawned  # noqa: E402

FAIL_ENV = "HFPRUNE_GPU_SUITE_FAIL"  # STEP[:raise|crash|hang],...: inject failures (as --fail does)
STATUSES = ("ok", "failed", "skipped")
INFINITY = float("inf")


@dataclass
class Context:
    """What every step gets: where it runs, how big, and a work folder shared by the steps of one run."""

    device: str
    dry: bool
    work: Path
    llava_layers: int = 8

    @property
    def sizes(self):
        from gpu_checks import Sizes

        return Sizes.tiny() if self.dry else Sizes.full(self.llava_layers)


@dataclass
class Step:
    name: str
    what: str
    run: Callable[[Context], dict]
    cap: float                 # seconds on a GPU
    dry_cap: float = 90.0      # seconds in the CPU dry run
    family: str | None = None  # skipped unless this model family is registered
    target: Callable[[dict], tuple[str, bool]] | None = None  # (target text, met) from the figures

    def cap_for(self, dry: bool, scale: float = 1.0, given: float | None = None) -> float:
        """The step's cap in seconds: ``given`` (a --cap) as it is, else its own cap times ``scale`` (--cap-scale;
        infinity: no cap, the step runs to its end)."""
        return given if given is not None else (self.dry_cap if dry else self.cap) * scale


# -- the benchmark scripts, run in the step's process --------------------------------------------------------------
def script(name: str, args: list, work: Path) -> dict:
    """Run ``benchmarks/NAME`` with ``args`` as ``__main__`` (its own argparse) and return its ``--json`` figures."""
    out = work / f"{Path(name).stem}.json"
    out.unlink(missing_ok=True)
    argv = sys.argv
    sys.argv = [str(HERE / name), *map(str, args), "--json", str(out)]
    try:
        runpy.run_path(str(HERE / name), run_name="__main__")
    except SystemExit as error:
        if error.code not in (None, 0):
            raise RuntimeError(f"{name} exited: {error.code}") from None
    finally:
        sys.argv = argv
    if not out.is_file():
        raise RuntimeError(f"{name} wrote no figures")
    return json.loads(out.read_text())


def gmp_threshold(ctx: Context) -> dict:
    size = ["--hidden", 64, "--layers", 2] if ctx.dry else ["--hidden", 2560, "--layers", 32]
    return script("gmp_threshold.py", [*size, "--device", ctx.device], ctx.work)


def masked_step_overhead(ctx: Context) -> dict:
    size = (["--hidden", 64, "--layers", 1, "--vocab", 512, "--batch", 2, "--seq", 16, "--steps", 3, "--warmup", 1]
            if ctx.dry else ["--hidden", 1024, "--layers", 8, "--batch", 16, "--seq", 512, "--mixed-precision", "bf16"])
    return script("masked_step_overhead.py", [*size, "--device", ctx.device], ctx.work)


def generation_throughput(ctx: Context) -> dict:
    size = (["--image-size", 28, "--samples", 2, "--batch-size", 2, "--new-tokens", 2, "--repeats", 1] if ctx.dry
            else ["--image-size", 384, "--samples", 16, "--batch-size", 8, "--new-tokens", 32, "--repeats", 3])
    return script("generation_throughput.py", [*size, "--device", ctx.device], ctx.work)


def trial_overhead(ctx: Context) -> dict:
    size = ["--repeats", 1, "--epochs", 1, "--train-limit", 300] if ctx.dry else ["--repeats", 3, "--epochs", 3]
    return script("trial_overhead.py", [*size, "--device", ctx.device], ctx.work)


def llm_structured_speed(ctx: Context) -> dict:
    """``hfprune bench`` of a random ~1B Llama vs the same with half its FFN and a quarter of its KV groups removed,
    and with a quarter of its layers removed (native configs: what a uniform structured pruning saves)."""
    size = (["--hidden", 48, "--intermediate", 128, "--layers", 4, "--heads", 4, "--kv-heads", 4, "--vocab", 512,
             "--prompt-length", 8, "--new-tokens", 2, "--repeats", 1, "--warmup", 0, "--dtype", "float32"] if ctx.dry
            else ["--batch-size", 1, "--prompt-length", 128, "--new-tokens", 128, "--repeats", 3])
    figures = script("llm_structured_speed.py", [*size, "--device", ctx.device, "--out", ctx.work / "llm_speed"],
                     ctx.work)
    figures.pop("bench", None)  # every model's figures stay in the step's log
    return figures


def _llm_speed_target(figures: dict) -> tuple[str, bool]:
    return ("decoder params <= 0.6x and decode >= 1.4x (FFN 50% + KV 25%); decode >= 1.25x (depth 25%)",
            all(target["met"] for target in figures["targets"].values()))


def trials_per_hour_lenet(ctx: Context) -> dict:
    """LeNet5-Mini oracle trials with their retraining packed 1, 8, 32, 128 on the GPU."""
    return script("packed_oracle.py", ["--cpu-dry-run"] if ctx.dry else ["--device", "cuda", "--epochs", 5], ctx.work)


def trials_per_hour_resnet56(ctx: Context) -> dict:
    """ResNet56 oracle trials packed 1, 8, 32, 128, on random images in CIFAR-10's Hub schema (throughput does not
    depend on the pixels)."""
    from hfprune.data.registry import DATASETS

    if "cifar10" not in DATASETS:
        raise Skip("dataset cifar10 not registered")
    data = random_cifar10(ctx.work / "cifar10_random", DATASETS["cifar10"], 64 if ctx.dry else 1000)
    size = ["--cpu-dry-run"] if ctx.dry else ["--device", "cuda", "--epochs", 1, "--train-limit", 1000,
                                              "--test-limit", 100, "--sequential", 4]
    return script("packed_oracle.py", [*size, "--family", "resnet_cifar", "--data-path", data], ctx.work)


def random_cifar10(path: Path, spec, n: int) -> Path:
    """``n`` train and 100 test random 32×32 RGB images in ``spec``'s columns, saved with ``save_to_disk``."""
    import datasets
    import numpy as np
    from PIL import Image

    if path.is_dir():
        return path
    rng = np.random.default_rng(0)
    features = datasets.Features({spec.image_column: datasets.Image(),
                                  spec.label_column: datasets.ClassLabel(num_classes=spec.num_labels)})
    splits = {split: datasets.Dataset.from_dict(
        {spec.image_column: [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(size)],
         spec.label_column: (np.arange(size) % spec.num_labels).tolist()}, features=features)
        for split, size in (("train", n), ("test", 100))}
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


# -- the steps -----------------------------------------------------------------------------------------------------
def _checks():
    import gpu_checks

    return gpu_checks


def _ratio_at_most(key: str, limit: float) -> Callable[[dict], tuple[str, bool]]:
    return lambda figures: (f"{key} <= {limit:g}", figures[key] <= limit)


def _speedup_at_least(figures: dict) -> tuple[str, bool]:
    return ">= 3x at batch 8", figures["speedup"] >= 3


def _packing_target(figures: dict) -> tuple[str, bool]:
    best = max(figures.get("packing_speedup", {1: 0}).values())
    return ">= 20x trials/hour at the best pack size", best >= 20


def _masked(case: str) -> Callable[[Context], dict]:
    return lambda ctx: _checks().masked_training(case, ctx.device)


def _equivalence(family: str) -> Callable[[Context], dict]:
    return lambda ctx: _checks().equivalence(family, ctx.device, ctx.sizes)


def _prune_llava(method: str) -> Callable[[Context], dict]:
    return lambda ctx: _checks().prune_llava(method, ctx.work, ctx.device, ctx.sizes)


UNSTRUCTURED = ("ump", "gmp", "onp", "pnp", "wanda", "owl", "sparsegpt")
STEPS: list[Step] = [
    Step("masked_plain", "masked retraining, fp32: pruned weights stay 0", _masked("plain"), 60),
    Step("masked_bf16", "masked retraining, bf16 autocast", _masked("bf16"), 60),
    Step("masked_bf16_checkpointing", "masked retraining, bf16 + gradient checkpointing",
         _masked("bf16_checkpointing"), 60),
    *[Step(f"equivalence_{family}", f"{label}: gated == masked == physically pruned logits", _equivalence(family), 45,
           family=family)
      for family, label in (("lenet5_mini", "LeNet5-Mini"), ("vit", "ViT-B/16"), ("resnet_cifar", "ResNet56"),
                            ("vgg_cifar", "VGG19"), ("hf_resnet", "HF ResNet"))],
    Step("gmp_threshold", "GMP radix select vs torch global_unstructured, Phi-2 decoder shape", gmp_threshold, 120),
    Step("masked_step_overhead", "step time with / without masks kept exact", masked_step_overhead, 75,
         target=_ratio_at_most("ratio", 1.02)),
    Step("generation_throughput", "batched vs one-by-one generation, 729 image tokens", generation_throughput, 75,
         target=_speedup_at_least),
    Step("trial_overhead", "one LeNet5-Mini trial vs a bare PyTorch loop", trial_overhead, 60,
         target=_ratio_at_most("ratio", 1.10)),
    Step("trials_per_hour_lenet", "LeNet5-Mini oracle trials/hour, retraining packed 1,8,32,128",
         trials_per_hour_lenet, 150, dry_cap=150, target=_packing_target),
    Step("trials_per_hour_resnet56", "ResNet56 oracle trials/hour, retraining packed 1,8,32,128",
         trials_per_hour_resnet56, 150, dry_cap=150, family="resnet_cifar"),
    Step("prune_vit_b16", "hfprune prune ViT-B/16 heads=0.5,ffn=0.5 (l1); reloaded == gated",
         lambda ctx: _checks().prune_vit(ctx.work, ctx.device, ctx.sizes), 60),
    *[Step(f"prune_llava_{method}", f"hfprune prune Phi-2-shape LLaVA --method {method} --sparsity 0.4375",
           _prune_llava(method), 90 if method in ("ump", "pnp", "sparsegpt") else 60) for method in UNSTRUCTURED],
    Step("llm_structured_speed", "hfprune bench: random ~1B Llama vs FFN 50% + KV 25% and depth 25% pruned",
         llm_structured_speed, 240, dry_cap=150, target=_llm_speed_target),  # last: writes three 1B checkpoints
]


# -- running one step in its own process ---------------------------------------------------------------------------
def injected(name: str, failures: dict[str, str]) -> None:
    """Make step ``name`` fail as asked: raise an error, kill its own process, or hang past its cap."""
    how = failures.get(name)
    if how == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "hang":
        time.sleep(10 ** 6)
    if how is not None:
        raise RuntimeError(f"injected failure ({FAIL_ENV} / --fail)")


def step_body(step: Step, ctx: Context, failures: dict[str, str]) -> dict:
    """What the step's process does: run the step and return its outcome (never raises)."""
    started = time.perf_counter()
    try:
        injected(step.name, failures)
        figures = step.run(ctx) or {}
        outcome = {"status": "ok", "why": "", "figures": figures}
        if step.target is not None:  # speed targets mean nothing at the dry run's sizes
            text, met = step.target(figures)
            outcome.update(target=text, target_met=None if ctx.dry else bool(met))
    except Skip as reason:
        outcome = {"status": "skipped", "why": str(reason), "figures": {}}
    except BaseException as error:  # noqa: BLE001 - a step's failure of any kind is its result
        traceback.print_exc()
        outcome = {"status": "failed", "why": one_line(error), "figures": {}}
    outcome["seconds"] = time.perf_counter() - started
    cuda_peak(outcome["figures"])
    return outcome


def cuda_peak(figures: dict) -> None:
    """The step's peak CUDA allocation, where it used CUDA."""
    import torch

    if torch.cuda.is_initialized():
        figures.setdefault("cuda_max_memory_allocated_gib", torch.cuda.max_memory_allocated() / 1024 ** 3)


def run_isolated(step: Step, ctx: Context, cap: float, logs: Path, failures: dict[str, str],
                 spawn_args: list[str] | None = None) -> dict:
    """``step`` in its own process group (forked, or this script with ``spawn_args`` in a fresh interpreter)
    within ``cap`` seconds: its outcome, or ``failed`` with the reason its process died."""
    log, result = logs / f"{step.name}.log", logs / f"{step.name}.result.json"
    if spawn_args is None:
        return run_forked(lambda: step_body(step, ctx, failures), cap, log, result)
    command = [sys.executable, str(Path(__file__).resolve()), *spawn_args, "--child", step.name,
               "--child-result", str(result)]
    return run_spawned(command, cap, log, result, cwd=ROOT)


# -- the suite -----------------------------------------------------------------------------------------------------
def parse_failures(text: str) -> dict[str, str]:
    failures = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, how = item.partition(":")
        if how not in ("", "raise", "crash", "hang"):
            raise SystemExit(f"--fail {item}: the mode must be raise, crash or hang")
        failures[name] = how or "raise"
    return failures


def preload() -> None:
    """Import what every step needs once, here, so that forked steps start at once (no CUDA is touched)."""
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import datasets  # noqa: F401
    import gpu_checks  # noqa: F401
    import hfprune.cli  # noqa: F401
    import hfprune.evaluation.generation  # noqa: F401
    import hfprune.models  # noqa: F401
    import hfprune.oneshot.structured  # noqa: F401
    import hfprune.oneshot.unstructured  # noqa: F401 - with the report's plotting: seconds
    import hfprune.study.executors  # noqa: F401
    import hfprune.study.oracle.trial  # noqa: F401
    import llava_fixtures  # noqa: F401
    import test_masked_training  # noqa: F401
    from transformers import LlavaForConditionalGeneration, ViTForImageClassification  # noqa: F401


def markdown(report: dict) -> str:
    lines = [f"# GPU suite — {report['mode']}", "",
             f"{report['started']}, device {report['device']}, {report['seconds']:.0f} s in all; "
             f"ok {report['counts']['ok']}, failed {report['counts']['failed']}, "
             f"skipped {report['counts']['skipped']}", "",
             "| step | status | s | key figures | target | why |", "|---|---|---:|---|---|---|"]
    for name, step in report["steps"].items():
        met = {True: "met", False: "NOT met", None: "not judged"}[step.get("target_met")]
        target = f"{step['target']}: {met}" if "target" in step else ""
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.1f} | {key_figures(step['figures'])} | "
                     f"{target} | {step['why'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def key_figures(figures: dict, limit: int = 6) -> str:
    """The first few numeric figures (one level of nesting flattened), rounded."""
    flat = {}
    for key, value in figures.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        flat.update({f"{key}.{inner}" if inner != "" else key: number for inner, number in items})
    shown = []
    for key, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        shown.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value:,}")
        if len(shown) == limit:
            break
    return ", ".join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite_results"), help="where the results go")
    parser.add_argument("--cpu-dry-run", action="store_true", help="every step at tiny sizes on the CPU")
    parser.add_argument("--device", default="cuda", help="device of the checks (not with --cpu-dry-run)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run [default: 480 on the GPU, 300 for the dry run, which takes "
                             "about 3 min on a loaded 2-core machine]")
    parser.add_argument("--only", default="", help="comma-separated step names to run (default: all)")
    parser.add_argument("--fail", default="", help="STEP[:raise|crash|hang],...: make these steps fail (raise an "
                        f"error, SIGKILL themselves, or hang past their cap); ${FAIL_ENV} adds more")
    parser.add_argument("--cap", action="append", default=[], help="STEP=SECONDS: another time cap for a step")
    parser.add_argument("--cap-scale", type=float, default=1.0,
                        help="multiply every step's own cap and the budget by this (not --cap values); 'inf' runs "
                             "each step to its end, for a loaded machine where the caps are not what is checked")
    parser.add_argument("--llava-layers", type=int, default=8,
                        help="decoder layers (of Phi-2's shape) of the LLaVA prune checks; 32 is Phi-2's full depth")
    parser.add_argument("--isolation", choices=("auto", "fork", "spawn"), default="auto",
                        help="steps in forked children (fast) or fresh interpreters; auto: fork unless that "
                             "loses CUDA")
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        for step in STEPS:
            print(f"{step.name:<28} {step.cap:>4.0f} s  {step.what}")
        return
    if args.cpu_dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # nothing of the dry run may land on a GPU beside it
        os.environ["ACCELERATE_USE_CPU"] = "true"
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # torch.cuda.is_available() without CUDA init
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = "cpu" if args.cpu_dry_run else args.device
    out = args.out.resolve()
    ctx = Context(device, args.cpu_dry_run, out / "work", args.llava_layers)
    failures = {**parse_failures(os.environ.get(FAIL_ENV, "")), **parse_failures(args.fail)}
    by_name = {step.name: step for step in STEPS}
    if args.child:  # a spawned step
        finish(lambda: step_body(by_name[args.child], ctx, failures), args.child_result)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(by_name)
    unknown = [name for name in [*names, *failures] if name not in by_name]
    if unknown:
        raise SystemExit(f"unknown step(s) {', '.join(unknown)}; --list shows them")
    caps = {}
    for item in args.cap:
        name, _, seconds = item.partition("=")
        if name not in by_name or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"--cap {item}: give STEP=SECONDS with a step from --list")
        caps[name] = float(seconds)
    if not args.cap_scale > 0:
        raise SystemExit(f"--cap-scale {args.cap_scale}: give a positive factor (or inf)")

    started_at, started = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    logs = out / "logs"
    shutil.rmtree(ctx.work, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    ctx.work.mkdir(parents=True)
    preload()
    from hfprune.models import FAMILIES

    isolation = args.isolation
    if isolation == "auto":
        isolation = "fork" if device == "cpu" or fork_keeps_cuda() else "spawn"
    spawn_args = None
    if isolation == "spawn":
        spawn_args = ["--out", str(out), "--device", device, "--llava-layers", str(args.llava_layers),
                      "--fail", args.fail, *(["--cpu-dry-run"] if args.cpu_dry_run else [])]
    budget = (args.budget or (300.0 if args.cpu_dry_run else 480.0)) * args.cap_scale
    print(f"gpu suite: {len(names)} steps on {device} ({'dry run' if args.cpu_dry_run else 'full size'}), "
          f"isolation {isolation}, budget {budget:.0f} s; logs in {logs}", flush=True)
    steps = {}
    for name in names:
        step = by_name[name]
        left = budget - (time.perf_counter() - started)
        if step.family is not None and step.family not in FAMILIES:
            steps[name] = {"status": "skipped", "why": "family not installed", "figures": {}, "seconds": 0.0}
        elif left < 5:
            steps[name] = {"status": "skipped", "why": f"the suite's budget of {budget:.0f} s was spent",
                           "figures": {}, "seconds": 0.0}
        else:
            cap = min(step.cap_for(args.cpu_dry_run, args.cap_scale, caps.get(name)), left)
            steps[name] = run_isolated(step, ctx, cap, logs, failures, spawn_args)
        result = steps[name]
        print(f"{name:<28} {result['status']:<8} {result['seconds']:6.1f} s  "
              f"{result['why'] or key_figures(result['figures'], 3)}", flush=True)
    counts = {status: sum(step["status"] == status for step in steps.values()) for status in STATUSES}
    report = {"mode": "cpu dry run" if args.cpu_dry_run else "gpu", "device": device, "isolation": isolation,
              "started": started_at, "seconds": time.perf_counter() - started,
              "budget_s": budget if budget != INFINITY else None,
              "cap_scale": args.cap_scale if args.cap_scale != INFINITY else "inf",
              "counts": counts, "steps": steps}
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_suite.md").write_text(markdown(report))
    shutil.rmtree(ctx.work, ignore_errors=True)  # checkpoints of several GB at full size
    print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{report['seconds']:.0f} s; {out / 'gpu_suite.json'}, {out / 'gpu_suite.md'}")


if __name__ == "__main__":
    main()
