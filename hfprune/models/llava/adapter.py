"""The LLaVA family: TinyLLaVA-style vision-language models as transformers' ``LlavaForConditionalGeneration``.

Pruned unstructurally: single weights of the language model's decoder Linears are zeroed, so a pruned model
keeps its class and shapes and saves as a plain Llava checkpoint (no surgery, no custom code). This module is
the one place that loads LLaVA checkpoints and their processors (studies, ``hfprune prune``, ``hfprune eval``).
"""

from __future__ import annotations

from transformers import AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

from hfprune.errors import HfpruneError, reason
from hfprune.io import quiet_hf_progress
from hfprune.models.base import UnstructuredAdapter

# What the default unstructured targets (the Linears of the language model's decoder blocks, found by walking the
# model: hfprune.models.structure) are in a TinyLLaVA — a Llava (transformers 5.x) with a Phi LM — as regexes, for
# benchmarks and tests that pin them: the vision tower, the connector, the embeddings and the LM head never match.
PHI_DECODER_LINEARS = (
    r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|dense)",
    r"model\.language_model\.layers\.\d+\.mlp\.(fc1|fc2)",
)


class LlavaAdapter(UnstructuredAdapter):
    name = "llava"
    model_types = (LlavaConfig.model_type,)
    task = "vision_language"
    cache_pretrained = False  # billions of weights: load from model.pretrained on every (re)start instead
    config_class = LlavaConfig
    model_class = LlavaForConditionalGeneration
    auto_class = "LlavaForConditionalGeneration"

    def config(self, num_labels, channels, image_size, overrides):
        raise HfpruneError("model.family 'llava' is not pretrained by hfprune; give model.pretrained "
                           "(a converted checkpoint: `hfprune convert tinyllava SRC --out DIR`)")

    def load_pretrained(self, source: str) -> LlavaForConditionalGeneration:
        """The model, in ``dtype`` (``auto``: as saved), in eval mode; failures are one HfpruneError line."""
        try:
            with quiet_hf_progress():
                return LlavaForConditionalGeneration.from_pretrained(source, dtype=self.dtype).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise HfpruneError(f"cannot load model '{source}' as a Llava checkpoint ({reason(error)})") from None

    @staticmethod
    def load_processor(source: str, required: bool = True):
        """The multimodal processor saved with a checkpoint (tokenizer, image processor, chat template);
        None when it has none and ``required`` is False."""
        try:
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as error:
            if not required:
                return None
            raise HfpruneError(f"cannot load the processor of model '{source}' ({reason(error)}); give a checkpoint "
                               "written by `hfprune convert` or `save_pretrained` with its processor") from None
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
            if not required:
                return None
            raise HfpruneError(f"'{source}' has no multimodal processor (tokenizer + image processor) saved with it")
        return processor
