"""The causal-LM family: every model ``AutoModelForCausalLM`` loads (Llama, Qwen2/3, Gemma, Mistral, Phi-3, ...).

Pruned unstructurally, its default targets are the Linears of its decoder blocks, found by walking the model.
"""

from __future__ import annotations

from hfprune.errors import HfpruneError, reason
from hfprune.models.generic.base import AutoFamily
from hfprune.models.structure import CAUSAL_LM


class CausalLMAdapter(AutoFamily):
    name = "causal_lm"
    kind = CAUSAL_LM
    task = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    example_type = "llama"

    @staticmethod
    def load_processor(source: str, required: bool = True):
        """The tokenizer saved with a checkpoint (None when it has none and ``required`` is False)."""
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError, KeyError, TypeError) as error:
            if not required:
                return None
            raise HfpruneError(f"cannot load the tokenizer of model '{source}' ({reason(error)}); give a checkpoint "
                               "saved with its tokenizer") from None
