"""TinyLLaVA-style vision-language models as transformers' ``LlavaForConditionalGeneration``.

Pruned unstructurally: single weights of the language model's decoder Linears are zeroed, so a pruned model
keeps its class and shapes and saves as a plain Llava checkpoint (no surgery, no custom code).
"""

from __future__ import annotations

from transformers import LlavaConfig, LlavaForConditionalGeneration, PretrainedConfig, PreTrainedModel

from hfprune.errors import HfpruneError
from hfprune.models.base import ModelAdapter
from hfprune.pruning.structured.groups import Group, StructuredMask


class LlavaAdapter(ModelAdapter):
    name = "llava"
    structure = "unstructured"
    cache_pretrained = False  # billions of weights: load from model.pretrained on every (re)start instead
    config_class = LlavaConfig
    model_class = LlavaForConditionalGeneration

    def config(self, num_labels, channels, image_size, overrides):
        raise HfpruneError("model.family 'llava' is not pretrained by hfprune; give model.pretrained "
                           "(a converted checkpoint: `hfprune convert tinyllava SRC --out DIR`)")

    def groups(self, config: PretrainedConfig) -> dict[str, Group]:
        return {}  # no structured groups: masks come from the unstructured methods

    def pruned_config(self, config: PretrainedConfig, mask: StructuredMask) -> PretrainedConfig:
        return self._copy_config(config)

    def prune_physically(self, model: PreTrainedModel, mask: StructuredMask) -> PreTrainedModel:
        """Unstructured pruning keeps every shape: the masked model is the pruned checkpoint."""
        return model
