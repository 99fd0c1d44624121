"""What every study recipe has, whatever its kind: the model, the data, evaluation, report and execution sections.

A study kind (see :mod:`hfprune.study.registry`) extends :class:`StudyRecipe` with its own sections: the oracle
study its ``pruning``/``retrain`` sections, the sparse-training study its ``sparse``/``training`` sections.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section, one_of
from hfprune.data.registry import DATASETS, KNOWN_DATASETS, TASK_DATA
from hfprune.models import FAMILIES
from hfprune.train.sections import Count


class ModelSection(Section):
    family: str = Field(description="registered model family, e.g. lenet5_mini")
    pretrained: Optional[str] = Field(None, description="local dir or Hub id of a dense checkpoint; skips pretraining")
    config: dict[str, Any] = Field(default_factory=dict, description="overrides of the family's config")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the loaded pretrained weights ('auto': as saved); retraining a bf16 model "
                            "without DeepSpeed updates bf16 weights directly, so prefer float32 + bf16 mixed precision")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        return one_of(family, FAMILIES, "model family")

    @model_validator(mode="after")
    def _overrides_fit_family(self) -> "ModelSection":
        problems = FAMILIES[self.family].config_problems(self.config)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DataSection(Section):
    dataset: str = Field(description="registered dataset name")
    path: Optional[str] = Field(None, description="local copy of a Hub dataset (save_to_disk or Hub layout); "
                                                  "for llava_v1_5 the conversations JSON")
    image_root: Optional[str] = Field(None, description="llava_v1_5: folder the JSON's image paths are relative to")
    max_length: int = Field(2048, gt=0, description="llava_v1_5: token limit of one tokenised conversation")
    image_size: int = Field(32, ge=8, le=4096)
    image_processor: Optional[str] = Field(
        None, description="local dir or Hub id whose image processor (mean, std, resampling) preprocesses the "
                          "images of lazily loaded datasets such as imagenet_1k [default: model.pretrained]")
    augment: list[Literal["random_resized_crop", "hflip", "pad_crop"]] = Field(
        default_factory=list, description="training augmentations: per image for lazily loaded datasets "
                                          "(random_resized_crop, hflip), by whole batches on the device for "
                                          "in-memory ones (pad_crop: 4-pixel zero pad + random crop, hflip; "
                                          "on in the CIFAR recipes)")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader workers that decode lazily loaded datasets "
                                                      "(imagenet_1k); seeded per worker, pinned, persistent")
    train_limit: Optional[int] = Field(None, gt=0, description="use a fixed random subset of the train split")
    test_limit: Optional[int] = Field(None, gt=0, description="use a fixed random subset of the test split")
    validation_fraction: Optional[float] = Field(
        None, gt=0, lt=1, description="hold this fraction of the train split out (seeded) as the validation split "
                                      "that mask selection ranks by; never the test split")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, dataset: str) -> str:
        return one_of(dataset, KNOWN_DATASETS, "dataset")


class EvaluationSection(Section):
    batch_size: Count = 256
    loss_samples: int = Field(1000, gt=0, description="llava: training samples of the pruned train loss "
                                                      "(token-weighted mean over their supervised tokens)")
    benchmarks: list[str] = Field(default_factory=list, description="llava: final benchmarks, e.g. [sqa_img, "
                                                                     "textvqa, gqa, mmvet, pope] (see eval/)")
    benchmark_data_dir: Optional[str] = Field(None, description="llava: local copies of the benchmarks as DIR/<name>")
    benchmark_limit: Optional[int] = Field(None, gt=0, description="llava: only the first N samples per benchmark")
    max_new_tokens: Optional[int] = Field(None, gt=0, description="llava: cap on answer tokens (quick checks only)")


class ReportSection(Section):
    plots: bool = True


class CandidatesSection(Section):
    mode: Literal["auto", "exhaustive", "random"] = "auto"
    num: int = Field(1000, gt=0, le=1_000_000, description="random draws; 'auto' enumerates when there are at most this many")


class MaskSetting(Section):
    """Structured masks of one setting: the fraction of each group's units removed, and which masks to draw."""

    ratios: dict[str, float] = Field(description="group name -> fraction of its units to remove")
    name: Optional[str] = None
    candidates: CandidatesSection = CandidatesSection()

    @field_validator("ratios")
    @classmethod
    def _ratios_in_range(cls, ratios: dict[str, float]) -> dict[str, float]:
        if not ratios:
            raise ValueError("give at least one group, e.g. {conv1: 0.5}")
        for group, ratio in ratios.items():
            if not 0 < ratio < 1:
                raise ValueError(f"ratio of '{group}' must be in (0, 1), got {ratio}")
        return ratios

    @property
    def label(self) -> str:
        return self.name or "+".join(f"{group}@{ratio:g}" for group, ratio in self.ratios.items())


class ExecutionSection(Section):
    """Resources of one trial when ``hfprune run --workers N`` / ``--ray-address`` fans trials out on Ray."""

    gpus_per_trial: float = Field(1.0, gt=0, description="GPUs one trial takes (a fraction packs several trials on "
                                                         "one GPU, e.g. 0.25 = four); ignored where there is no GPU")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPU cores Ray reserves for one trial")
    threads_per_trial: int = Field(
        1, gt=0, le=1024, description="torch threads of one trial, in this process and on Ray alike, so that a "
                                      "study's records are the same however its trials run; for speed on many "
                                      "cores run trials side by side (--workers N) rather than raising it")
    max_retries: int = Field(3, ge=0, description="times a trial whose Ray worker died is run again")

    @field_validator("gpus_per_trial")
    @classmethod
    def _one_device(cls, gpus: float) -> float:
        if gpus > 1:
            raise ValueError(f"a trial on Ray runs on at most one GPU, got {gpus:g}; trials that need several GPUs "
                             "each run one at a time over all GPUs with `accelerate launch -m hfprune run` "
                             "(no --workers)")
        return gpus


class StudyRecipe(Section):
    """The sections every study kind shares; a kind's recipe class adds its own."""

    # fields added after studies were run: left out of a recipe's fingerprint while unset, so those studies resume
    NEW_OPTIONAL_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {}

    kind: str  # each kind's recipe class narrows it to its own name (a Literal with that default)
    name: str
    description: str = ""
    seed: int = Field(0, ge=0, lt=1 << 32, description="seed of every random choice (masks, data order, init)")
    model: ModelSection
    data: DataSection
    evaluation: EvaluationSection = EvaluationSection()
    report: ReportSection = ReportSection()
    execution: ExecutionSection = ExecutionSection()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The study's folder is ``runs/<name>`` when no --out is given: a name that is a path could write elsewhere."""
        if not name.strip() or name in (".", "..") or any(part in name for part in ("/", "\\", "\0")) \
                or name.startswith("~"):
            raise ValueError(f"{name!r} is not a plain name (it becomes the folder runs/<name>); use letters, digits, "
                             "'-', '_' or '.', without '/' or '\\'")
        return name

    @model_validator(mode="after")
    def _data_of_family(self) -> "StudyRecipe":
        task, dataset = FAMILIES[self.model.family].task, DATASETS[self.data.dataset]
        if dataset.task != task:
            fitting = ", ".join(name for name, spec in DATASETS.items() if spec.task == task)
            raise ValueError(f"model.family '{self.model.family}' trains on {TASK_DATA[task]} ({fitting}); "
                             f"data.dataset '{self.data.dataset}' is not one")
        missing = [f"data.{name}" for name in dataset.requires if getattr(self.data, name) is None]
        if missing:
            raise ValueError(f"data.dataset '{self.data.dataset}' needs {' and '.join(missing)} ({dataset.description})")
        return self

    def fingerprint_exclude(self) -> dict:
        """What :meth:`fingerprint` leaves out: what changes no result (names, report, where trials run)."""
        return {"kind": True, "name": True, "description": True, "report": True, "execution": True}

    def fingerprint(self) -> str:
        """Hash of everything that changes results: two recipes with one fingerprint give the same trials."""
        payload = self.model_dump(mode="json", exclude=self.fingerprint_exclude())
        for section, names in self.NEW_OPTIONAL_FIELDS.items():
            for name in names:
                if payload[section].get(name) is None:
                    payload[section].pop(name, None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
