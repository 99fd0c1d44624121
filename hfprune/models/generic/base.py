"""What the families found by structure share: recognised by transformers' Auto mappings, loaded and built with the
Auto class of their kind, configured by ``model_type`` plus overrides, pruned where the walk finds their blocks —
unstructured (single weights, the default) or structured (``heads_ffn``: heads, key/value groups, FFN neurons and
layers, :class:`~hfprune.models.transformer.adapter.BlockStructured`)."""

from __future__ import annotations

from typing import Any, ClassVar

import transformers
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from hfprune.errors import HfpruneError, reason
from hfprune.io import quiet_hf_progress
from hfprune.models.base import UnstructuredAdapter, load_exactly
from hfprune.models.overrides import override_problems
from hfprune.models.structure import auto_class_name, model_kind
from hfprune.models.transformer.adapter import BlockStructured
from hfprune.models.transformer.surgery import OWN_CODE, checkpoint_kind


class AutoFamily(UnstructuredAdapter, BlockStructured):
    """A family of every transformers model of one kind (:data:`hfprune.models.structure.KINDS`)."""

    kind: ClassVar[str]  # what model_kind says of its models
    model_types: ClassVar[tuple[str, ...]] = ()  # none listed: recognised by :meth:`handles`
    config_class: ClassVar[type[PretrainedConfig]] = AutoConfig
    model_class: ClassVar[type] = None  # the Auto class of the kind, see :meth:`auto_class_for`
    cache_pretrained: ClassVar[bool] = False  # large models: loaded from model.pretrained on every (re)start

    @classmethod
    def handles(cls, model_type: str | None) -> bool:
        """Whether transformers' Auto mappings file ``model_type`` under this family's kind."""
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            return False
        try:
            return model_kind(model_type) == cls.kind
        except HfpruneError:
            return False

    @classmethod
    def config_problems(cls, overrides: dict[str, Any]) -> list[str]:
        """A config built here names its ``model_type`` (e.g. llama); the other keys are checked against that
        architecture's config."""
        if not overrides:
            return []
        model_type = overrides.get("model_type")
        if not cls.handles(model_type):
            return [f"model.config.model_type must name a transformers {cls.kind.replace('_', ' ')} architecture "
                    f"(e.g. {cls.example_type}), got {model_type!r}"]
        rest = {key: value for key, value in overrides.items() if key != "model_type"}
        return override_problems(cls.name, CONFIG_MAPPING[model_type], rest)

    example_type: ClassVar[str] = "llama"

    def auto_class_for(self, config: PretrainedConfig) -> type:
        """The transformers Auto class that loads and builds a model of ``config``."""
        return getattr(transformers, auto_class_name(config))

    def config(self, num_labels: int, channels: int, image_size: int, overrides: dict[str, Any]) -> PretrainedConfig:
        """A config built here (pretraining from scratch): ``model.config`` names the architecture."""
        if "model_type" not in overrides:
            raise HfpruneError(f"model.family '{self.name}' builds a model from scratch only with "
                               f"model.config.model_type (e.g. {self.example_type}); or give model.pretrained")
        rest = {key: value for key, value in overrides.items() if key != "model_type"}
        return AutoConfig.for_model(overrides["model_type"], **rest)

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        return self.auto_class_for(config).from_config(config)

    def load_config(self, source: str) -> PretrainedConfig:
        return AutoConfig.from_pretrained(source)

    def load_pretrained(self, source: str) -> PreTrainedModel:
        """The model, in ``dtype`` (``auto``: as saved), in eval mode; failures are one HfpruneError line."""
        try:
            config = self.load_config(source)
            with quiet_hf_progress():
                if checkpoint_kind(config) == OWN_CODE:  # structurally pruned with per-layer widths
                    return self.load_per_layer(source, config)
                return load_exactly(self.auto_class_for(config), source, dtype=self.dtype).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise HfpruneError(f"cannot load model '{source}' as a {self.name} checkpoint ({reason(error)})") from None

