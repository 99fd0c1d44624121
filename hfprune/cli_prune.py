"""``hfprune prune``: one subcommand per mode, each with only its own options.

- ``hfprune prune structured MODEL --structure heads=0.5,ffn=0.5`` — remove heads, neurons or filters by a
  criterion; the checkpoint is physically smaller;
- ``hfprune prune unstructured MODEL --method wanda --sparsity 0.5`` — zero single weights of Linear layers;
- ``hfprune prune select MODEL --structure conv1=0.5 --train-data mnist_sample`` — choose the structured mask by
  retraining candidates (successive halving).

Without the mode word the flags say it (``--sparsity``: unstructured; ``--select``: select; ``--structure``:
structured), so ``hfprune prune MODEL --structure ...`` and ``hfprune prune MODEL --method ump --sparsity S`` work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import click
import typer
import yaml
from typer.core import TyperGroup

from hfprune.errors import HfpruneError, Interrupted

MODES = {"structured": ("--structure",), "unstructured": ("--sparsity", "--list-targets"), "select": ("--select",)}


def _flags(args: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def _options(command) -> set[str]:
    """Every option name of a command (``--progress`` and ``--no-progress`` alike)."""
    return {name for param in command.params for name in [*getattr(param, "opts", []),
                                                          *getattr(param, "secondary_opts", [])]}


class ModeGroup(TyperGroup):
    """Dispatches ``hfprune prune MODEL --flags`` to the mode its flags name; an option of another mode is one
    line saying which."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not {"--help", "-h"} & set(args[:1]):
            args = [self._infer(args), *args]
        if args and args[0] in self.commands:
            self._refuse_foreign(args[0], args[1:])
        return super().parse_args(ctx, args)

    @staticmethod
    def _infer(args: list[str]) -> str:
        flags = _flags(args)
        if "--sparsity" in flags and "--structure" in flags:
            raise HfpruneError("give exactly one of --structure (structured pruning) and --sparsity (unstructured "
                               "pruning with --method; `hfprune methods` lists the methods)")
        if "--sparsity" in flags and "--select" in flags:
            raise HfpruneError("--select chooses among structured masks: use it with --structure, not --sparsity")
        for mode in ("select", "unstructured", "structured"):
            if flags & set(MODES[mode]):
                return mode
        if "--method" in flags:
            raise HfpruneError("--method needs --structure (a structured criterion) or --sparsity (an unstructured "
                               "method); `hfprune methods` lists both")
        raise HfpruneError("say how to prune: hfprune prune structured|unstructured|select MODEL ... (or give "
                           "--structure, --sparsity or --select); `hfprune prune MODE --help` lists each mode's "
                           "options")

    def _refuse_foreign(self, mode: str, args: list[str]) -> None:
        command = self.commands[mode]
        for flag in sorted(_flags(args) - _options(command) - {"--help"}):
            others = [name for name, other in self.commands.items() if name != mode and flag in _options(other)]
            if others:
                raise HfpruneError(f"{flag} applies to `hfprune prune {' / '.join(others)}`, not to pruning {mode}; "
                                   f"drop it (`hfprune prune {mode} --help` lists this mode's options)")


app = typer.Typer(cls=ModeGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Prune a checkpoint: structured (physically smaller), unstructured (weights zeroed) or by "
                       "selecting the structured mask that retrains best. The mode word may be left out: "
                       "--structure, --sparsity or --select says it.")

MODEL = typer.Argument(..., metavar="MODEL", help="model to prune: a local directory (save_pretrained) or a Hub id")
OUT = typer.Option(..., "--out", "-o", help="output directory for the pruned checkpoint")
SEED = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="seed of random choices and the calibration subset")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="show progress")


@app.command()
def structured(
    model: str = MODEL,
    out: Path = OUT,
    structure: str = typer.Option(..., "--structure", help="fractions to remove, by kind or group: heads=0.25 (query "
                                  "heads; with grouped-query attention they split evenly over the key/value groups), "
                                  "kv_groups=0.25 (whole key/value groups with their query heads), ffn=0.5 (FFN "
                                  "neurons), layers=0.25 (whole decoder layers), filters=0.5 or conv1=0.5 (CNNs); "
                                  "several joined by commas, e.g. heads=0.25,ffn=0.5; per group e.g. "
                                  "layers.3.heads=0.5"),
    method: str = typer.Option("l1", "--method", help="structured criterion (`hfprune methods`): random, l1, l2, "
                               "wanda, flap, taylor_fo, llm_pruner_taylor, block_influence (layers)"),
    allocation: str = typer.Option("uniform", "--allocation", help="how a kind's ratio spreads over the layers: "
                                   "uniform (every layer at the ratio), global (lowest scores over all layers), owl "
                                   "(per layer from its outlier ratio; needs --calibration-data)"),
    option: Optional[list[str]] = typer.Option(None, "--option", help="an option of the criterion as KEY=VALUE "
                                               "(repeat for several), e.g. --option compensate=true (flap), "
                                               "--option variant=vector (llm_pruner_taylor)"),
    outlier_m: float = typer.Option(5.0, "--outlier-m", min=0.0, help="owl: outlier when |W|*||X|| > M x the "
                                    "layer's mean"),
    lam: float = typer.Option(0.08, "--lambda", min=0.0, max=1.0, help="owl: layer ratios spread over "
                              "[S-lambda, S+lambda]"),
    seed: int = SEED,
    calibration_data: Optional[str] = typer.Option(None, "--calibration-data", help="language models: a .jsonl "
                                                   "(input_ids or text per row) or .txt file; image models: a "
                                                   "registered dataset, e.g. imagenet_1k (wanda, flap, taylor_fo, "
                                                   "llm_pruner_taylor, block_influence, --allocation owl)"),
    calibration_path: Optional[str] = typer.Option(None, "--calibration-path", help="local copy of that dataset"),
    calibration_samples: int = typer.Option(256, "--calibration-samples", min=1, help="calibration images or "
                                            "token sequences"),
    calibration_length: int = typer.Option(128, "--calibration-length", min=1, help="tokens per calibration "
                                           "sequence (language models)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="calibration batch size"),
) -> None:
    """Remove heads, key/value groups, FFN neurons, layers or filters chosen by a criterion; saves a physically
    smaller checkpoint (native where every layer keeps the same widths, else with its own model code)."""
    from hfprune.oneshot.structured import prune_checkpoint

    facts = prune_checkpoint(model, structure, method, out, seed=seed, calibration_data=calibration_data,
                             calibration_path=calibration_path, calibration_samples=calibration_samples,
                             batch_size=batch_size, allocation=allocation, options=_key_values(option or []),
                             outlier_m=outlier_m, lam=lam, calibration_length=calibration_length)
    macs = (f", MACs {facts['macs_before']:,} -> {facts['macs_after']:,}" if facts.get("macs_before") else "")
    kind = {"native": "; a native checkpoint", "own_code": "; own model code (trust_remote_code=True)"}.get(
        facts.get("checkpoint"), "")
    typer.echo(f"parameters {facts['params_before']:,} -> {facts['params_after']:,}{macs}{kind}; saved to {out}")


@app.command()
def unstructured(
    model: str = MODEL,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory for the pruned checkpoint"),
    method: Optional[str] = typer.Option(None, "--method", help="unstructured method (`hfprune methods`)"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="fraction of the target weights to zero, "
                                             "e.g. 0.4375"),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="N:M semi-structured sparsity (ump, wanda, "
                                          "sparsegpt), e.g. 2:4; --sparsity must be N/M; option granularity"),
    option: Optional[list[str]] = typer.Option(None, "--option", help="any option of the method as KEY=VALUE "
                                               "(repeat for several), e.g. --option lam=0.1"),
    lam: Optional[float] = typer.Option(None, "--lambda", help="onp/pnp option lam: layer sparsities spread over "
                                        "[S-lambda, S+lambda] [default: 0.08]"),
    outlier_m: Optional[float] = typer.Option(None, "--outlier-m", help="onp option outlier_m: outlier when score > "
                                              "M x the layer's mean [default: 5]"),
    score: Optional[str] = typer.Option(None, "--score", help="onp option score: 'weight' (|w|) or 'activation' "
                                        "(|w|*||x||, needs --calibration-data) [default: weight]"),
    variance: Optional[float] = typer.Option(None, "--variance", help="pnp option variance: share of variance the "
                                             "principal components explain [default: 0.9]"),
    target: Optional[list[str]] = typer.Option(None, "--target", help="regex (full match) of Linear modules to prune; "
                                               "repeat for several [default: the Linears of the model's blocks]"),
    ignore: Optional[list[str]] = typer.Option(None, "--ignore", help="regex of Linear modules to keep dense"),
    list_targets: bool = typer.Option(False, "--list-targets", help="print what would be pruned (name, shape, "
                                      "block, role) and the totals, and exit without pruning"),
    calibration_data: Optional[str] = typer.Option(None, "--calibration-data", help="data of the model's kind (wanda, "
                                                   "owl, sparsegpt, --score activation, --loss-samples): a causal "
                                                   "LM's text (.txt, .jsonl/.json with 'text', a save_to_disk "
                                                   "dataset); a VLM's LLaVA-1.5 conversations JSON; a vision "
                                                   "encoder's image folder or registered image dataset"),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="folder the conversations' images are under"),
    calibration_path: Optional[str] = typer.Option(None, "--calibration-path", help="local copy of a registered "
                                                   "image dataset (vision encoders)"),
    calibration_samples: int = typer.Option(128, "--calibration-samples", min=1, help="calibration samples "
                                            "(token blocks, conversations or images)"),
    seqlen: Optional[int] = typer.Option(None, "--seqlen", min=1, help="tokens per block of a causal LM's text "
                                         "[default: 2048, at most the model's context]"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="calibration batch size"),
    loss_samples: int = typer.Option(0, "--loss-samples", min=0, help="measure the pruned train loss of a language "
                                     "model on this many more samples of --calibration-data"),
    seed: int = SEED,
    device: Optional[str] = typer.Option(None, "--device", help="where the method scores, calibrates and masks, "
                                         "e.g. cuda [default: cpu]"),
    offload: Optional[str] = typer.Option(None, "--offload", help="cpu|disk: one decoder layer at a time on "
                                          "--device, the rest on the CPU, or on disk (read from MODEL's safetensors "
                                          "and written to --out block by block); wanda, owl, sparsegpt"),
    progress: bool = PROGRESS,
) -> None:
    """Zero single weights of Linear layers (UMP/GMP/ONP/PNP, Wanda, OWL, SparseGPT; N:M with --pattern) of any causal
    LM, vision-language model or ViT-like vision encoder."""
    from hfprune.oneshot.unstructured import prune_unstructured_checkpoint
    from hfprune.pruning.unstructured import METHODS

    if list_targets:
        _print_targets(model, target, ignore)
        return
    if method is None or sparsity is None:
        raise HfpruneError(f"pruning needs --method {'|'.join(METHODS)} and --sparsity S (or --list-targets to see "
                           "what would be pruned)")
    if out is None:
        raise HfpruneError("pruning needs --out DIR, the directory of the pruned checkpoint")
    flags = {"lam": lam, "outlier_m": outlier_m, "score": score, "variance": variance, "granularity": pattern}
    options = {**{key: value for key, value in flags.items() if value is not None}, **_key_values(option or [])}
    facts = prune_unstructured_checkpoint(
        model, method, sparsity, out, options=options, targets=target or None, ignore=ignore or (),
        calibration_data=calibration_data, image_root=image_root, calibration_path=calibration_path,
        calibration_samples=calibration_samples, loss_samples=loss_samples, seqlen=seqlen, batch_size=batch_size,
        seed=seed, progress=progress, device=device, offload=offload)
    loss = (f", pruned train loss {facts['metrics']['pruned_train_loss']:.4f}"
            if "pruned_train_loss" in facts["metrics"] else "")
    typer.echo(f"{method}: sparsity {facts['sparsity']:.4f} over {facts['target_weights']:,} target weights"
               f"{loss}; saved to {out}")


def _print_targets(model: str, target: Optional[list[str]], ignore: Optional[list[str]]) -> None:
    """``--list-targets``: one row per target Linear, then the totals."""
    from hfprune.oneshot.unstructured import listed_targets

    listed = listed_targets(model, target or None, ignore or ())
    rows = [(item.name, "x".join(map(str, item.shape)), "-" if item.block is None else str(item.block),
             item.role or "-") for item in listed]
    widths = [max(len(row[column]) for row in [("name", "shape", "block", "role"), *rows]) for column in range(4)]
    for row in [("name", "shape", "block", "role"), *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    weights = sum(math.prod(item.shape) for item in listed)
    blocks = len({item.block for item in listed if item.block is not None})
    typer.echo(f"{len(listed)} target Linears in {blocks} blocks, {weights:,} weights")


@app.command()
def select(
    model: str = MODEL,
    out: Path = OUT,
    structure: str = typer.Option(..., "--structure", help="fractions to remove, by kind or group, e.g. conv1=0.5"),
    select: str = typer.Option("successive-halving", "--select", help="how candidates are chosen: "
                               "successive-halving"),
    candidates: int = typer.Option(64, "--candidates", min=1, help="masks sampled (all when there are fewer)"),
    train_data: Optional[str] = typer.Option(None, "--train-data", help="registered dataset the candidates retrain "
                                             "on, e.g. cifar10, mnist_sample"),
    train_path: Optional[str] = typer.Option(None, "--train-path", help="local copy of --train-data"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1, help="a fixed random subset of the "
                                              "train split (quick runs)"),
    epochs: int = typer.Option(10, "--epochs", min=1, help="full retraining epochs (the first rung gets "
                               "--min-fraction of them)"),
    lr: float = typer.Option(0.01, "--lr", min=0.0, help="SGD learning rate (momentum 0.9, weight decay 5e-4, "
                             "cosine schedule)"),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="retraining batch size"),
    eta: int = typer.Option(3, "--eta", min=2, help="the best 1/eta go on after each rung"),
    min_fraction: float = typer.Option(0.1, "--min-fraction", min=0.0, max=1.0, help="the first rung's share of "
                                       "--epochs"),
    validation_fraction: float = typer.Option(0.1, "--validation-fraction", min=0.0, max=1.0, help="share of the "
                                              "train split held out to rank candidates"),
    seed: int = SEED,
    progress: bool = PROGRESS,
) -> None:
    """Choose the structured mask by retraining candidates on a validation split (successive halving); saves the
    chosen mask's fully retrained, physically pruned model."""
    from hfprune.oneshot.halving import select_checkpoint, selection_directory

    try:
        facts = select_checkpoint(model, structure, out, select=select, candidates=candidates, train_data=train_data,
                                  train_path=train_path, train_limit=train_limit, epochs=epochs, lr=lr,
                                  batch_size=batch_size, eta=eta, min_fraction=min_fraction,
                                  validation_fraction=validation_fraction, seed=seed, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted(f"the candidates retrained so far are saved in {selection_directory(out)}. Run the same "
                          "command to resume.") from None
    spent = facts["selection"]
    typer.echo(f"{select}: chose mask {facts['mask_id']} of {spent['candidates']} candidates in "
               f"{spent['epochs_spent']} retraining epochs ({spent['epochs_spent'] / spent['exhaustive_epochs']:.0%} "
               f"of retraining them all), final test accuracy {facts['final_test_acc']:.4f}; saved to {out}")


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
