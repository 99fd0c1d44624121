"""The task of a vision-language model: instruction tuning on LLaVA-1.5 data, scored on VQA benchmarks.

Any vision-language model transformers loads: the conversations are rendered with the model's own processor and
chat template, answers supervised (:func:`hfprune.data.chat.load_conversations`; TinyLLaVA's Phi template as
:mod:`hfprune.data.llava` renders it). The pruned train loss is the token-weighted mean loss over
``evaluation.loss_samples`` training conversations (docs/studies.md §4); the test metrics are the benchmark scores
(``final_test_<name>_score`` and their mean) and, with ``data.test_limit``, the loss on that many held-out
conversations.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from accelerate import PartialState
from accelerate.utils import reduce
from torch.utils.data import Subset

from hfprune.data.chat import load_conversations
from hfprune.data.llava import check_images, subsample
from hfprune.errors import HfpruneError, reason
from hfprune.models.generic.vision_language import VisionLanguageAdapter
from hfprune.evaluation.lm_loss import causal_lm_loss, pruned_train_loss
from hfprune.study.recipe import StudyRecipe
from hfprune.train.sections import TrainingSection
from hfprune.train.trainer import LossFn, batches_in_order


def split_indices(total: int, train_limit: int | None, test_limit: int | None, seed: int) -> tuple[list, list]:
    """(train, held-out test) sample indices: disjoint, deterministic in ``seed``."""
    test = subsample(total, test_limit, seed) if test_limit else []
    held_out = set(test)
    rest = [index for index in range(total) if index not in held_out]
    if train_limit and train_limit < len(rest):
        rest = [rest[i] for i in subsample(len(rest), train_limit, seed)]
    return rest, test


class VisionLanguageTask:
    """LLaVA-style instruction data for any vision-language model: causal-LM loss, benchmarks."""

    pruned_splits = ("train",)  # benchmarks before retraining would cost a full evaluation per trial
    find_unused_parameters = True  # a text-only batch leaves the vision tower and connector without gradients
    keeps_retrained = True  # hours of instruction tuning are not lost to a kill during the benchmarks
    one_device_trials = False  # a multi-billion-parameter retrain: accelerate launch / DeepSpeed over all GPUs

    def __init__(self, recipe: StudyRecipe, progress: bool = True, calibration_samples: int = 128):
        source = recipe.model.pretrained
        adapter = VisionLanguageAdapter()
        try:
            self.processor = adapter.load_processor(source)
            config = adapter.load_config(source)
        except HfpruneError as error:
            raise HfpruneError(f"model.pretrained: {error}") from None
        except (OSError, ValueError) as error:
            raise HfpruneError(f"model.pretrained: cannot load the config of '{source}' ({reason(error)})") from None
        data = load_conversations(recipe.data.path, recipe.data.image_root, self.processor,
                                  max_length=recipe.data.max_length, verify_images=False,
                                  image_seq_length=getattr(config, "image_seq_length", None))
        train, test = split_indices(len(data), recipe.data.train_limit, recipe.data.test_limit, recipe.seed)
        check_images([data.records[index] for index in (*train, *test)], recipe.data.image_root)  # only those used
        evaluation = recipe.evaluation
        self.name = recipe.data.dataset
        self.train_set = Subset(data, train)
        self.loss_set = Subset(data, [train[i] for i in subsample(len(train), min(evaluation.loss_samples, len(train)),
                                                                  recipe.seed + 1)])
        self.test_set = Subset(data, test) if test else None
        self.calibration_set = Subset(data, [train[i] for i in subsample(len(train), min(calibration_samples, len(train)),
                                                                         recipe.seed + 2)])
        self.evaluation = evaluation
        self.progress = progress

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        return causal_lm_loss

    def data_shape(self) -> tuple[int, int, int]:
        """Nothing to build a model from: vision-language models come pretrained (their families say so)."""
        return 0, 0, 0

    def calibration_batches(self, device: torch.device | None = None) -> Iterator[dict]:
        """Batches of the calibration conversations (for activation-aware pruning scores)."""
        yield from batches_in_order(self.calibration_set, self.evaluation.batch_size, device)

    def _token_loss(self, model: torch.nn.Module, dataset) -> dict[str, float]:
        """Token-weighted loss over ``dataset``; with several processes each measures its share and they add up."""
        state = PartialState()
        share = Subset(dataset, range(state.process_index, len(dataset), state.num_processes))
        sum_across = (lambda totals: reduce(totals, reduction="sum")) if state.num_processes > 1 else None
        measured = pruned_train_loss(model, share, batch_size=self.evaluation.batch_size, sum_across=sum_across,
                                     progress=self.progress)
        return {"loss": measured["loss"], "tokens": measured["tokens"]}

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        if split == "train":
            return self._token_loss(model, self.loss_set)
        metrics = self._token_loss(model, self.test_set) if self.test_set is not None else {}
        if self.evaluation.benchmarks:
            metrics.update(self._benchmark_scores(model, workdir))
        return metrics

    def _benchmark_scores(self, model: torch.nn.Module, workdir: Path | None) -> dict[str, float]:
        """Every process answers its share of the benchmarks; the main process gathers and scores them."""
        from hfprune.evaluation.benchmark_suite import answer_share, evaluate_model, merge_shares

        evaluation, state = self.evaluation, PartialState()
        tasks = list(evaluation.benchmarks)
        options = {"limit": evaluation.benchmark_limit, "batch_size": evaluation.batch_size,
                   "data_dir": evaluation.benchmark_data_dir, "max_new_tokens": evaluation.max_new_tokens,
                   "progress": self.progress}
        if workdir is None and state.num_processes > 1:
            raise HfpruneError("benchmarks on several processes need a workdir that all of them share")
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(workdir or scratch)
            if state.num_processes > 1:
                answer_share((model, self.processor), tasks, out, state.process_index, state.num_processes, **options)
                state.wait_for_everyone()
            if state.is_main_process:
                merge_shares(tasks, out)
                evaluate_model((model, self.processor), tasks, out, **options)  # scores; answers nothing left
            state.wait_for_everyone()
            summary = json.loads((out / "summary.json").read_text())
        scores = {f"{name}_score": score for name, score in summary["scores"].items()}
        return {**scores, "mean_score": summary["mean"]}

    def direction(self, metric: str) -> bool | None:
        if metric == "loss":
            return False
        return True if metric.endswith("score") else None  # benchmark scores; the rest (tokens) are counts

    @property
    def final_train_by_default(self) -> bool:
        """Oracle trials measure the train split after retraining when nothing else can rank them (no test split,
        no benchmarks): :meth:`selection_metric` falls back to it."""
        return self.test_set is None and not self.evaluation.benchmarks

    def selection_metric(self, record) -> str:
        for metric in ("final_test_mean_score", "final_test_loss"):
            if metric in record.metrics:
                return metric
        return "final_train_loss"

    def save_companions(self, directory: Path) -> None:
        """The processor (tokenizer, image processor, chat template) beside a saved model."""
        self.processor.save_pretrained(directory)
