"""The training sections of a recipe: optimiser, learning-rate schedule and one training run (pretraining,
retraining, a sparse study's training). Plain validated data: no torch here."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator, model_validator

from hfprune.config.schema import Section

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


class LoraSection(Section):
    """Retraining through LoRA adapters (``peft``), merged into the weights afterwards (:mod:`hfprune.train.lora`)."""

    r: int = Field(8, gt=0, le=1 << 14, description="rank of each adapter")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is (alpha / r) · B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' inputs")
    target_modules: Optional[list[str]] = Field(
        None, description="regexes (full match) of the Linear modules that get adapters [default: every Linear of "
                          "the model's transformer blocks, as unstructured pruning's default targets]")

    @field_validator("target_modules")
    @classmethod
    def _valid_targets(cls, patterns: Optional[list[str]]) -> Optional[list[str]]:
        if patterns is not None and not patterns:
            raise ValueError("give at least one regex, or leave target_modules out for the default")
        for pattern in patterns or ():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"'{pattern}' is not a regular expression ({error})") from None
        return patterns
