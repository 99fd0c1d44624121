"""Tokenizers and processors for the tiny models of :mod:`tiny_models`, built offline, with the real chat templates.

Every architecture gets what its Hub checkpoints ship: a causal LM a tokenizer, a vision-language model a processor
(tokenizer, image processor and the chat template of a public checkpoint of that architecture), a vision encoder an
image processor. The tokenizer is a word-level vocabulary of :data:`tiny_models.VOCAB` ids assembled from a few
strings; every special token sits at the id the tiny model's config names (pad 0, bos 1, eos 2, the image token
120, ...), so a processor's token ids are the model's. Image processors are transformers' own classes at the vision
towers' 32-px size. :func:`save_checkpoint` writes a tiny model with its processor and a generation config whose
end-of-turn token stops generation, as a Hub checkpoint would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

from hfprune.models.generic.vision_language import lenient_video_check, video_stand_in
from tiny_models import ARCHITECTURES, BOS, EOS, PAD, UNSEEN, VOCAB, build_unseen

# Chat templates of public checkpoints (their chat_template.json), by architecture.
LLAVA_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
LLAVA_ONEVISION_TEMPLATE = (  # llava-hf/llava-onevision-qwen2-0.5b-ov-hf (answers marked with {% generation %})
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN2_VL_TEMPLATE = (  # Qwen/Qwen2-VL-2B-Instruct and Qwen/Qwen2.5-VL-3B-Instruct
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (  # HuggingFaceTB/SmolVLM-Instruct
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
GEMMA3_TEMPLATE = (  # google/gemma-3-4b-it
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)

# Words of the fixtures' conversations and benchmark prompts; everything else reads as <unk>.
WORDS = """USER ASSISTANT User Assistant system user assistant model You are helpful a the is it in on of to
and with What what Which Who Is Answer The Yes No yes no not left right red blue dog cat car tree man sky mat
book inside doing sitting looking number jersey team describe short region image picture question answer single
word phrase using option letter from given choices directly Context A B C D . , ? ! : ' ( ) [ ] - 0 1 2 3 4 5
""".split()
SPECIALS = {  # role and structure tokens of the templates above, at free ids
    "<unk>": 3, "<|im_start|>": 100, "<|im_end|>": 101, "<start_of_turn>": 102, "<end_of_turn>": 103,
    "<end_of_utterance>": 104, "<fake_token_around_image>": 105, "<global-img>": 106, "<|endoftext|>": 107,
}


def tokenizer(named: dict[str, int], bos: str = "<s>", eos: str = "</s>", pad: str = "<pad>",
              template: str | None = None, extra: dict[str, str] | None = None) -> tf.PreTrainedTokenizerFast:
    """A word-level tokenizer of :data:`VOCAB` ids: ``named`` special tokens at their ids, bos/eos/pad at the tiny
    models' ids, words everywhere else; ``extra`` names special tokens by role (``image_token``, ...)."""
    specials = {**SPECIALS, **named, pad: PAD, bos: BOS, eos: EOS}
    used = set(specials.values())
    free = [index for index in range(VOCAB) if index not in used]
    vocab = dict(specials)
    words = list(dict.fromkeys(WORDS))
    assert len(words) <= len(free), (len(words), len(free))
    words += [f"<unused{index}>" for index in range(len(free) - len(words))]  # every id used: added tokens go after
    vocab.update(zip(words, free))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    built = tf.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
                                       unk_token="<unk>", extra_special_tokens=extra or {}, chat_template=template)
    built.add_special_tokens({"additional_special_tokens": [token for token in specials if token not in
                                                            (bos, eos, pad, "<unk>")]})
    assert len(built) == VOCAB, len(built)
    return built


def _pil(name: str) -> type:
    import transformers.models.auto.image_processing_auto as auto

    return getattr(tf, auto.IMAGE_PROCESSOR_MAPPING_NAMES[name]["pil"])


def _square(name: str, size: int = 32, **kwargs):
    """The image processor of ``name`` making ``size``-px squares (resized, and center-cropped where it crops)."""
    processor = _pil(name)(size={"height": size, "width": size}, **kwargs)
    if getattr(processor, "crop_size", None) is not None:
        processor.crop_size = {"height": size, "width": size}
    return processor


def _llava(config):
    vocabulary = tokenizer({"<image>": config.image_token_index}, template=LLAVA_TEMPLATE)
    images = _pil("llava")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return tf.LlavaProcessor(images, vocabulary, patch_size=config.vision_config.patch_size,
                             vision_feature_select_strategy=config.vision_feature_select_strategy,
                             num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)


def _llava_onevision(config):
    vocabulary = tokenizer({"<image>": config.image_token_index, "<video>": config.video_token_index},
                           template=LLAVA_ONEVISION_TEMPLATE)
    images = _pil("llava_onevision")(size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32]])
    side = config.vision_config.image_size // config.vision_config.patch_size
    videos = _videos({"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": 32, "width": 32}})
    with lenient_video_check():
        return tf.LlavaOnevisionProcessor(images, vocabulary, videos, num_image_tokens=side * side,
                                          vision_feature_select_strategy=config.vision_feature_select_strategy,
                                          chat_template=LLAVA_ONEVISION_TEMPLATE)


def _videos(settings: dict):
    """The video processor of ``settings``: transformers' own with torchvision installed, else a stand-in that keeps
    the settings (hfprune's, as it loads such processors without torchvision)."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return getattr(tf, settings["video_processor_type"])(**{k: v for k, v in settings.items()
                                                                if k != "video_processor_type"})
    return video_stand_in(settings)


def _qwen_vl(processor_class):
    def build(config):
        vision = config.vision_config
        vocabulary = tokenizer({"<|image_pad|>": config.image_token_id, "<|video_pad|>": config.video_token_id,
                                "<|vision_start|>": config.vision_start_token_id,
                                "<|vision_end|>": config.vision_end_token_id},
                               bos="<|endoftext|>", eos="<|im_end|>", template=QWEN2_VL_TEMPLATE)
        side = vision.patch_size * vision.spatial_merge_size
        sizes = {"patch_size": vision.patch_size, "merge_size": vision.spatial_merge_size,
                 "temporal_patch_size": vision.temporal_patch_size,
                 "size": {"shortest_edge": side * side, "longest_edge": 4 * side * side}}
        images = _pil("qwen2_vl")(**sizes)
        videos = _videos({"video_processor_type": "Qwen2VLVideoProcessor", **sizes})
        with lenient_video_check():
            return processor_class(images, vocabulary, videos, chat_template=QWEN2_VL_TEMPLATE)
    return build


def _idefics3(config):
    vocabulary = tokenizer({"<image>": config.image_token_id}, bos="<|im_start|>", eos="<end_of_utterance>",
                           template=IDEFICS3_TEMPLATE)
    size = config.vision_config.image_size
    images = _pil("idefics3")(do_image_splitting=False, size={"longest_edge": size},
                              max_image_size={"longest_edge": size})
    tokens = (size // config.vision_config.patch_size) ** 2 // config.scale_factor ** 2
    return tf.Idefics3Processor(images, vocabulary, image_seq_len=tokens, chat_template=IDEFICS3_TEMPLATE)


def _gemma3(config):
    vocabulary = tokenizer({"<image_soft_token>": config.image_token_index,
                            "<start_of_image>": config.boi_token_index, "<end_of_image>": config.eoi_token_index},
                           bos="<bos>", eos="<eos>", template=GEMMA3_TEMPLATE,
                           extra={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                  "eoi_token": "<end_of_image>"})
    return tf.Gemma3Processor(_square("gemma3"), vocabulary, image_seq_length=config.mm_tokens_per_image,
                              chat_template=GEMMA3_TEMPLATE)


def _paligemma(config):
    """PaliGemma checkpoints ship no chat template: the processor places the image tokens before the prompt."""
    vocabulary = tokenizer({"<image>": config.image_token_index}, bos="<bos>", eos="<eos>",
                           extra={"image_token": "<image>"})
    images = _square("paligemma")
    images.image_seq_length = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return tf.PaliGemmaProcessor(images, vocabulary)


def _text(config):
    return tokenizer({})


def _encoder(name: str) -> Callable:
    return lambda config: _square(name)


PROCESSORS: dict[str, Callable] = {
    **{name: _text for name, arch in ARCHITECTURES.items() if arch.kind == "causal_lm"},
    "llava": _llava, "llava_onevision": _llava_onevision,
    "qwen2_vl": _qwen_vl(tf.Qwen2VLProcessor), "qwen2_5_vl": _qwen_vl(tf.Qwen2_5_VLProcessor),
    "idefics3": _idefics3, "gemma3": _gemma3, "paligemma": _paligemma,
    "vit": _encoder("vit"), "deit": _encoder("deit"), "dinov2": _encoder("dinov2"),
    "siglip_vision": _encoder("siglip"), "clip_vision": _encoder("clip"),
}


def tiny_processor(name: str, config: tf.PretrainedConfig):
    """The tokenizer, processor or image processor of architecture ``name`` (or of a causal LM of :data:`UNSEEN`)
    for a model of ``config``."""
    return _text(config) if name in UNSEEN else PROCESSORS[name](config)


def kind_of(name: str) -> str:
    return "causal_lm" if name in UNSEEN else ARCHITECTURES[name].kind


def end_of_turn(processor) -> int | None:
    """The token a chat template closes an assistant turn with (what generation stops at), or None."""
    template = getattr(processor, "chat_template", None)
    if template is None:
        return None
    vocabulary = getattr(processor, "tokenizer", processor)
    for token in ("<|im_end|>", "<end_of_turn>", "<end_of_utterance>", "</s>"):
        if token in template or token == vocabulary.eos_token:
            return vocabulary.convert_tokens_to_ids(token)
    return None


def save_checkpoint(name: str, directory: str | Path, seed: int = 0) -> Path:
    """A tiny random model of architecture ``name`` (or a causal LM of :data:`UNSEEN`) with its processor, saved as
    a Hub checkpoint is."""
    directory = Path(directory)
    model = build_unseen(name, seed) if name in UNSEEN else ARCHITECTURES[name].build(seed)
    processor = tiny_processor(name, model.config)
    if getattr(model, "generation_config", None) is not None and kind_of(name) != "vision_encoder":
        stop = end_of_turn(processor)
        model.generation_config.eos_token_id = EOS if stop is None else sorted({EOS, stop})
        model.generation_config.pad_token_id = PAD
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
