"""Model adapters: everything hfprune knows about one model family, in one place.

A family is one module (its Hugging Face config + model code, and an adapter) plus a line in
:mod:`hfprune.models`' registry. The adapter says which checkpoint ``model_type`` s it handles, how it builds
and loads models, the study task it trains on, its MACs and model-card rows, and how it is pruned: a
:class:`StructuredAdapter` names its prunable groups and shrinks models physically; an
:class:`UnstructuredAdapter` names the Linear layers unstructured methods prune by default.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from hfprune.errors import HfpruneError, reason
from hfprune.io import quiet_hf_warnings
from hfprune.models.overrides import override_problems
from hfprune.pruning.structured.groups import Group, StructuredMask
from hfprune.pruning.structured.surgery import shrink


def load_exactly(model_class, source: str, **kwargs) -> PreTrainedModel:
    """``model_class.from_pretrained(source, **kwargs)``, refusing weights that do not load exactly: a parameter the
    checkpoint lacks (transformers would draw it at random) or one of another shape would make a model that is not
    the one saved, and hfprune never prunes or analyses such a model as if it were trained. One HfpruneError line."""
    try:
        with quiet_hf_warnings():
            model, info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    except RuntimeError as error:  # transformers' multi-line report of weights of other shapes
        raise HfpruneError(f"the weights in '{source}' do not fit its config ({reason(error, 200)}); give the "
                           "checkpoint these weights were saved with") from None
    missing = list(info.get("missing_keys") or []) + [str(key) for key in info.get("mismatched_keys") or []]
    if missing:
        raise HfpruneError(f"the weights in '{source}' do not load exactly into a {model_class.__name__}: "
                           f"{len(missing)} parameter(s) missing or of another shape (e.g. {missing[0]}), which "
                           "would be initialised at random; give the checkpoint these weights were saved with")
    return model


class ModelAdapter(ABC):
    """A model family: its configs and models, how they load, and what a study trains them on."""

    name: ClassVar[str]  # the recipe's model.family
    model_types: ClassVar[tuple[str, ...]]  # config.json model_type values this family loads
    structure: ClassVar[str | None]  # the oracle recipe's pruning.structure (None: no oracle study prunes it)
    structures: ClassVar[tuple[str, ...]] = ()  # every pruning.structure it offers when several, its default first
    task: ClassVar[str]  # the study task it trains on (see hfprune.study.tasks)
    config_class: ClassVar[type[PretrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]
    cache_pretrained: ClassVar[bool] = True  # copy a pretrained dense model into the study directory
    remote_code: ClassVar[bool] = False  # saved checkpoints carry their own model code (trust_remote_code=True)
    auto_class: ClassVar[str] = "AutoModelForImageClassification"  # what loads a saved checkpoint
    connectivity: ClassVar[bool] = False  # built of positive-homogeneous layers: disconnected paths can be analysed
    searchable: ClassVar[bool] = False  # an MLP whose weight supports the combinatorial search enumerates

    def __init__(self, dtype: str = "auto"):
        self.dtype = dtype  # of pretrained weights when loaded: "auto" keeps the checkpoint's

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> PretrainedConfig:
        """The dense config for a dataset, with the recipe's ``model.config`` overrides (pretraining from scratch;
        an override wins over the dataset's value)."""
        return self.config_class(**{"num_labels": num_labels, "num_channels": channels, "image_size": image_size,
                                    **overrides})

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return self.model_class(config)

    def load_config(self, source: str) -> PretrainedConfig:
        """The config of a local directory or Hub id (no weights read), as this family's models take it."""
        return self.config_class.from_pretrained(source)

    def load_pretrained(self, source: str) -> PreTrainedModel:
        """A dense model of this family from a local directory or Hub id."""
        return load_exactly(self.model_class, source, dtype=self.dtype)

    def prunable_weights(self, model: PreTrainedModel) -> dict[str, nn.Parameter]:
        """The weight matrices sparse-training methods prune, by parameter name, in model order: every Linear and
        Conv weight (biases, norms and embeddings stay dense)."""
        return {f"{name}.weight": module.weight for name, module in model.named_modules()
                if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))}

    def macs(self, config: PretrainedConfig) -> int | None:
        """Multiply-accumulates of one forward pass of one input, when the family counts them."""
        return None

    def card_rows(self, config: PretrainedConfig) -> list[str]:
        """Markdown lines a model card shows about a model's widths (none by default)."""
        return []

    def loading_code(self, auto_class: str | None = None) -> list[str]:
        """Python lines that load a saved checkpoint of this family from ``PATH`` (``auto_class``: the class that
        loads this particular model, where the family's models differ)."""
        auto_class = auto_class or self.auto_class
        trust = ", trust_remote_code=True" if self.remote_code else ""
        return [f"from transformers import {auto_class}", f"model = {auto_class}.from_pretrained(PATH{trust})"]

    @classmethod
    def offered_structures(cls) -> tuple[str, ...]:
        """The ``pruning.structure`` values an oracle recipe may choose for this family, its default first."""
        if cls.structures:
            return (cls.structure, *(s for s in cls.structures if s != cls.structure))
        return (cls.structure,) if cls.structure else ()

    @classmethod
    def handles(cls, model_type: str | None) -> bool:
        """Whether checkpoints of ``model_type`` belong to this family."""
        return model_type in cls.model_types

    @classmethod
    def config_problems(cls, overrides: dict[str, Any]) -> list[str]:
        """Every problem of a recipe's ``model.config`` overrides for this family's config, one phrase each."""
        return override_problems(cls.name, cls.config_class, overrides)


class StructuredAdapter(ModelAdapter):
    """A family pruned structurally: named groups of units, removed physically for export."""

    structure: ClassVar[str] = "filters"
    task: ClassVar[str] = "image_classification"
    remote_code: ClassVar[bool] = True

    @abstractmethod
    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        """Prunable groups of a model with this config, by name."""

    @abstractmethod
    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PretrainedConfig:
        """The config of the physically pruned model."""

    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PreTrainedModel:
        """A smaller model of the same class that computes what the masked model computes."""
        return shrink(model, self.groups(model.config), mask, self.pruned_config(model.config, mask), self.model_class)

    @staticmethod
    def _copy_config(config: PretrainedConfig) -> PretrainedConfig:
        return copy.deepcopy(config)


class UnstructuredAdapter(ModelAdapter):
    """A family pruned weight by weight: masks keep every shape, so the masked model is the checkpoint. Its
    default targets are the Linears of its transformer blocks, found by walking the model
    (:func:`hfprune.pruning.unstructured.targets.default_targets`)."""

    structure: ClassVar[str] = "unstructured"

    def config(self, num_labels, channels, image_size, overrides):
        raise HfpruneError(f"model.family '{self.name}' is not pretrained by hfprune; give model.pretrained")
