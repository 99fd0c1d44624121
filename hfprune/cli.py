"""The ``hfprune`` command line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from hfprune.cli_prune import app as prune_app
from hfprune.errors import HfpruneError, Interrupted

app = typer.Typer(
    help="Prune Hugging Face models and run oracle-pruning studies.",
    rich_markup_mode=None,  # plain help: option names never cut, wrapped to the terminal
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(prune_app, name="prune")



def _resolve_recipe(recipe: str) -> Path:
    """A path, or the name of a shipped recipe (``quickstart`` → the shipped recipes/quickstart.yaml).

    A shipped recipe is used only for a bare name (no folder in it) that is not a file here: a path that does
    not exist, or that is a directory, is an error and never silently another recipe.
    """
    from hfprune.resources import shipped_recipes

    path = Path(recipe)
    if path.is_file():
        return path
    if path.exists():
        raise HfpruneError(f"recipe '{recipe}' is a {'directory' if path.is_dir() else 'special file'}, not a "
                           "recipe file; give a YAML file or a name from `hfprune recipes`")
    bare = path.name == recipe and path.suffix in ("", ".yaml")
    shipped = shipped_recipes().get(path.stem) if bare else None
    if shipped is not None:
        return shipped
    if not bare:
        raise HfpruneError(f"recipe file '{recipe}' does not exist; give a YAML path or a name from "
                           "`hfprune recipes`")
    raise HfpruneError(f"recipe '{recipe}' not found; give a YAML path or a name from `hfprune recipes`")


@app.command()
def run(
    recipe: str = typer.Argument(..., metavar="RECIPE", help="recipe YAML path, or the name of a shipped recipe"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory [default: runs/<recipe name>]"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress: bars on a terminal, "
                                  "else one line per finished trial"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="run up to N trials at once on Ray (a "
                                          "local instance, or the cluster of --ray-address); pip install "
                                          "'hfprune[ray]'"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join a running Ray cluster: auto or "
                                              "HOST:PORT (`ray start --head`); trials take the recipe's "
                                              "execution resources"),
    log_with: Optional[str] = typer.Option(None, "--log-with", help="experiment trackers, comma-separated: "
                                           "tensorboard, wandb, mlflow (one run per trial, grouped by study)"),
    deterministic: bool = typer.Option(False, "--deterministic", help="deterministic torch kernels and a fixed "
                                       "thread count (execution.threads_per_trial): the same numbers on "
                                       "machines of one kind, whatever their core counts; slower"),
    pack: Optional[str] = typer.Option(None, "--pack", help="train trials of one shape together as one stacked "
                                       "model: a pack size, or auto (a short calibration on the device) "
                                       "\\[default: the recipe's execution.pack]"),
    yes: bool = typer.Option(False, "--yes", help="run a study of more trials than execution.max_trials (the count "
                             "is printed before any work)"),
) -> None:
    """Run (or resume) the study a recipe describes, then write its report."""
    from hfprune.config.schema import read_yaml
    from hfprune.study.sparse.plan import refuse_before_the_engine

    path = _resolve_recipe(recipe)
    document = read_yaml(path, "recipe")
    refuse_before_the_engine(document, go_on=yes)  # a huge sparse study: counted and refused before torch is imported
    from hfprune.study.registry import parse_recipe, print_study_summary, report_study
    from hfprune.study.runner import run_study

    parsed = parse_recipe(document, source=str(path))
    directory = out or Path("runs") / parsed.name
    try:
        trackers = [name.strip() for name in (log_with or "").split(",") if name.strip()]
        result = run_study(parsed, directory, progress=progress, workers=workers, ray_address=ray_address,
                           log_with=trackers, deterministic=deterministic, pack=_pack_size(pack), yes=yes)
    except KeyboardInterrupt:
        raise Interrupted(f"finished trials are saved in {directory}. Run the same command to resume.") from None
    from accelerate import PartialState

    if PartialState().is_main_process:  # the state run_study set up, whatever its mixed precision
        summary = report_study(directory, plots=parsed.report.plots)
        typer.echo(f"{result.trials_run} trials run, {result.trials_total} in the study; results in {directory}")
        print_study_summary(summary, directory)
        push = getattr(getattr(parsed, "export", None), "push_to_hub", None)
        if push:
            from hfprune.export.push import push_checkpoint

            url = push_checkpoint(directory / "best", push, private=parsed.export.private)
            typer.echo(f"pushed {directory / 'best'} to {url}")


def _pack_size(text: str | None) -> int | str | None:
    """``--pack``: a size in 1..4096 or auto."""
    if text is None or text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= 4096:
        raise typer.BadParameter(f"give a pack size in 1..4096 or auto, not {text!r}", param_hint="--pack")
    return int(text)


@app.command()
def report(
    path: Path = typer.Argument(..., metavar="PATH", help="a study directory, or a CSV/JSONL/JSON table of trials"),
    x: Optional[str] = typer.Option(None, "--x", help="criterion column [default: pruned_train_loss]"),
    y: Optional[str] = typer.Option(None, "--y", help="outcome column [default: final_test_acc]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object for the (x, y) pair"),
    higher_is_better: Optional[bool] = typer.Option(
        None, "--higher-is-better/--lower-is-better", help="direction of --y (inferred from its name if omitted)"),
    x_higher_is_better: Optional[bool] = typer.Option(
        None, "--x-higher-is-better/--x-lower-is-better", help="direction of --x (inferred from its name if omitted)"),
) -> None:
    """Correlation statistics (Kendall tau, validity, anomaly and counterexample ratios) and plots."""
    from rich.console import Console

    from hfprune.report.pairs import DEFAULT_X, DEFAULT_Y, print_pair_summary, report_table
    from hfprune.report.format import dumps

    if path.is_dir() and x is None and y is None and not as_json:  # a study: its report files, summarised
        from hfprune.study.registry import print_study_summary, report_study

        directions = {} if higher_is_better is None else {DEFAULT_Y: higher_is_better}
        if x_higher_is_better is not None:
            directions[DEFAULT_X] = x_higher_is_better
        summary = report_study(path, directions=directions)
        print_study_summary(summary, path)
        Console().print(f"report written to {path / 'report.md'} and {path / 'report.json'}")
        return
    result = report_table(path, x or DEFAULT_X, y or DEFAULT_Y, higher_is_better, x_higher_is_better)
    if as_json:
        typer.echo(dumps(result))
    else:
        print_pair_summary(result, Console())


@app.command("eval")
def eval_command(
    model: str = typer.Argument(..., metavar="MODEL", help="vision-language model: a local directory "
                                "(save_pretrained) or a Hub id"),
    tasks: str = typer.Option("", "--tasks", help="comma-separated benchmarks, e.g. gqa,sqa_img,textvqa,pope,mmvet"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory: <task>/predictions.jsonl, summary.md"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N samples of each benchmark"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="samples per generation batch"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="local copies of the benchmarks as DIR/<task>"),
    judge_base_url: Optional[str] = typer.Option(
        None, "--judge-base-url", help="OpenAI-compatible endpoint of the MM-Vet judge [env HFPRUNE_JUDGE_BASE_URL]; "
        "its key only from the environment: HFPRUNE_JUDGE_API_KEY"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="judge model [env HFPRUNE_JUDGE_MODEL]"),
    rescore: bool = typer.Option(False, "--rescore", help="score the saved predictions again without generating"),
    style: Optional[str] = typer.Option(None, "--style", help="scoring style: official (LLaVA's scripts) or "
                                        "lmms_eval [default: each spec's scoring.style, official]"),
    lm_eval_tasks: Optional[str] = typer.Option(None, "--lm-eval-tasks", help="comma-separated lm-eval tasks run "
                                                "on the language model alone (pip install 'hfprune[lmeval]')"),
    lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="directory of extra lm-eval "
                                                   "task YAMLs (e.g. over local data files)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="cap on the new tokens "
                                                 "per answer, below each spec's own (quick checks only)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Evaluate a vision-language model on benchmarks (resumable); print and write a summary table."""
    from rich.console import Console

    from hfprune.evaluation.benchmarks.judge import JudgeConfig
    from hfprune.evaluation.benchmark_suite import evaluate_model, summary_table

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    lm_tasks = [name.strip() for name in (lm_eval_tasks or "").split(",") if name.strip()]
    if not names and not lm_tasks:
        raise HfpruneError("nothing to evaluate: give --tasks (e.g. gqa,sqa_img,textvqa,pope,mmvet) or --lm-eval-tasks")
    judge = JudgeConfig.resolve(base_url=judge_base_url, model=judge_model)
    try:
        summary = evaluate_model(model, names, out, limit=limit, batch_size=batch_size, data_dir=data_dir,
                                 judge=judge, rescore=rescore, lm_eval_tasks=lm_tasks, lm_eval_include=lm_eval_include,
                                 max_new_tokens=max_new_tokens, progress=progress, style=style)
    except KeyboardInterrupt:
        raise Interrupted(f"finished answers are saved in {out}. Run the same command to resume.") from None
    Console().print(summary_table(summary))
    typer.echo(f"results in {out}/summary.md and {out}/summary.json")


@app.command()
def bench(
    models: list[str] = typer.Argument(..., help="checkpoints (directories or Hub ids) of causal LMs or "
                                       "vision-language models; the first is the baseline of the ratios"),
    batch_size: int = typer.Option(1, "--batch-size", help="sequences generated at once"),
    prompt_length: int = typer.Option(128, "--prompt-length", help="tokens of each (random, seeded) prompt"),
    new_tokens: int = typer.Option(64, "--new-tokens", help="greedy decode steps per run (no early stop)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (as saved), float32, bfloat16 or float16"),
    repeats: int = typer.Option(3, "--repeats", help="timed runs per model, interleaved; medians are reported"),
    warmup: int = typer.Option(1, "--warmup", help="untimed runs per model first"),
    seed: int = typer.Option(0, "--seed", help="seed of the prompts"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="load checkpoints saved with their "
                                           "own model code (non-uniform pruned widths)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the figures as JSON to this file "
                                           "('-': print only the JSON)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="say what is being measured on stderr"),
) -> None:
    """Prefill and decode speed, latency, memory, parameters and MACs of dense vs pruned LMs, side by side."""
    from rich.console import Console

    from hfprune.evaluation.speed import BenchSettings, bench as run_bench, bench_tables
    from hfprune.report.format import dumps

    settings = BenchSettings(batch_size, prompt_length, new_tokens, device, dtype, repeats, warmup, seed,
                             trust_remote_code)
    say = (lambda text: typer.echo(text, err=True)) if progress else None
    result = run_bench(models, settings, progress=say)
    if json_out == "-":
        typer.echo(dumps(result))
        return
    console = Console() if sys.stdout.isatty() else Console(width=160)
    for table in bench_tables(result):
        console.print(table)
    if json_out:
        from hfprune.io import write_json_atomically

        write_json_atomically(Path(json_out), result)
        typer.echo(f"figures in {json_out}")


@app.command()
def methods() -> None:
    """List the pruning methods: structured criteria, unstructured methods and sparse-training methods, with their
    options."""
    from hfprune.pruning.structured.importance import IMPORTANCES
    from hfprune.pruning.unstructured import METHODS

    for name, importance in IMPORTANCES.items():
        needs = " (needs --calibration-data)" if importance.needs_calibration else ""
        options = [f"{key}={field.default!r}" for key, field in type(importance).model_fields.items()]
        typer.echo(f"{name:<12} structured criterion{needs}; options: {', '.join(options) or 'none'}")
    for name, method in METHODS.items():
        options = [f"{key}={field.default!r}" for key, field in method.model_fields.items()
                   if key not in ("name", "label")]
        needs = " (needs --calibration-data)" if method().needs_calibration else ""
        typer.echo(f"{name:<12} unstructured method{needs}; options: {', '.join(options) or 'none'}")
    from hfprune.pruning.sparse_training.registry import SPARSE_METHODS

    for name, method in SPARSE_METHODS.items():
        options = [f"{key}={field.default!r}" for key, field in method.model_fields.items() if key != "name"]
        when = "at initialisation" if method.at_initialisation else "during or after training"
        typer.echo(f"{name:<12} sparse-training method ({when}; recipes' sparse.methods); options: "
                   f"{', '.join(options) or 'none'}; packs: {method.packs}")


@app.command()
def convert(
    family: str = typer.Argument(..., metavar="FAMILY", help="checkpoint family to convert: tinyllava"),
    source: str = typer.Argument(..., metavar="SRC", help="the public checkpoint: a local directory or a Hub id"),
    out: Path = typer.Option(..., "--out", "-o", help="new or empty output directory"),
    layout: str = typer.Option("auto", "--layout", help="auto, legacy (bczhou/TinyLLaVA-3.1B) or factory "
                               "(tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B)"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (as stored), float16, bfloat16 or float32"),
    vision_tower: Optional[str] = typer.Option(
        None, "--vision-tower", metavar="SRC", help="legacy layout: the SigLIP vision tower checkpoint (a local "
        "directory or a Hub id), in place of the checkpoint's own; default: the checkpoint's own tower, else the "
        "one its config's mm_vision_tower names"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Convert a public TinyLLaVA-3.1B checkpoint to a plain transformers LlavaForConditionalGeneration."""
    if family != "tinyllava":
        raise HfpruneError(f"unknown family '{family}' to convert; known: tinyllava")
    from hfprune.convert import convert_tinyllava

    converted = convert_tinyllava(source, out, layout=layout, dtype=dtype, vision_tower=vision_tower,
                                  progress=progress)
    typer.echo(f"converted {source} to {converted}; load it with LlavaForConditionalGeneration.from_pretrained "
               f"and LlavaProcessor.from_pretrained")


@app.command()
def recipes() -> None:
    """List the shipped recipes with one line each."""
    from hfprune.resources import shipped_recipes

    for path in shipped_recipes().values():
        data = yaml.safe_load(path.read_text()) or {}
        description = " ".join(str(data.get("description", "")).split())
        typer.echo(f"{path.stem:<24} {description}")


@app.command()
def push(
    directory: Path = typer.Argument(..., metavar="DIRECTORY", help="checkpoint folder: hfprune prune's --out, or a "
                                     "study's best/"),
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="Hub repository, NAMESPACE/NAME (created if missing)"),
    private: bool = typer.Option(False, "--private", help="create the repository as private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to push to [default: main]"),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="commit message"),
) -> None:
    """Upload a pruned checkpoint with its model card; the token comes from `hf auth login` or HF_TOKEN."""
    from hfprune.export.push import push_checkpoint

    url = push_checkpoint(directory, repo_id, private=private, revision=revision, commit_message=message)
    typer.echo(f"pushed {directory} to {url}")


@app.command()
def score(
    benchmark: str = typer.Argument(..., metavar="BENCHMARK", help="gqa, sqa_img, textvqa, textvqa_ocr, pope, "
                                    "mmvet, or a spec YAML"),
    file: Path = typer.Argument(..., metavar="FILE", help="JSONL, one row per sample: 'prediction' (the raw model "
                                "output) and the benchmark's reference fields (see the README)"),
    style: Optional[str] = typer.Option(None, "--style", help="official (LLaVA's scripts) or lmms_eval "
                                        "[default: the spec's scoring.style, official]"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the headline and the other metrics"),
    per_sample: Optional[Path] = typer.Option(None, "--per-sample", help="write one JSONL row per input row, in "
                                              "input order, with its score and what was parsed"),
    judge_base_url: Optional[str] = typer.Option(None, "--judge-base-url", help="MM-Vet judge endpoint, as in eval"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="MM-Vet judge model, as in eval"),
) -> None:
    """Score answers produced by any tool, as the official scripts (or lmms-eval) would."""
    from hfprune.evaluation.benchmarks.judge import JudgeConfig
    from hfprune.evaluation.score_command import run_score_command

    run_score_command(benchmark, file, style=style, as_json=as_json, per_sample=per_sample,
                      judge=JudgeConfig.resolve(base_url=judge_base_url, model=judge_model))


@app.command()
def diagnose(
    path: Path = typer.Argument(..., metavar="PATH", help="a checkpoint directory (save_pretrained) of any hfprune "
                                "family, or a study directory with --trial"),
    trial: Optional[str] = typer.Option(None, "--trial", help="with a study directory: the trial whose checkpoint "
                                        "(checkpoints/<trial>, or best/) to analyse; 'best' for best/"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (per-layer rows and totals)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="MLP checkpoints: draw the network, disconnected "
                                        "weights marked, to this PNG"),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=1, max=4096, help="image models whose config "
                                             "gives no image size (e.g. an HF ResNet): the side of the images, "
                                             "e.g. 224"),
) -> None:
    """Disconnected paths and effective sparsity: which nonzero weights lie on no input→output path."""
    from hfprune.diagnose import diagnose_checkpoint, mlp_weights

    connectivity, model, checkpoint = diagnose_checkpoint(path, trial, input_size)
    if plot is not None:
        from hfprune.report.connectivity_plot import draw_mlp

        weights, effective = mlp_weights(model, connectivity)
        draw_mlp(weights, effective, plot, title=f"{checkpoint.name}: effective sparsity "
                                                 f"{connectivity.effective_sparsity:.4f}")
    if as_json:
        typer.echo(connectivity.to_json())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"connectivity of {checkpoint}")
    for column in ("layer", "total", "nonzero", "effective", "no path to output", "no path from input",
                   "dead units"):
        table.add_column(column, justify="left" if column == "layer" else "right", no_wrap=column == "layer")
    for row in connectivity.layers:
        table.add_row(row.name, f"{row.total:,}", f"{row.nonzero:,}", f"{row.effective:,}",
                      f"{row.no_path_to_output:,}", f"{row.no_path_from_input:,}", f"{row.dead_units}/{row.units}")
    totals = connectivity.totals()
    table.add_row("all", f"{connectivity.total:,}", f"{connectivity.nonzeros:,}",
                  f"{connectivity.effective_nonzeros:,}", f"{totals['no_path_to_output']:,}",
                  f"{totals['no_path_from_input']:,}", str(totals["dead_units"]), style="bold")
    Console().print(table)
    typer.echo(f"sparsity {connectivity.sparsity:.4f}, effective sparsity {connectivity.effective_sparsity:.4f}, "
               f"removable nonzeros {connectivity.removable:,}" + (f"; drawing in {plot}" if plot else ""))


INTERRUPTED_AGAIN = "interrupted three times: stopping at once (everything recorded so far is kept)"
NOTHING_HALF_WRITTEN = "nothing is left half-written (hfprune writes whole files or none). Run the same command again."


def _stop_on_interrupts() -> None:
    """Ctrl-C and SIGTERM stop the command once: the first raises KeyboardInterrupt (the command closes what it
    has open and says what is kept), further ones while it closes are ignored, the third stops at once."""
    count = [0]

    def interrupt(signum, frame):
        count[0] += 1
        if count[0] == 1:
            raise KeyboardInterrupt
        if count[0] >= 3:
            sys.stderr.write(f"\n{INTERRUPTED_AGAIN}\n")
            sys.stderr.flush()
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def main() -> None:
    """Entry point: user errors print one line on stderr and exit with status 2; an interrupt one line saying what
    is kept and how to resume, status 130; secrets never print."""
    from hfprune.errors import storage_problem
    from hfprune.secrets import redact, redact_standard_streams

    redact_standard_streams()  # no secret in any output: ours, libraries', tracebacks
    _stop_on_interrupts()
    try:
        app()
    except Interrupted as stop:
        typer.secho(f"\ninterrupted; {redact(str(stop))}", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except HfpruneError as error:
        typer.secho(f"error: {redact(str(error))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as error:
        line = storage_problem(error)
        if line is None:
            raise
        typer.secho(f"error: {redact(line)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except SystemExit as exiting:
        if exiting.code == 130:  # a command that says nothing of its own: typer turned the interrupt into 130
            typer.secho(f"\ninterrupted; {NOTHING_HALF_WRITTEN}", fg=typer.colors.YELLOW, err=True)
        raise
