"""The ``hfprune`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from hfprune.errors import HfpruneError

app = typer.Typer(
    help="Prune Hugging Face models and run oracle-pruning studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



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
    recipe: str = typer.Argument(..., help="recipe YAML path, or the name of a shipped recipe"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="study directory \\[default: runs/<recipe name>]"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress: bars on a terminal, "
                                  "else one line per finished trial"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="run up to N trials at once on Ray (a "
                                          "local instance, or the cluster of --ray-address); pip install "
                                          "'hfprune\\[ray]'"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join a running Ray cluster: auto or "
                                              "HOST:PORT (`ray start --head`); trials take the recipe's "
                                              "execution resources"),
    log_with: Optional[str] = typer.Option(None, "--log-with", help="experiment trackers, comma-separated: "
                                           "tensorboard, wandb, mlflow (one run per trial, grouped by study)"),
    deterministic: bool = typer.Option(False, "--deterministic", help="deterministic torch kernels and a fixed "
                                       "thread count (execution.threads_per_trial, else 1): the same numbers on "
                                       "machines of one kind, whatever their core counts; slower"),
) -> None:
    """Run (or resume) the study a recipe describes, then write its report."""
    from hfprune.study.registry import load_recipe, print_study_summary, report_study
    from hfprune.study.runner import run_study

    parsed = load_recipe(_resolve_recipe(recipe))
    directory = out or Path("runs") / parsed.name
    try:
        trackers = [name.strip() for name in (log_with or "").split(",") if name.strip()]
        result = run_study(parsed, directory, progress=progress, workers=workers, ray_address=ray_address,
                           log_with=trackers, deterministic=deterministic)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; finished trials are saved in {directory}. Run the same command to resume.",
                   err=True)
        raise typer.Exit(130) from None
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


@app.command()
def report(
    path: Path = typer.Argument(..., help="a study directory, or a CSV/JSONL/JSON table of trials"),
    x: Optional[str] = typer.Option(None, "--x", help="criterion column \\[default: pruned_train_loss]"),
    y: Optional[str] = typer.Option(None, "--y", help="outcome column \\[default: final_test_acc]"),
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
    model: str = typer.Argument(..., help="LLaVA model: a local directory (save_pretrained) or a Hub id"),
    tasks: str = typer.Option("", "--tasks", help="comma-separated benchmarks, e.g. gqa,sqa_img,textvqa,pope,mmvet"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory: <task>/predictions.jsonl, summary.md"),
    limit: Optional[int] = typer.Option(None, "--limit", help="only the first N samples of each benchmark"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="samples per generation batch"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="local copies of the benchmarks as DIR/<task>"),
    judge_base_url: Optional[str] = typer.Option(
        None, "--judge-base-url", help="OpenAI-compatible endpoint of the MM-Vet judge \\[env HFPRUNE_JUDGE_BASE_URL]; "
        "its key only from the environment: HFPRUNE_JUDGE_API_KEY"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="judge model \\[env HFPRUNE_JUDGE_MODEL]"),
    rescore: bool = typer.Option(False, "--rescore", help="score the saved predictions again without generating"),
    style: Optional[str] = typer.Option(None, "--style", help="scoring style: official (LLaVA's scripts) or "
                                        "lmms_eval \\[default: each spec's scoring.style, official]"),
    lm_eval_tasks: Optional[str] = typer.Option(None, "--lm-eval-tasks", help="comma-separated lm-eval tasks run "
                                                "on the language model alone (pip install 'hfprune\\[lmeval]')"),
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
        typer.echo(f"\ninterrupted; finished answers are saved in {out}. Run the same command to resume.", err=True)
        raise typer.Exit(130) from None
    Console().print(summary_table(summary))
    typer.echo(f"results in {out}/summary.md and {out}/summary.json")


@app.command()
def prune(
    model: str = typer.Argument(..., help="model to prune: a local directory (save_pretrained) or a Hub id"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory for the pruned checkpoint"),
    structure: Optional[str] = typer.Option(None, "--structure", help="structured: fractions to remove, by kind or "
                                            "group: heads=0.5,ffn=0.5 (ViT) or conv1=0.5 (LeNet); per layer e.g. "
                                            "layers.3.heads=0.25"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="unstructured (llava): fraction of the target "
                                             "weights to zero, e.g. 0.4375"),
    method: Optional[str] = typer.Option(None, "--method", help="structured: a criterion (default l1); unstructured: "
                                         "a method; `hfprune methods` lists both with their options"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="seed of the random criterion and the calibration subset"),
    calibration_data: Optional[str] = typer.Option(
        None, "--calibration-data", help="taylor_fo: a registered dataset, e.g. imagenet_1k; unstructured: a "
        "LLaVA-1.5 conversations JSON, images included (for wanda, owl, sparsegpt, --score activation and "
        "--loss-samples)"),
    calibration_path: Optional[str] = typer.Option(None, "--calibration-path", help="local copy of that dataset"),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="folder the LLaVA JSON's images are under"),
    calibration_samples: Optional[int] = typer.Option(None, "--calibration-samples", min=1,
                                                      help="calibration samples \\[default: 256 images / 128 "
                                                           "conversations]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="calibration batch size "
                                             "\\[default: 32 images / 8 conversations]; --select: retraining batch "
                                             "size \\[default: 128]"),
    target: Optional[list[str]] = typer.Option(None, "--target", help="unstructured: regex (full match) of Linear "
                                               "modules to prune; repeat for several \\[default: the model family's; "
                                               "llava: the language model's decoder q/k/v/dense/fc1/fc2]"),
    ignore: Optional[list[str]] = typer.Option(None, "--ignore", help="unstructured: regex of Linear modules to keep"),
    lam: Optional[float] = typer.Option(None, "--lambda", help="onp/pnp option lam: layer sparsities spread over "
                                        "[S-lambda, S+lambda] \\[default: 0.08]"),
    outlier_m: Optional[float] = typer.Option(None, "--outlier-m", help="onp option outlier_m: outlier when score > "
                                              "M x the layer's mean \\[default: 5]"),
    score: Optional[str] = typer.Option(None, "--score", help="onp option score: outlier score 'weight' (|w|) or "
                                        "'activation' (|w|*||x||, needs --calibration-data) \\[default: weight]"),
    variance: Optional[float] = typer.Option(None, "--variance", help="pnp option variance: share of variance the "
                                             "principal components explain \\[default: 0.9]"),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="unstructured (ump, wanda, sparsegpt): N:M "
                                          "semi-structured sparsity, e.g. 2:4 (N of every M consecutive input weights "
                                          "of a row are zero; --sparsity must be N/M); option granularity"),
    option: Optional[list[str]] = typer.Option(None, "--option", help="unstructured: any option of the method as "
                                               "KEY=VALUE (repeat for several), e.g. --option lam=0.1"),
    loss_samples: int = typer.Option(0, "--loss-samples", min=0, help="unstructured: measure the pruned train loss "
                                     "on this many --calibration-data conversations"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    device: Optional[str] = typer.Option(None, "--device", help="unstructured: where the method scores, calibrates "
                                         "and masks the model, e.g. cuda \\[default: cpu]"),
    select: Optional[str] = typer.Option(None, "--select", help="structured: choose the mask by retraining "
                                         "candidates (successive-halving), ranked on a validation split of "
                                         "--train-data; saves the chosen mask's fully retrained model"),
    candidates: int = typer.Option(64, "--candidates", min=1, help="--select: masks sampled (all when there are "
                                   "fewer)"),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="--select: registered dataset the "
                                             "candidates retrain on, e.g. cifar10, mnist_sample"),
    train_path: Optional[str] = typer.Option(None, "--train-path", help="--select: local copy of --train-data"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1, help="--select: a fixed random subset "
                                              "of the train split (quick runs)"),
    epochs: int = typer.Option(10, "--epochs", min=1, help="--select: full retraining epochs (the first rung "
                               "gets --min-fraction of them)"),
    lr: float = typer.Option(0.01, "--lr", min=0.0, help="--select: SGD learning rate (momentum 0.9, weight decay "
                             "5e-4, cosine schedule)"),
    eta: int = typer.Option(3, "--eta", min=2, help="--select: the best 1/eta go on after each rung"),
    min_fraction: float = typer.Option(0.1, "--min-fraction", min=0.0, max=1.0, help="--select: the first rung's "
                                       "share of --epochs"),
    validation_fraction: float = typer.Option(0.1, "--validation-fraction", min=0.0, max=1.0, help="--select: "
                                              "share of the train split held out to rank candidates"),
) -> None:
    """Prune a checkpoint: structurally (heads, FFN neurons, filters; physically smaller) with --structure, or
    unstructurally (e.g. UMP/GMP/ONP/PNP, Wanda, OWL, SparseGPT on a Llava model's decoder Linears, optionally N:M
    with --pattern) with --sparsity."""
    if (structure is None) == (sparsity is None):
        raise HfpruneError("give exactly one of --structure (structured pruning) and --sparsity (unstructured pruning "
                           "with --method; `hfprune methods` lists the methods)")
    if sparsity is not None and select is not None:
        raise HfpruneError("--select chooses among structured masks: use it with --structure, not --sparsity")
    if sparsity is not None:
        from hfprune.oneshot.unstructured import prune_unstructured_checkpoint
        from hfprune.pruning.unstructured import METHODS

        if method is None:
            raise HfpruneError(f"--sparsity needs --method {'|'.join(METHODS)}")
        flags = {"lam": lam, "outlier_m": outlier_m, "score": score, "variance": variance, "granularity": pattern}
        options = {**{key: value for key, value in flags.items() if value is not None}, **_key_values(option or [])}
        facts = prune_unstructured_checkpoint(
            model, method, sparsity, out, options=options, targets=target or None, ignore=ignore or (),
            calibration_data=calibration_data, image_root=image_root, calibration_samples=calibration_samples or 128,
            loss_samples=loss_samples, batch_size=batch_size or 8, seed=seed, progress=progress, device=device)
        loss = (f", pruned train loss {facts['metrics']['pruned_train_loss']:.4f}"
                if "pruned_train_loss" in facts["metrics"] else "")
        typer.echo(f"{method}: sparsity {facts['sparsity']:.4f} over {facts['target_weights']:,} target weights"
                   f"{loss}; saved to {out}")
        return
    if select is not None:
        from hfprune.oneshot.halving import select_checkpoint

        if method is not None or calibration_data is not None:
            raise HfpruneError("--select chooses the mask by retraining; drop --method and --calibration-data")
        facts = select_checkpoint(model, structure, out, select=select, candidates=candidates,
                                  train_data=train_data, train_path=train_path, train_limit=train_limit, epochs=epochs, lr=lr,
                                  batch_size=batch_size or 128, eta=eta, min_fraction=min_fraction,
                                  validation_fraction=validation_fraction, seed=seed, progress=progress)
        spent = facts["selection"]
        typer.echo(f"{select}: chose mask {facts['mask_id']} of {spent['candidates']} candidates in "
                   f"{spent['epochs_spent']} retraining epochs ({spent['epochs_spent'] / spent['exhaustive_epochs']:.0%} "
                   f"of retraining them all), final test accuracy {facts['final_test_acc']:.4f}; saved to {out}")
        return
    from hfprune.oneshot.structured import prune_checkpoint

    facts = prune_checkpoint(model, structure, method or "l1", out, seed=seed, calibration_data=calibration_data,
                             calibration_path=calibration_path, calibration_samples=calibration_samples or 256,
                             batch_size=batch_size or 32)
    macs = (f", MACs {facts['macs_before']:,} -> {facts['macs_after']:,}" if facts.get("macs_before") else "")
    typer.echo(f"parameters {facts['params_before']:,} -> {facts['params_after']:,}{macs}; saved to {out}")


def _key_values(items: list[str]) -> dict:
    """``["lam=0.1", "score=activation"]`` → ``{"lam": 0.1, "score": "activation"}`` (values read as YAML scalars)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HfpruneError(f"--option '{item}' is not KEY=VALUE (e.g. --option lam=0.1)")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


@app.command()
def methods() -> None:
    """List the pruning methods: structured criteria, unstructured methods and sparse-training methods, with their
    options."""
    from hfprune.pruning.structured.importance import IMPORTANCES
    from hfprune.pruning.unstructured import METHODS

    for name, importance in IMPORTANCES.items():
        needs = " (needs --calibration-data)" if importance.needs_calibration else ""
        typer.echo(f"{name:<12} structured criterion{needs}")
    for name, method in METHODS.items():
        options = [f"{key}={field.default!r}" for key, field in method.model_fields.items() if key not in ("name", "label")]
        needs = " (needs --calibration-data)" if method().needs_calibration else ""
        typer.echo(f"{name:<12} unstructured method{needs}; options: {', '.join(options) or 'none'}")
    from hfprune.pruning.sparse_training.registry import SPARSE_METHODS

    for name, method in SPARSE_METHODS.items():
        options = [f"{key}={field.default!r}" for key, field in method.model_fields.items() if key != "name"]
        when = "at initialisation" if method.at_initialisation else "during or after training"
        typer.echo(f"{name:<12} sparse-training method ({when}; recipes' sparse.methods); options: "
                   f"{', '.join(options) or 'none'}")


@app.command()
def convert(
    family: str = typer.Argument(..., help="checkpoint family to convert: tinyllava"),
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
    directory: Path = typer.Argument(..., help="checkpoint folder: hfprune prune's --out, or a study's best/"),
    repo_id: str = typer.Argument(..., help="Hub repository, NAMESPACE/NAME (created if missing)"),
    private: bool = typer.Option(False, "--private", help="create the repository as private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to push to \\[default: main]"),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="commit message"),
) -> None:
    """Upload a pruned checkpoint with its model card; the token comes from `hf auth login` or HF_TOKEN."""
    from hfprune.export.push import push_checkpoint

    url = push_checkpoint(directory, repo_id, private=private, revision=revision, commit_message=message)
    typer.echo(f"pushed {directory} to {url}")


@app.command()
def score(
    benchmark: str = typer.Argument(..., help="gqa, sqa_img, textvqa, textvqa_ocr, pope, mmvet, or a spec YAML"),
    file: Path = typer.Argument(..., help="JSONL, one row per sample: 'prediction' (the raw model output) and the "
                                "benchmark's reference fields (see the README)"),
    style: Optional[str] = typer.Option(None, "--style", help="official (LLaVA's scripts) or lmms_eval "
                                        "\\[default: the spec's scoring.style, official]"),
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
    path: Path = typer.Argument(..., help="a checkpoint directory (save_pretrained) of any hfprune family, or a "
                                "study directory with --trial"),
    trial: Optional[str] = typer.Option(None, "--trial", help="with a study directory: the trial whose checkpoint "
                                        "(checkpoints/<trial>, or best/) to analyse; 'best' for best/"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (per-layer rows and totals)"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="MLP checkpoints: draw the network, disconnected "
                                        "weights marked, to this PNG"),
) -> None:
    """Disconnected paths and effective sparsity: which nonzero weights lie on no input→output path."""
    from hfprune.diagnose import diagnose_checkpoint, mlp_weights

    connectivity, model, checkpoint = diagnose_checkpoint(path, trial)
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


def main() -> None:
    """Entry point: user errors print one line on stderr and exit with status 2; secrets never print."""
    from hfprune.errors import storage_problem
    from hfprune.secrets import redact, redact_standard_streams

    redact_standard_streams()  # no secret in any output: ours, libraries', tracebacks
    try:
        app()
    except HfpruneError as error:
        typer.secho(f"error: {redact(str(error))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as error:
        line = storage_problem(error)
        if line is None:
            raise
        typer.secho(f"error: {redact(line)}", fg=typer.colors.RED, err=True)
        sys.exit(2)
