"""Tiny random models of many Hugging Face architectures, built offline from transformers' config classes.

One table (:data:`ARCHITECTURES`) holds, per architecture, its model class, a config constructor and, for
vision-language models and vision encoders, how to make image inputs from the config. Every model is a few
layers of width ≤ 64 with a 128-token vocabulary and images of 32 px or less, with grouped-query attention
(fewer key/value heads than query heads) wherever the architecture has it. :func:`calibration_batches` makes
plain-tensor model inputs for any of them: token ids and an attention mask (with padding) for a language model,
plus the image tensors a vision-language model's forward needs with as many image tokens as its vision tower
yields, or ``pixel_values`` for a vision encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import transformers as tf

VOCAB = 128
IMAGE_TOKEN = 120  # the image placeholder of every vision-language model here
BOS, EOS, PAD = 1, 2, 0
HIDDEN, HEADS, KV_HEADS, INTERMEDIATE, LAYERS = 64, 4, 2, 96, 3
VISION = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}


def _lm(**overrides) -> dict:
    """Keyword arguments of a tiny decoder config (GQA: 4 query heads, 2 key/value heads of width 16)."""
    return {"vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "max_position_embeddings": 256, "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD,
            **overrides}


def _gemma(**overrides) -> dict:
    return _lm(head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
               layer_types=["sliding_attention", "full_attention", "sliding_attention"], **overrides)


def _mrope_text(config_class):
    # M-RoPE splits the 8 rotary frequencies of a 16-wide head over (time, height, width)
    return config_class(**_lm(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "mrope_section": [2, 3, 3]}))


def _no_extra(config, input_ids) -> dict:
    return {}


@dataclass(frozen=True)
class Architecture:
    """One architecture: its ``model_class`` and a tiny ``config()``; for image models ``images(config, batch)``,
    the image tensors of ``batch`` samples; ``extra(config, input_ids)``, other tensors its forward needs."""

    name: str
    kind: str  # "causal_lm", "vision_language" or "vision_encoder"
    model_class: type
    config: Callable[[], tf.PretrainedConfig]
    images: Callable[[tf.PretrainedConfig, int], dict] | None = None
    extra: Callable[[tf.PretrainedConfig, torch.Tensor], dict] = _no_extra

    def build(self, seed: int = 0) -> tf.PreTrainedModel:
        """A random model in eval mode (same ``seed``, same weights)."""
        torch.manual_seed(seed)
        return self.model_class(self.config()).eval()


def _pixels(*shape: int) -> dict:
    generator = torch.Generator().manual_seed(7)
    return {"pixel_values": torch.randn(*shape, generator=generator)}


def _square(vision: tf.PretrainedConfig, batch: int) -> dict:
    """One square image per sample, at the vision tower's size."""
    return _pixels(batch, vision.num_channels, vision.image_size, vision.image_size)


def _qwen_vl_images(config, batch: int) -> dict:
    vision = config.vision_config
    grid = torch.tensor([[1, 4, 4]] * batch)  # 16 patches per image, 4 tokens after the 2×2 merge
    width = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    return {**_pixels(int(grid.prod(-1).sum()), width), "image_grid_thw": grid}


def _qwen_vl_extra(config, input_ids) -> dict:
    return {"mm_token_type_ids": (input_ids == config.image_token_id).int()}


def _gemma3_extra(config, input_ids) -> dict:
    return {"token_type_ids": (input_ids == config.image_token_id).long()}


ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in [
    # -- causal language models ---------------------------------------------------------------------------------
    Architecture("llama", "causal_lm", tf.LlamaForCausalLM, lambda: tf.LlamaConfig(**_lm())),
    Architecture("qwen2", "causal_lm", tf.Qwen2ForCausalLM, lambda: tf.Qwen2Config(**_lm())),
    Architecture("qwen3", "causal_lm", tf.Qwen3ForCausalLM, lambda: tf.Qwen3Config(**_lm(head_dim=16))),
    Architecture("gemma2", "causal_lm", tf.Gemma2ForCausalLM,
                 lambda: tf.Gemma2Config(**_gemma(attn_logit_softcapping=50.0, final_logit_softcapping=30.0))),
    Architecture("gemma3_text", "causal_lm", tf.Gemma3ForCausalLM, lambda: tf.Gemma3TextConfig(**_gemma())),
    Architecture("phi3", "causal_lm", tf.Phi3ForCausalLM, lambda: tf.Phi3Config(**_lm())),
    Architecture("mistral", "causal_lm", tf.MistralForCausalLM, lambda: tf.MistralConfig(**_lm(sliding_window=4))),
    # -- vision-language models ---------------------------------------------------------------------------------
    Architecture("llava", "vision_language", tf.LlavaForConditionalGeneration, lambda: tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**VISION), text_config=tf.LlamaConfig(**_lm()),
        image_token_index=IMAGE_TOKEN, image_seq_length=16, vision_feature_layer=-2,
        vision_feature_select_strategy="default"),
        images=lambda config, batch: _square(config.vision_config, batch)),
    Architecture("llava_onevision", "vision_language", tf.LlavaOnevisionForConditionalGeneration,
                 lambda: tf.LlavaOnevisionConfig(
                     vision_config=tf.SiglipVisionConfig(**VISION), text_config=tf.Qwen2Config(**_lm()),
                     image_token_index=IMAGE_TOKEN, video_token_index=IMAGE_TOKEN + 1,
                     image_grid_pinpoints=[[32, 32]], vision_feature_layer=-1),
                 images=lambda config, batch: {
                     **_pixels(batch, 2, 3, 32, 32),  # the whole image and its one 32-px crop
                     "image_sizes": torch.tensor([[32, 32]] * batch)}),
    Architecture("qwen2_vl", "vision_language", tf.Qwen2VLForConditionalGeneration, lambda: tf.Qwen2VLConfig(
        vision_config=tf.Qwen2VLConfig.sub_configs["vision_config"](
            depth=2, embed_dim=32, hidden_size=HIDDEN, num_heads=2, patch_size=4, spatial_merge_size=2,
            temporal_patch_size=2),
        text_config=_mrope_text(tf.Qwen2VLTextConfig), image_token_id=IMAGE_TOKEN, video_token_id=IMAGE_TOKEN + 1,
        vision_start_token_id=IMAGE_TOKEN + 2, vision_end_token_id=IMAGE_TOKEN + 3),
        images=_qwen_vl_images, extra=_qwen_vl_extra),
    Architecture("qwen2_5_vl", "vision_language", tf.Qwen2_5_VLForConditionalGeneration, lambda: tf.Qwen2_5_VLConfig(
        vision_config=tf.Qwen2_5_VLConfig.sub_configs["vision_config"](
            depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=HIDDEN, patch_size=4,
            spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1]),
        text_config=_mrope_text(tf.Qwen2_5_VLTextConfig), image_token_id=IMAGE_TOKEN,
        video_token_id=IMAGE_TOKEN + 1, vision_start_token_id=IMAGE_TOKEN + 2, vision_end_token_id=IMAGE_TOKEN + 3),
        images=_qwen_vl_images, extra=_qwen_vl_extra),
    Architecture("idefics3", "vision_language", tf.Idefics3ForConditionalGeneration, lambda: tf.Idefics3Config(
        vision_config=tf.Idefics3VisionConfig(**VISION), text_config=tf.LlamaConfig(**_lm()),
        image_token_id=IMAGE_TOKEN, scale_factor=2),
        images=lambda config, batch: _pixels(batch, 1, 3, 32, 32)),  # one image (no splitting) per sample
    Architecture("gemma3", "vision_language", tf.Gemma3ForConditionalGeneration, lambda: tf.Gemma3Config(
        vision_config=tf.SiglipVisionConfig(**VISION), text_config=tf.Gemma3TextConfig(**_gemma()),
        mm_tokens_per_image=4, boi_token_index=IMAGE_TOKEN + 1, eoi_token_index=IMAGE_TOKEN + 2,
        image_token_index=IMAGE_TOKEN),
        images=lambda config, batch: _square(config.vision_config, batch), extra=_gemma3_extra),
    Architecture("paligemma", "vision_language", tf.PaliGemmaForConditionalGeneration, lambda: tf.PaliGemmaConfig(
        vision_config=tf.SiglipVisionConfig(**VISION, projection_dim=HIDDEN),
        text_config=tf.GemmaConfig(**_lm(head_dim=16)), image_token_index=IMAGE_TOKEN, vocab_size=VOCAB,
        projection_dim=HIDDEN, hidden_size=HIDDEN),
        images=lambda config, batch: _square(config.vision_config, batch)),
    # -- vision encoders ----------------------------------------------------------------------------------------
    Architecture("vit", "vision_encoder", tf.ViTForImageClassification,
                 lambda: tf.ViTConfig(**VISION, num_labels=3),
                 images=_square),
    Architecture("deit", "vision_encoder", tf.DeiTForImageClassification,
                 lambda: tf.DeiTConfig(**VISION, num_labels=3),
                 images=_square),
    Architecture("dinov2", "vision_encoder", tf.Dinov2ForImageClassification,
                 lambda: tf.Dinov2Config(**{k: v for k, v in VISION.items() if k != "intermediate_size"},
                                         mlp_ratio=2, num_labels=3),
                 images=_square),
    Architecture("siglip_vision", "vision_encoder", tf.SiglipVisionModel, lambda: tf.SiglipVisionConfig(**VISION),
                 images=_square),
    Architecture("clip_vision", "vision_encoder", tf.CLIPVisionModel, lambda: tf.CLIPVisionConfig(**VISION),
                 images=_square),
]}


def tiny_model(name: str, seed: int = 0) -> tf.PreTrainedModel:
    """A tiny random model of architecture ``name`` (a key of :data:`ARCHITECTURES`), in eval mode."""
    return ARCHITECTURES[name].build(seed)


# Causal LMs that hfprune names nowhere: handled by the walk alone.
UNSEEN = ("olmo2", "granite", "stablelm", "cohere")


def build_unseen(model_type: str, seed: int = 0) -> tf.PreTrainedModel:
    """A tiny random causal LM of ``model_type``, built through transformers' Auto classes."""
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(tf.AutoConfig.for_model(model_type, **_lm())).eval()


def token_ids(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of random text tokens, left-padded so the rows differ in length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, IMAGE_TOKEN - 10, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        mask[row, :row] = 0
        ids[row, :row] = PAD
    return ids, mask


def image_token_count(model: tf.PreTrainedModel, images: dict) -> int:
    """How many image tokens the model's vision tower and connector make of ``images`` (all images together)."""
    with torch.no_grad():
        features = model.get_image_features(**images)
    features = getattr(features, "pooler_output", features)
    if isinstance(features, (list, tuple)):
        return sum(feature.shape[-2] if feature.dim() > 2 else feature.shape[0] for feature in features)
    return features.shape[0] * features.shape[1] if features.dim() == 3 else features.shape[0]


def calibration_batches(arch: Architecture, model: tf.PreTrainedModel, batches: int = 2, batch: int = 2,
                        length: int = 12) -> list[dict]:
    """Plain-tensor model inputs for ``arch``: text, text with images, or pixels."""
    config = model.config
    out = []
    for index in range(batches):
        if arch.kind == "vision_encoder":
            out.append(arch.images(config, batch))
            continue
        ids, mask = token_ids(batch, length, seed=index)
        inputs = {}
        if arch.kind == "vision_language":
            images = arch.images(config, batch)
            per_image = image_token_count(model, images) // batch
            image_ids = torch.full((batch, per_image), IMAGE_TOKEN)
            ids = torch.cat([ids[:, :2], image_ids, ids[:, 2:]], dim=1)
            mask = torch.cat([mask[:, :2], torch.ones_like(image_ids), mask[:, 2:]], dim=1)
            inputs.update(images)
        inputs.update(input_ids=ids, attention_mask=mask, **arch.extra(config, ids))
        out.append(inputs)
    return out
