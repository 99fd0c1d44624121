"""The recipe: one validated YAML document per study. YAML in (safely), clear errors out."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section, one_of, read_yaml, validate_document
from hfprune.errors import HfpruneError
from hfprune.pruning.unstructured.registry import MethodEntry


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
        from hfprune.models import FAMILIES

        return one_of(family, FAMILIES, "model family")

    @model_validator(mode="after")
    def _overrides_fit_family(self) -> "ModelSection":
        from hfprune.models import FAMILIES
        from hfprune.models.overrides import override_problems

        problems = override_problems(self.family, FAMILIES[self.family].config_class, self.config)
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
        from hfprune.data.registry import KNOWN_DATASETS

        return one_of(dataset, KNOWN_DATASETS, "dataset")


Beta = Annotated[float, Field(ge=0, lt=1)]
Count = Annotated[int, Field(gt=0, le=1 << 24)]  # batch sizes, epochs, draws: positive, and not absurd


class OptimizerSection(Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=10)
    betas: tuple[Beta, Beta] = (0.9, 0.999)


class ScheduleSection(Section):
    name: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list, description="epochs at which multistep multiplies the lr by gamma")
    gamma: float = Field(0.1, gt=0, le=1)
    gammas: Optional[list[float]] = Field(
        None, description="multistep: one factor per milestone instead of gamma, e.g. [0.01, 0.1] for "
                          "0.1 -> 1e-3 -> 1e-4 (the paper's LR2 rounds)")
    warmup_epochs: float = Field(0.0, ge=0, le=1 << 24)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be positive and strictly increasing, got {milestones}")
        return milestones

    @model_validator(mode="after")
    def _one_gamma_per_milestone(self) -> "ScheduleSection":
        if self.gammas is not None and (len(self.gammas) != len(self.milestones) or min(self.gammas, default=1) <= 0):
            raise ValueError(f"gammas needs one positive factor per milestone ({len(self.milestones)}), "
                             f"got {self.gammas}")
        return self

    def factors(self) -> list[float]:
        """The factor applied at each milestone."""
        return list(self.gammas) if self.gammas is not None else [self.gamma] * len(self.milestones)


class TrainingSection(Section):
    epochs: int = Field(ge=0, le=1 << 24)
    batch_size: Count
    optimizer: OptimizerSection
    schedule: ScheduleSection = ScheduleSection()
    grad_clip: Optional[float] = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0, le=1000, description="mixup Beta(α, α) parameter per batch; 0 = off (paper's ViT: 0.2)")
    cutmix: float = Field(0.0, ge=0, le=1000, description="cutmix Beta(α, α) parameter per batch; 0 = off (paper's ViT: "
                                                 "1.0); with both on, each batch uses one of them at random")
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = Field(1, gt=0, le=1 << 16)
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (Hugging Face models; saves memory, costs ~30% time)")
    freeze: list[str] = Field(default_factory=list, description="regexes (full match) of parameter names kept "
                                                                "frozen, e.g. 'model\\.vision_tower\\..*'")

    @field_validator("freeze")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"'{pattern}' is not a regular expression ({error})") from None
        return patterns

    def scaled(self, fraction: float) -> "TrainingSection":
        """The short-retraining proxy: epochs and milestones scaled by ``fraction``."""
        epochs = max(1, round(self.epochs * fraction))
        scaled: dict[int, float] = {}  # milestones that fall together multiply their factors
        for m, factor in zip(self.schedule.milestones, self.schedule.factors()):
            if round(m * fraction) < epochs:
                scaled[max(1, round(m * fraction))] = scaled.get(max(1, round(m * fraction)), 1.0) * factor
        milestones = sorted(scaled)
        gammas = None if self.schedule.gammas is None else [scaled[m] for m in milestones]
        schedule = self.schedule.model_copy(update={"milestones": milestones, "gammas": gammas,
                                                    "warmup_epochs": self.schedule.warmup_epochs * fraction})
        return self.model_copy(update={"epochs": epochs, "schedule": schedule})


class RetrainSection(TrainingSection):
    short_fraction: Optional[float] = Field(
        None, gt=0, lt=1, description="also retrain for this fraction of the epochs (paper: 0.1) as a proxy"
    )
    physical: Optional[bool] = Field(
        None, description="structured: retrain the physically pruned (smaller) model, which computes what masked "
                          "retraining computes with fewer FLOPs; false = the dense-shaped model with masks "
                          "[default: true for structured pruning]")


class CandidatesSection(Section):
    mode: Literal["auto", "exhaustive", "random"] = "auto"
    num: int = Field(1000, gt=0, le=1_000_000, description="random draws; 'auto' enumerates when there are at most this many")


class RoundsSection(Section):
    """The iterative pipeline (paper App. B.2): a mask's units are removed over several rounds."""

    rounds: int = Field(ge=2, le=100, description="pruning rounds; each removes an equal share of the mask's "
                                                  "units (paper: 5 rounds of 10%)")
    retrain: TrainingSection = Field(description="retraining after every round but the last (paper: 15 epochs, "
                                                 "LR1 or LR2); the last round is retrained as the recipe's retrain")


class SettingSection(Section):
    ratios: dict[str, float] = Field(description="group name -> fraction of its units to remove")
    name: Optional[str] = None
    candidates: CandidatesSection = CandidatesSection()
    schedule: Optional[RoundsSection] = Field(None, description="this setting's iterative schedule "
                                                                "[default: pruning.schedule]")

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


UNSTRUCTURED_FIELDS = ("methods", "sparsity", "targets", "ignore")


class SelectionSection(Section):
    method: Literal["successive_halving"] = Field(description="how a mask is chosen by retraining candidates")
    eta: int = Field(3, ge=2, description="after each rung the best 1/eta of the candidates continue")
    min_fraction: float = Field(0.1, gt=0, le=1, description="the first rung's share of the retraining epochs")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="what ranks the candidates after each rung, on data.validation_fraction")


# fields added after studies were run: left out of a recipe's fingerprint while unset, so those studies resume
NEW_OPTIONAL_FIELDS = {"data": ("validation_fraction",), "pruning": ("selection",)}


class PruningSection(Section):
    structure: Optional[str] = Field(
        None, description="what is pruned, as the model family prunes it [default: the family's]: filters (CNNs), "
                          "heads_ffn (vit: ratios name groups such as layers.3.heads or kinds such as heads, ffn), "
                          "or unstructured (llava: single weights of Linear layers, methods at one sparsity)")
    settings: list[SettingSection] = Field(default_factory=list, description="structured: ratios per setting")
    schedule: Optional[RoundsSection] = Field(
        None, description="structured: prune every mask over rounds, retraining after each (iterative pipeline); "
                          "none = one-shot")
    repeats: int = Field(1, gt=0, le=1000, description="retrain every mask with this many seeds")
    methods: list[MethodEntry] = Field(
        default_factory=list, description="unstructured: one trial per method, all at pruning.sparsity; a name "
                                          "(ump) or a mapping of the name and the method's own options "
                                          "({name: onp, lam: 0.08, score: activation})")
    sparsity: Optional[float] = Field(None, gt=0, lt=1, description="unstructured: fraction of target weights removed")
    targets: Optional[list[str]] = Field(
        None, description="unstructured: regexes (full match) of the Linear modules to prune [default: the model "
                          "family's; llava: the language model's decoder q/k/v/dense/fc1/fc2]")
    ignore: list[str] = Field(default_factory=list, description="unstructured: regexes of Linear modules to keep dense")
    calibration_samples: int = Field(128, gt=0, description="structured: training images of the pruned_taylor_fo "
                                                          "criterion (paper App. B.1: 20,000); unstructured: "
                                                          "training samples that calibrate "
                                                          "activation scores, wanda, owl and sparsegpt")
    selection: Optional[SelectionSection] = Field(
        None, description="choose one mask per setting by retraining (successive halving) instead of fully "
                          "retraining every candidate")

    @field_validator("structure")
    @classmethod
    def _known_structure(cls, structure: Optional[str]) -> Optional[str]:
        from hfprune.models import FAMILIES

        return structure if structure is None else one_of(
            structure, dict.fromkeys(family.structure for family in FAMILIES.values()), "pruning.structure")

    @model_validator(mode="after")
    def _fields_of_structure(self) -> "PruningSection":
        from hfprune.pruning.unstructured.registry import METHODS

        if self.structure == "unstructured" or (self.structure is None and self.methods):
            if self.settings or self.schedule is not None:
                raise ValueError("unstructured pruning takes methods and sparsity, not settings or schedule")
            if not self.methods or self.sparsity is None:
                raise ValueError(f"unstructured pruning needs methods (e.g. [{', '.join(METHODS)}]) and sparsity "
                                 "(e.g. 0.4375)")
            ids = [method.mask_id for method in self.methods]
            if len(set(ids)) != len(ids):
                raise ValueError(f"methods must be unique (give a label to tell two settings of one method "
                                 f"apart), got {ids}")
            problems = [f"{method.mask_id}: {method.sparsity_problem(self.sparsity)}" for method in self.methods
                        if method.sparsity_problem(self.sparsity)]
            if problems:
                raise ValueError("; ".join(problems))
            return self
        if not self.settings:
            if self.structure is None:
                raise ValueError("give pruning.settings (structured pruning: a list of {ratios: {group: ratio}}) "
                                 "or pruning.methods and pruning.sparsity (unstructured pruning)")
            raise ValueError(f"structured pruning ({self.structure}) needs settings: a list of "
                             "{ratios: {group: ratio}}")
        stray = [name for name in UNSTRUCTURED_FIELDS if name in self.model_fields_set]
        if stray:
            raise ValueError(f"{', '.join(stray)} apply to structure: unstructured only")
        labels = [setting.label for setting in self.settings]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"setting names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def rounds_of(self, setting: SettingSection) -> Optional[RoundsSection]:
        """The iterative schedule of ``setting`` (its own, else the pruning section's; None: one-shot)."""
        return setting.schedule or self.schedule

    @property
    def unstructured_setting(self) -> str:
        """The setting label of every unstructured trial: the methods are its candidates."""
        return f"sparsity@{self.sparsity:g}"


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


class ExportSection(Section):
    checkpoints: Literal["none", "best", "all"] = Field(
        "best", description="save physically pruned retrained models: none, the best trial, or every trial"
    )
    push_to_hub: Optional[str] = Field(
        None, description="after the study, upload best/ to this Hub repo (NAMESPACE/NAME) with its model card; "
                          "the token comes from `hf auth login` / HF_TOKEN, never from the recipe")
    private: bool = Field(False, description="create the push_to_hub repository as private")

    @model_validator(mode="after")
    def _push_needs_best(self) -> "ExportSection":
        if self.push_to_hub and self.checkpoints != "best":
            raise ValueError("push_to_hub uploads the best trial's checkpoint; set checkpoints: best")
        return self


class ExecutionSection(Section):
    """Resources of one trial when ``hfprune run --workers N`` / ``--ray-address`` fans trials out on Ray."""

    gpus_per_trial: float = Field(1.0, gt=0, description="GPUs one trial takes (a fraction packs several trials on "
                                                         "one GPU, e.g. 0.25 = four); ignored where there is no GPU")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPU cores Ray reserves for one trial")
    threads_per_trial: Optional[int] = Field(
        None, gt=0, description="torch threads of one trial [default: on Ray, cpus_per_trial rounded up; "
                                "in-process, torch's default]")
    max_retries: int = Field(3, ge=0, description="times a trial whose Ray worker died is run again")

    @field_validator("gpus_per_trial")
    @classmethod
    def _one_device(cls, gpus: float) -> float:
        if gpus > 1:
            raise ValueError(f"a trial on Ray runs on at most one GPU, got {gpus:g}; trials that need several GPUs "
                             "each run one at a time over all GPUs with `accelerate launch -m hfprune run` "
                             "(no --workers)")
        return gpus


class Recipe(Section):
    name: str
    description: str = ""
    seed: int = Field(0, ge=0, lt=1 << 32, description="seed of every random choice (masks, data order, init)")
    model: ModelSection
    data: DataSection
    pretrain: Optional[TrainingSection] = None
    pruning: PruningSection
    retrain: RetrainSection
    evaluation: EvaluationSection = EvaluationSection()
    report: ReportSection = ReportSection()
    export: ExportSection = ExportSection()
    execution: ExecutionSection = ExecutionSection()

    @model_validator(mode="after")
    def _dense_source(self) -> "Recipe":
        if self.pretrain is None and self.model.pretrained is None:
            raise ValueError("give either model.pretrained (a dense checkpoint) or a pretrain section")
        return self

    @model_validator(mode="after")
    def _data_of_family(self) -> "Recipe":
        from hfprune.data.registry import DATASETS, TASK_DATA
        from hfprune.models import FAMILIES

        task, dataset = FAMILIES[self.model.family].task, DATASETS[self.data.dataset]
        if dataset.task != task:
            fitting = ", ".join(name for name, spec in DATASETS.items() if spec.task == task)
            raise ValueError(f"model.family '{self.model.family}' trains on {TASK_DATA[task]} ({fitting}); "
                             f"data.dataset '{self.data.dataset}' is not one")
        missing = [f"data.{name}" for name in dataset.requires if getattr(self.data, name) is None]
        if missing:
            raise ValueError(f"data.dataset '{self.data.dataset}' needs {' and '.join(missing)} ({dataset.description})")
        return self

    @model_validator(mode="after")
    def _selection_needs_validation(self) -> "Recipe":
        from hfprune.models import FAMILIES

        task = FAMILIES[self.model.family].task
        if (self.pruning.selection is not None or self.data.validation_fraction) and task != "image_classification":
            raise ValueError(f"pruning.selection and data.validation_fraction apply to image classification only, "
                             f"not to model.family '{self.model.family}' ({task}); remove them")
        if self.pruning.selection is not None and self.data.validation_fraction is None:
            raise ValueError("pruning.selection ranks candidates on a validation split: set data.validation_fraction "
                             "(e.g. 0.1 of the train split)")
        return self

    @model_validator(mode="after")
    def _structure_of_family(self) -> "Recipe":
        from hfprune.models import FAMILIES

        expected = FAMILIES[self.model.family].structure
        given = self.pruning.structure
        if given is not None and given != expected:
            raise ValueError(f"pruning.structure '{given}' does not fit model.family '{self.model.family}'; set "
                             f"pruning.structure: {expected}")
        if expected == "unstructured" and self.retrain.physical:
            raise ValueError("retrain.physical applies to structured pruning; unstructured masks keep every shape "
                             "(remove retrain.physical)")
        if (expected == "unstructured") != bool(self.pruning.methods):
            what = "unstructured: give pruning.methods and pruning.sparsity" if expected == "unstructured" \
                else f"{expected}: give pruning.settings (ratios per group), not methods"
            raise ValueError(f"model.family '{self.model.family}' is pruned {what}")
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the name, description, report, export or where trials run)."""
        payload = self.model_dump(mode="json", exclude={"name", "description", "report", "export", "execution"})
        for section, names in NEW_OPTIONAL_FIELDS.items():
            for name in names:
                if payload[section].get(name) is None:
                    payload[section].pop(name, None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def parse_recipe(data: Any, source: str = "recipe"):
    """Validate a recipe given as a dict: an oracle-pruning :class:`Recipe`, or a sparse-training study's
    :class:`~hfprune.config.sparse_recipe.SparseStudyRecipe` (a document with a ``sparse`` section); raises
    HfpruneError with one line per problem."""
    if isinstance(data, dict) and "sparse" in data:
        from hfprune.config.sparse_recipe import SparseStudyRecipe

        return validate_document(SparseStudyRecipe, data, "recipe", source)
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and _is_sparse_family(model.get("family")):
        raise HfpruneError(f"{source}: model.family '{data['model']['family']}' trains in sparse-training studies: "
                           "give a sparse section (budgets, methods, search) and a training section in place of "
                           "pruning and retrain (see recipes/cubist_spiral_quick.yaml)")
    return validate_document(Recipe, data, "recipe", source)


def _is_sparse_family(family: Any) -> bool:
    from hfprune.models import FAMILIES

    return isinstance(family, str) and family in FAMILIES and FAMILIES[family].structure == "sparse"


def load_recipe(path: str | Path):
    """Read a recipe YAML file (``yaml.safe_load``: nothing in a recipe is executed)."""
    path = Path(path)
    if not path.is_file():
        raise HfpruneError(f"recipe file '{path}' not found; `hfprune recipes` lists the shipped ones")
    return parse_recipe(read_yaml(path, "recipe"), source=str(path))
