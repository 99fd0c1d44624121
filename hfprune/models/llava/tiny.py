"""A tiny random TinyLLaVA (SigLIP + 2-layer GELU connector + Phi) as a plain ``LlavaForConditionalGeneration``.

Same architecture as TinyLLaVA-3.1B (SigLIP + 2-layer GELU connector + Phi) at toy size, with an offline byte-level BPE tokenizer, a
``SiglipImageProcessorPil`` and a ``LlavaProcessor`` carrying the Phi chat template of docs/studies.md §4. Built in
a second, without the Hub, for tests and examples.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PhiConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from hfprune.models.llava.chat import PHI_CHAT_TEMPLATE, PHI_SYSTEM

_CORPUS = [
    PHI_SYSTEM,
    "What is in the image? Answer the question using a single word or phrase.",
    "Is there a dog in the image? yes no A. B. C. D. The answer is",
    "Answer with the option's letter from the given choices directly. Context: a red cat on a blue mat.",
    "The quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 left right two three.",
]


def build_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline, with Phi's special tokens plus ``<image>`` and ``<pad>``."""
    specials = ["<|endoftext|>", "<image>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"}, padding_side="left",
        chat_template=PHI_CHAT_TEMPLATE, model_max_length=2048)


def tiny_llava_config(tokenizer: PreTrainedTokenizerFast, image_size: int = 30, patch_size: int = 7,
                      vision_hidden_size: int = 32, hidden_size: int = 64, num_layers: int = 2,
                      vocab_size: int | None = None) -> LlavaConfig:
    """SigLIP tower (no CLS; 30 px / patch 7 → 4×4 patches, floored like 384/14 → 27×27) + Phi LM.

    ``vocab_size`` pads the LM's vocabulary beyond the tokenizer's, as Phi-2 has 51,200 rows for 50,295
    tokens. The LM's wider init (0.1) spreads its logits, so greedy answers depend on the input.
    """
    vision = SiglipVisionConfig(hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                                num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                                patch_size=patch_size)
    text = PhiConfig(vocab_size=max(len(tokenizer), vocab_size or 0), hidden_size=hidden_size,
                     intermediate_size=4 * hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
                     partial_rotary_factor=0.5, max_position_embeddings=2048, initializer_range=0.1,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                       image_seq_length=(image_size // patch_size) ** 2, projector_hidden_act="gelu",
                       vision_feature_layer=-2, vision_feature_select_strategy="full", tie_word_embeddings=False)


def tiny_llava(seed: int = 0, **config_kwargs) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A random tiny TinyLLaVA and its processor, in memory; ``config_kwargs`` go to :func:`tiny_llava_config`."""
    tokenizer = build_tokenizer()
    config = tiny_llava_config(tokenizer, **config_kwargs)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    size = config.vision_config.image_size
    processor = LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": size, "width": size}),
                               tokenizer=tokenizer, patch_size=config.vision_config.patch_size,
                               vision_feature_select_strategy="full", chat_template=PHI_CHAT_TEMPLATE,
                               image_token="<image>")
    return model, processor


def build_tiny_llava(directory: str | Path, seed: int = 0, **config_kwargs) -> Path:
    """Write a random tiny TinyLLaVA checkpoint and its processor to ``directory``; return the path."""
    directory = Path(directory)
    model, processor = tiny_llava(seed, **config_kwargs)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
