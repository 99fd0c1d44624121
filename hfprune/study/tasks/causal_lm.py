"""The task of a causal language model: training on a text corpus with the causal-LM loss.

The corpus (``data.dataset``: ``python_stdlib``, ``text`` at ``data.path``, ``wikitext2``) is split into train
and test documents (seeded, by document; :mod:`hfprune.data.text_corpus`) and cut into blocks of
``data.max_length`` tokens, every token supervised. Metrics, on ``evaluation.loss_samples`` seeded train blocks
or on the test blocks: ``loss`` (the token-weighted mean cross-entropy of the next token over all supervised
tokens: lower is better), ``perplexity`` (its exponential: lower is better) and ``acc`` (next-token top-1
accuracy: higher is better); ``evaluation.benchmarks`` adds lm-eval tasks to the final test metrics
(``<task>_score`` and ``mean_score``). A model pretrained by hfprune gets a tokenizer built here (``data.text``);
a pretrained checkpoint brings its own. The tokenizer is saved beside every exported checkpoint.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from accelerate import PartialState
from accelerate.utils import reduce
from torch.utils.data import Subset
from tqdm.auto import tqdm

from hfprune.data.offline_tokenizer import build_tokenizer
from hfprune.data.registry import DATASETS
from hfprune.data.stdlib_corpus import NAME as STDLIB, corpus_digest, stdlib_files
from hfprune.data.text import read_text_splits, token_stream, windows
from hfprune.data.text_corpus import TextSection, TokenBlocks, split_documents
from hfprune.errors import HfpruneError
from hfprune.evaluation.lm_loss import causal_lm_loss
from hfprune.models.generic.causal_lm import CausalLMAdapter
from hfprune.seeding import stable_seed
from hfprune.study.recipe import StudyRecipe
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import LossFn, batches_in_order, make_loader

IGNORE_INDEX = -100
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


@torch.no_grad()
def token_metrics(model: torch.nn.Module, dataset, batch_size: int, progress: bool = False,
                  sum_across=None) -> dict[str, float]:
    """Next-token loss (token-weighted mean cross-entropy), perplexity and top-1 accuracy of ``model`` over every
    supervised token of ``dataset`` (eval mode, no gradients): the logits at position t predict ``labels[t + 1]``,
    as transformers' causal-LM loss shifts them; labels −100 count for nothing. ``sum_across`` adds up the totals
    of processes that each measured a share."""
    device = next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, tokens
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(make_loader(dataset, batch_size, shuffle=False, seed=0), desc="token loss", leave=False,
                          disable=not progress):
            logits = model(input_ids=batch["input_ids"].to(device)).logits
            targets = batch["labels"][:, 1:].to(device)
            supervised = targets != IGNORE_INDEX
            scored = logits[:, :-1][supervised].float()
            wanted = targets[supervised]
            totals[0] += torch.nn.functional.cross_entropy(scored, wanted, reduction="sum").double()
            totals[1] += (scored.argmax(-1) == wanted).sum()
            totals[2] += supervised.sum()
    finally:
        model.train(was_training)
    if sum_across is not None:
        totals = sum_across(totals)
    loss_sum, correct, tokens = totals.tolist()
    if not tokens:
        raise HfpruneError("the evaluated blocks hold no supervised token; raise data.max_length or give more text")
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "acc": correct / tokens, "tokens": int(tokens)}


def _source(recipe: StudyRecipe) -> tuple[str, str | None]:
    """(what read_text_splits reads, the Hub configuration) for the recipe's dataset."""
    spec = DATASETS[recipe.data.dataset]
    if spec.name == STDLIB:
        if recipe.data.path is not None:
            raise HfpruneError(f"dataset '{STDLIB}' is this Python's standard library and takes no data.path; "
                               "remove it")
        return STDLIB, None
    if recipe.data.path is not None:
        return recipe.data.path, spec.hub_config if spec.hub_id else None
    return spec.hub_id, spec.hub_config


def _check_model_config(recipe: StudyRecipe, text: TextSection, tokenizer, seqlen: int) -> None:
    """A model built here must fit the tokenizer: its vocabulary holds every token, its special token ids are
    the tokenizer's, its positions reach a block."""
    overrides = recipe.model.config
    vocab = overrides.get("vocab_size")
    if vocab is None or vocab < len(tokenizer):
        raise HfpruneError(f"model.config.vocab_size: the {text.tokenizer} tokenizer has "
                           f"{len(tokenizer)} tokens; set vocab_size: {len(tokenizer)} (or more)")
    for name in TOKEN_IDS:
        wanted = getattr(tokenizer, name)
        if name in overrides and overrides[name] != wanted:
            raise HfpruneError(f"model.config.{name} is {overrides[name]}, the tokenizer's is {wanted}; set {name}: "
                               f"{wanted}")
    positions = overrides.get("max_position_embeddings")
    if positions is not None and positions < seqlen:
        raise HfpruneError(f"model.config.max_position_embeddings ({positions}) is shorter than a block "
                           f"(data.max_length {seqlen}); raise it or shorten the blocks")


class CausalLMTask:
    """Next-token prediction on token blocks of a text corpus: loss, perplexity and accuracy."""

    pruned_splits = ("train", "test")
    find_unused_parameters = False
    DIRECTIONS = {"loss": False, "perplexity": False, "acc": True}

    def __init__(self, recipe: StudyRecipe, progress: bool = True, calibration_samples: int = 128):
        text: TextSection = getattr(recipe.data, "text", None) or TextSection()
        pretrained = recipe.model.pretrained
        # a checkpoint of billions of parameters retrains for hours: keep it until the trial is recorded, and run
        # one trial at a time over all processes; a model built here is small
        self.keeps_retrained = pretrained is not None
        self.one_device_trials = pretrained is None
        source, config = _source(recipe)
        train_texts, test_texts = split_documents(read_text_splits(source, text.field, config), text, recipe.seed)
        seqlen = recipe.data.max_length
        if pretrained is not None:
            self.tokenizer = CausalLMAdapter.load_processor(pretrained)
        else:
            self.tokenizer = build_tokenizer(text.tokenizer, train_texts, text.vocab_size, text.min_frequency)
            _check_model_config(recipe, text, self.tokenizer, seqlen)
        train_stream = token_stream(self.tokenizer, train_texts)
        self.train_set = self._blocks(train_stream, seqlen, recipe.data.train_limit, stable_seed(recipe.seed, "train"),
                                      "train")
        self.test_set = self._blocks(token_stream(self.tokenizer, test_texts), seqlen, recipe.data.test_limit,
                                     stable_seed(recipe.seed, "test"), "test")
        evaluation = recipe.evaluation
        self.loss_set = self.train_set.subset(evaluation.loss_samples, stable_seed(recipe.seed, "loss samples"))
        self.calibration = TokenBlocks(windows(train_stream, calibration_samples, seqlen,
                                               stable_seed(recipe.seed, "calibration")))
        self.evaluation, self.progress, self.name = evaluation, progress, recipe.data.dataset
        self.facts = {"documents": {"train": len(train_texts), "test": len(test_texts)},
                      "blocks": {"train": len(self.train_set), "test": len(self.test_set)}, "seqlen": seqlen,
                      "tokenizer": len(self.tokenizer)}
        if source == STDLIB:
            self.facts["corpus"] = corpus_digest(stdlib_files(), [*train_texts, *test_texts])
        if evaluation.benchmarks:
            self._require_lm_eval()

    @staticmethod
    def _blocks(stream: torch.Tensor, seqlen: int, limit: int | None, seed: int, split: str) -> TokenBlocks:
        count = len(stream) // seqlen
        if count == 0:
            raise HfpruneError(f"the {split} split holds {len(stream)} tokens, fewer than one block of data.max_length "
                               f"{seqlen}; give more text (data.text.documents, test_fraction) or shorter blocks")
        return TokenBlocks(stream[:count * seqlen].reshape(count, seqlen)).subset(limit, seed)

    @staticmethod
    def _require_lm_eval() -> None:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise HfpruneError("evaluation.benchmarks of a causal LM are lm-eval tasks; install lm-eval: "
                               "pip install 'hfprune[lmeval]'") from None

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        return causal_lm_loss

    def data_shape(self) -> tuple[int, int, int]:
        """Nothing image-shaped: a causal LM built here is configured by model.config (model_type, sizes)."""
        return 0, 0, 0

    def calibration_batches(self, device: torch.device | None = None) -> Iterator[dict]:
        """Batches of the calibration windows (random blocks of the train split) with their labels, for
        calibration-aware methods and criteria that take a loss (Taylor-FO)."""
        yield from batches_in_order(self.calibration, self.evaluation.batch_size, device)

    def _metrics(self, model: torch.nn.Module, dataset) -> dict[str, float]:
        """:func:`token_metrics`; with several processes each measures its share and the totals add up."""
        state = PartialState()
        share = Subset(dataset, range(state.process_index, len(dataset), state.num_processes))
        sum_across = (lambda totals: reduce(totals, reduction="sum")) if state.num_processes > 1 else None
        return token_metrics(model, share, self.evaluation.batch_size, self.progress, sum_across)

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        if split not in ("train", "test"):
            raise HfpruneError(f"a causal-LM study has train and test splits, not '{split}'")
        metrics = self._metrics(model, self.loss_set if split == "train" else self.test_set)
        if split == "test" and self.evaluation.benchmarks:
            metrics.update(self._benchmark_scores(model, workdir))
        return metrics

    def _benchmark_scores(self, model: torch.nn.Module, workdir: Path | None) -> dict[str, float]:
        """lm-eval's tasks on the main process (the others wait): ``<task>_score`` (acc_norm, else acc, else the
        task's first metric) and their mean."""
        from hfprune.evaluation.lm_eval_bridge import run_lm_eval

        state, evaluation, scores = PartialState(), self.evaluation, {}
        if state.is_main_process:
            with tempfile.TemporaryDirectory() as scratch:
                results = run_lm_eval(model, self.tokenizer, list(evaluation.benchmarks), workdir or scratch,
                                      limit=evaluation.benchmark_limit, batch_size=evaluation.batch_size,
                                      include_path=evaluation.benchmark_data_dir)
            for task in evaluation.benchmarks:
                scores[f"{task}_score"] = headline(results.get(task, {}))
            scores["mean_score"] = sum(scores.values()) / len(scores)
        state.wait_for_everyone()
        return scores

    def direction(self, metric: str) -> bool | None:
        if metric in self.DIRECTIONS:
            return self.DIRECTIONS[metric]
        return True if metric.endswith("score") else None  # lm-eval scores; the rest (tokens) are counts

    def selection_metric(self, record) -> str:
        return "final_test_mean_score" if "final_test_mean_score" in record.metrics else "final_test_loss"

    def save_companions(self, directory: Path) -> None:
        """The tokenizer beside a saved model."""
        self.tokenizer.save_pretrained(directory)


def headline(metrics: dict) -> float:
    """The score of one lm-eval task's results: ``acc_norm``, else ``acc``, else its first numeric metric."""
    for key in ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    numbers = [value for key, value in metrics.items() if isinstance(value, (int, float)) and "stderr" not in key
               and key != "alias"]
    if not numbers:
        raise HfpruneError(f"lm-eval gave no score ({', '.join(metrics) or 'nothing'})")
    return float(numbers[0])
