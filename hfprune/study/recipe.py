"""What every study recipe has, whatever its kind: the model, the data, evaluation, report, execution and sweep
sections.

A study kind (see :mod:`hfprune.study.registry`) extends :class:`StudyRecipe` with its own sections: the oracle
study its ``pruning``/``retrain`` sections, the sparse-training study its ``sparse``/``training`` sections. The
``sweep`` section (grids over training settings × runs, expanded by :mod:`hfprune.study.sweep`) is every kind's.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section, one_of
from hfprune.train.sections import Count, ScheduleSection


def _families() -> dict:
    """The model families, imported when a recipe's model is validated (they import torch and transformers): the
    other sections load without them, so ``hfprune run`` counts a study, and refuses a huge one, at once."""
    from hfprune.models import FAMILIES

    return FAMILIES


def _datasets() -> tuple[dict, dict]:
    """The registered datasets and what each study task trains on, imported when a recipe's data is validated."""
    from hfprune.data.registry import DATASETS, TASK_DATA

    return DATASETS, TASK_DATA


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
        return one_of(family, _families(), "model family")

    @model_validator(mode="after")
    def _overrides_fit_family(self) -> "ModelSection":
        problems = _families()[self.family].config_problems(self.config)
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
        return one_of(dataset, _datasets()[0], "dataset")


class EvaluationSection(Section):
    batch_size: Count = 256
    loss_samples: int = Field(1000, gt=0, description="llava: training samples of the pruned train loss "
                                                      "(token-weighted mean over their supervised tokens)")
    benchmarks: list[str] = Field(default_factory=list, description="llava: final benchmarks, e.g. [sqa_img, "
                                                                     "textvqa, gqa, mmvet, pope] (see eval/)")
    benchmark_data_dir: Optional[str] = Field(None, description="llava: local copies of the benchmarks as DIR/<name>")
    benchmark_limit: Optional[int] = Field(None, gt=0, description="llava: only the first N samples per benchmark")
    max_new_tokens: Optional[int] = Field(None, gt=0, description="llava: cap on answer tokens (quick checks only)")
    final_train: Optional[bool] = Field(
        None, description="oracle trials: also evaluate the whole train split after retraining (final_train_*), "
                          "which no statistic reads [default: off; on for vision-language trials, whose progress "
                          "may rank by it]")


class ReportSection(Section):
    plots: bool = True
    x_axis: Literal["nonzeros", "model_nonzeros"] = Field(
        "nonzeros", description="sparse studies: the x-axis of the frontier: nonzero weights (biases never counted), "
                                "or model_nonzeros, weights + live biases as the reference code counts its Model NNZ")
    target_acc: list[float] = Field(
        [0.95], description="sparse studies: accuracies at which the report compares the sparsest model of the search "
                            "with each method's (the paper's benches: 0.95, 0.995)")

    @field_validator("target_acc")
    @classmethod
    def _accuracies(cls, targets: list[float]) -> list[float]:
        for target in targets:
            if not 0 < target <= 1:
                raise ValueError(f"give accuracies in (0, 1], such as 0.95, got {target}")
        return targets


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
    pack: Union[Literal["auto"], int] = Field(
        1, description="trials of one shape trained together as one stacked model (hfprune.train.packed): a pack "
                       "size, or auto (a short measured calibration on the device; 1 where one at a time is faster)")
    max_trials: Optional[int] = Field(
        None, gt=0, description="run a study of more trials than this without asking [default: 20,000; `hfprune "
                                "run --yes` goes on whatever the count]")

    @field_validator("pack")
    @classmethod
    def _pack_size(cls, pack):
        if pack != "auto" and (isinstance(pack, bool) or not 1 <= pack <= 4096):
            raise ValueError(f"give a pack size in 1..4096 or auto, got {pack!r}")
        return pack

    @field_validator("gpus_per_trial")
    @classmethod
    def _one_device(cls, gpus: float) -> float:
        if gpus > 1:
            raise ValueError(f"a trial on Ray runs on at most one GPU, got {gpus:g}; trials that need several GPUs "
                             "each run one at a time over all GPUs with `accelerate launch -m hfprune run` "
                             "(no --workers)")
        return gpus


SCHEDULE_NAMES = ("constant", "multistep", "cosine", "cosine_per_epoch")


class SweepSchedule(ScheduleSection):
    """A schedule of a sweep: the training schedules, plus the reference's ways to give them.

    ``cosine_per_epoch``: the cosine of torch's ``CosineAnnealingLR(T = epochs)`` stepped once per epoch (the
    reference), where ``cosine`` steps with every optimizer step. ``milestone_fractions`` (multistep): milestones at
    ceil(f · epochs), the reference's [0.3, 0.6]. A bare name stands for the schedule with its defaults.
    """

    name: Literal["constant", "multistep", "cosine", "cosine_per_epoch"] = "constant"
    milestone_fractions: Optional[list[float]] = Field(
        None, description="multistep: milestones at ceil(f · epochs) for each f in (0, 1), e.g. [0.3, 0.6]")
    label: Optional[str] = Field(None, description="the schedule's name in trial ids [default: from its settings]")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fractions(self) -> "SweepSchedule":
        fractions = self.milestone_fractions
        if fractions is not None:
            if self.name != "multistep" or self.milestones:
                raise ValueError("milestone_fractions gives a multistep schedule's milestones: set name: multistep "
                                 "and no milestones")
            if any(not 0 < f < 1 for f in fractions) or any(b <= a for a, b in zip(fractions, fractions[1:])):
                raise ValueError(f"milestone_fractions must increase within (0, 1), got {fractions}")
            if self.gammas is not None and len(self.gammas) != len(fractions):
                raise ValueError(f"gammas needs one factor per milestone fraction ({len(fractions)})")
        elif self.gammas is not None and len(self.gammas) != len(self.milestones):
            raise ValueError(f"gammas needs one positive factor per milestone ({len(self.milestones)})")
        return self

    @model_validator(mode="after")
    def _one_gamma_per_milestone(self) -> "SweepSchedule":  # replaces the parent's check: fractions count too
        return self

    @property
    def tag(self) -> str:
        """Its name in trial ids and reports: the label, else its name (and milestones)."""
        if self.label:
            return self.label
        if self.name == "multistep":
            marks = self.milestone_fractions or self.milestones
            return "step" + "-".join(f"{m:g}" for m in marks)
        return {"cosine_per_epoch": "cosine_epoch"}.get(self.name, self.name)

    def resolve(self, epochs: int) -> ScheduleSection:
        """The plain schedule a training run of ``epochs`` epochs takes."""
        if self.name == "cosine_per_epoch":
            factors = [(1 + math.cos(math.pi * epoch / epochs)) / 2 for epoch in range(max(1, epochs))]
            milestones = list(range(1, len(factors)))
            gammas = [factors[m] / factors[m - 1] for m in milestones]
            return ScheduleSection(name="multistep", milestones=milestones, gammas=gammas or None,
                                   warmup_epochs=self.warmup_epochs)
        fields = self.model_dump(exclude={"milestone_fractions", "label"})
        if self.milestone_fractions is not None:
            milestones = sorted({math.ceil(f * epochs) for f in self.milestone_fractions})
            fields["milestones"] = [m for m in milestones if 0 < m]
            if self.gammas is not None and len(fields["milestones"]) != len(self.gammas):
                raise ValueError(f"{self.tag}: milestone fractions fall on the same epoch at {epochs} epochs")
        return ScheduleSection(**fields)


class SweepPoint(Section):
    """One point of a sweep given by hand (as the paper's LR1 and LR2): any of lr, schedule and epochs."""

    label: Optional[str] = Field(None, description="the point's name in trial ids and reports")
    lr: Optional[float] = Field(None, gt=0, le=10)
    schedule: Optional[SweepSchedule] = None
    epochs: Optional[int] = Field(None, gt=0, le=1 << 24)


class SweepSection(Section):
    """Grids over training settings × runs: every candidate trains once per point and run.

    A grid (``lr`` × ``schedule`` × ``epochs``, each list left empty keeps the recipe's value) or hand-made
    ``points``. ``runs`` repeats every point; ``init`` (sparse studies) says where each run starts: ``per_run``, run
    r of every candidate from initialisation r (differences between candidates come from their masks); ``fixed``,
    every trial from one initialisation (the paper's fixed-initialisation experiments); ``fresh``, every trial its
    own. The report takes the best run of each candidate (``report: best``, the paper's points) or analyses every
    point as its own setting (``each``); every run keeps its record.
    """

    lr: list[float] = Field(default_factory=list, description="learning rates, e.g. [0.05, 0.1, 0.2]")
    schedule: list[SweepSchedule] = Field(
        default_factory=list, description="schedules: a name (cosine, cosine_per_epoch, constant) or a schedule, "
                                          "e.g. {name: multistep, milestone_fractions: [0.3, 0.6]}")
    epochs: list[int] = Field(default_factory=list, description="training epochs")
    points: list[SweepPoint] = Field(default_factory=list, description="points given by hand instead of a grid")
    runs: int = Field(1, gt=0, le=1000, description="runs of every point (seeds)")
    init: Literal["per_run", "fixed", "fresh"] = Field(
        "per_run", description="sparse studies: initialisation of each run: per_run (run r of every candidate "
                               "shares one), fixed (one for all), fresh (one per trial)")
    applies_to: Literal["training", "rounds"] = Field(
        "training", description="which training the sweep changes: the study's (sparse: training; oracle: "
                                "retrain), or an iterative oracle study's round retraining (pruning.schedule)")
    report: Optional[Literal["best", "each"]] = Field(
        None, description="best: a candidate's point is its best run (sparse default); each: every point is "
                          "analysed as its own setting (oracle default)")

    @field_validator("lr", "epochs")
    @classmethod
    def _positive_distinct(cls, values: list):
        if any(v <= 0 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"give distinct positive values, got {values}")
        return values

    @model_validator(mode="after")
    def _grid_or_points(self) -> "SweepSection":
        if self.points and (self.lr or self.schedule or self.epochs):
            raise ValueError("give grid axes (lr, schedule, epochs) or points, not both")
        tags = [schedule.tag for schedule in self.schedule]
        if len(set(tags)) != len(tags):
            raise ValueError(f"schedules must differ (give a label to tell two apart), got {tags}")
        labels = [point.label for point in self.points]
        if None in labels and len(self.points) > 1:
            raise ValueError("give every point a label (its name in trial ids and reports)")
        if len(set(labels)) != len(labels):
            raise ValueError(f"point labels must be unique, got {labels}")
        for label in filter(None, labels + [s.label for s in self.schedule]):
            if not all(c.isalnum() or c in "-_.%" for c in label):
                raise ValueError(f"label '{label}' names trials: letters, digits, - _ . % only")
        return self


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
    sweep: Optional[SweepSection] = Field(None, description="grids over training settings × runs (see "
                                                            "docs/studies.md)")

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
        datasets, task_data = _datasets()
        task, dataset = _families()[self.model.family].task, datasets[self.data.dataset]
        if dataset.task != task:
            fitting = ", ".join(name for name, spec in datasets.items() if spec.task == task)
            raise ValueError(f"model.family '{self.model.family}' trains on {task_data[task]} ({fitting}); "
                             f"data.dataset '{self.data.dataset}' is not one")
        missing = [f"data.{name}" for name in dataset.requires if getattr(self.data, name) is None]
        if missing:
            raise ValueError(f"data.dataset '{self.data.dataset}' needs {' and '.join(missing)} ({dataset.description})")
        return self

    def fingerprint_exclude(self) -> dict:
        """What :meth:`fingerprint` leaves out: what changes no result (names, report, where trials run)."""
        return {"kind": True, "name": True, "description": True, "report": True, "execution": True}

    def fingerprint_payload(self) -> dict:
        """What :meth:`fingerprint` hashes: the recipe as JSON less :meth:`fingerprint_exclude`, less fields added
        after studies were run while they hold their old meaning (None, or the default that does what was done)."""
        payload = self.model_dump(mode="json", exclude=self.fingerprint_exclude())
        for section, names in {"evaluation": ("final_train",), **self.NEW_OPTIONAL_FIELDS}.items():
            for name in names:
                if payload[section].get(name) is None:
                    payload[section].pop(name, None)
        if payload.get("sweep") is None:
            payload.pop("sweep", None)
        return payload

    def fingerprint(self) -> str:
        """Hash of everything that changes results: two recipes with one fingerprint give the same trials."""
        return hashlib.sha256(json.dumps(self.fingerprint_payload(), sort_keys=True).encode()).hexdigest()[:16]
