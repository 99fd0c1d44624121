"""The recipe of an oracle-pruning study: the dense model (pretrained or pretrained here), the pruning settings
(structured masks, or unstructured methods at one sparsity), retraining, and the export of retrained models."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section, one_of
from hfprune.data.registry import DATASETS
from hfprune.data.text_corpus import TextSection
from hfprune.models import FAMILIES
from hfprune.pruning.unstructured.registry import METHODS, MethodEntry
from hfprune.study.recipe import DataSection, MaskSetting, StudyRecipe
from hfprune.study.sweep import check_runs
from hfprune.train.sections import LoraSection, TrainingSection


class RetrainSection(TrainingSection):
    short_fraction: Optional[float] = Field(
        None, gt=0, lt=1, description="also retrain for this fraction of the epochs (paper: 0.1) as a proxy"
    )
    physical: Optional[bool] = Field(
        None, description="structured: retrain the physically pruned (smaller) model, which computes what masked "
                          "retraining computes with fewer FLOPs; false = the dense-shaped model with masks "
                          "[default: true for structured pruning]")
    lora: Optional[LoraSection] = Field(
        None, description="retrain LoRA adapters (peft) instead of every weight, then merge them into the (pruned) "
                          "weights: shapes kept, pruned weights exactly zero")


class OracleDataSection(DataSection):
    text: Optional[TextSection] = Field(None, description="text corpora (causal-LM studies): tokenizer, test split, "
                                                          "documents, text field")

    @model_validator(mode="after")
    def _text_of_text_data(self) -> "OracleDataSection":
        if self.text is not None and DATASETS[self.dataset].task != "causal_lm":
            raise ValueError(f"data.text applies to text corpora, not to data.dataset '{self.dataset}'; remove it")
        return self


class RoundsSection(Section):
    """The iterative pipeline (paper App. B.2): a mask's units are removed over several rounds."""

    rounds: int = Field(ge=2, le=100, description="pruning rounds; each removes an equal share of the mask's "
                                                  "units (paper: 5 rounds of 10%)")
    retrain: TrainingSection = Field(description="retraining after every round but the last (paper: 15 epochs, "
                                                 "LR1 or LR2); the last round is retrained as the recipe's retrain")


class SettingSection(MaskSetting):
    """One setting of an oracle study: its ratios, its candidate masks and, optionally, its iterative schedule."""

    schedule: Optional[RoundsSection] = Field(None, description="this setting's iterative schedule "
                                                                "[default: pruning.schedule]")


UNSTRUCTURED_FIELDS = ("methods", "sparsity", "targets", "ignore")


class SelectionSection(Section):
    method: Literal["successive_halving"] = Field(description="how a mask is chosen by retraining candidates")
    eta: int = Field(3, ge=2, description="after each rung the best 1/eta of the candidates continue")
    min_fraction: float = Field(0.1, gt=0, le=1, description="the first rung's share of the retraining epochs")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="what ranks the candidates after each rung, on data.validation_fraction")


class PruningSection(Section):
    structure: Optional[str] = Field(
        None, description="what is pruned, as the model family prunes it [default: the family's]: filters (CNNs), "
                          "heads_ffn (vit, and the transformers families causal_lm, vision_language, vision_encoder: "
                          "ratios name groups such as layers.3.heads or kinds such as heads, kv_groups, ffn, layers), "
                          "or unstructured (the transformers families' default: single weights of Linear layers, "
                          "methods at one sparsity)")
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
        return structure if structure is None else one_of(
            structure, dict.fromkeys(offered for family in FAMILIES.values() for offered in family.offered_structures()),
            "pruning.structure")

    @model_validator(mode="after")
    def _fields_of_structure(self) -> "PruningSection":
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


class OracleRecipe(StudyRecipe):
    """An oracle-pruning study: dense model → candidate masks (or methods) → one retrained trial each → report."""

    NEW_OPTIONAL_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"data": ("validation_fraction", "text"),
                                                                 "pruning": ("selection",), "retrain": ("lora",)}

    kind: Literal["oracle"] = "oracle"
    data: OracleDataSection
    pretrain: Optional[TrainingSection] = None
    pruning: PruningSection
    retrain: RetrainSection
    export: ExportSection = ExportSection()

    @property
    def structure(self) -> str | None:
        """What the study prunes: ``pruning.structure``, else the family's default."""
        offered = FAMILIES[self.model.family].offered_structures()
        return self.pruning.structure or (offered[0] if offered else None)

    @model_validator(mode="after")
    def _structure_of_family(self) -> "OracleRecipe":
        offered = FAMILIES[self.model.family].offered_structures()
        if not offered:
            raise ValueError(f"model.family '{self.model.family}' has no structure an oracle study prunes; it trains "
                             "in sparse-training studies: give a sparse section (budgets, methods, search) and a "
                             "training section in place of pruning and retrain (see recipes/cubist_spiral_quick.yaml)")
        given = self.pruning.structure
        if given is not None and given not in offered:
            raise ValueError(f"pruning.structure '{given}' does not fit model.family '{self.model.family}'; set "
                             f"pruning.structure: {' or '.join(offered)}")
        expected = self.structure
        if expected == "unstructured" and self.retrain.physical:
            raise ValueError("retrain.physical applies to structured pruning; unstructured masks keep every shape "
                             "(remove retrain.physical)")
        if (expected == "unstructured") != bool(self.pruning.methods):
            what = "unstructured: give pruning.methods and pruning.sparsity" if expected == "unstructured" \
                else f"{expected}: give pruning.settings (ratios per group), not methods"
            raise ValueError(f"model.family '{self.model.family}' is pruned {what}")
        return self

    @model_validator(mode="after")
    def _dense_source(self) -> "OracleRecipe":
        if self.pretrain is None and self.model.pretrained is None:
            raise ValueError("give either model.pretrained (a dense checkpoint) or a pretrain section")
        return self

    @model_validator(mode="after")
    def _selection_needs_validation(self) -> "OracleRecipe":
        task = FAMILIES[self.model.family].task
        if (self.pruning.selection is not None or self.data.validation_fraction) and task != "image_classification":
            raise ValueError(f"pruning.selection and data.validation_fraction apply to image classification only, "
                             f"not to model.family '{self.model.family}' ({task}); remove them")
        if self.pruning.selection is not None and self.data.validation_fraction is None:
            raise ValueError("pruning.selection ranks candidates on a validation split: set data.validation_fraction "
                             "(e.g. 0.1 of the train split)")
        return self

    @model_validator(mode="after")
    def _sweep_fits(self) -> "OracleRecipe":
        sweep = self.sweep
        if sweep is None:
            return self
        check_runs(sweep, self.pruning.repeats, "pruning.repeats")
        if sweep.init != "per_run":
            raise ValueError("sweep.init: oracle trials start from the dense model; remove sweep.init")
        if sweep.report == "best":
            raise ValueError("sweep.report: an oracle study analyses every sweep point as its own setting "
                             "(report: each)")
        if self.pruning.selection is not None:
            raise ValueError("sweep and pruning.selection: successive halving retrains with the recipe's retrain; "
                             "drop one of them")
        if sweep.applies_to == "rounds" and (self.pruning.schedule is None or
                                             any(s.schedule is not None for s in self.pruning.settings)):
            raise ValueError("sweep.applies_to: rounds changes pruning.schedule.retrain: give pruning.schedule "
                             "(and no schedule per setting)")
        return self

    def fingerprint_exclude(self) -> dict:
        return {**super().fingerprint_exclude(), "export": True}
