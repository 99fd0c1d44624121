"""Convert public TinyLLaVA-3.1B checkpoints to transformers' ``LlavaForConditionalGeneration`` + ``LlavaProcessor``.

TinyLLaVA-3.1B = SigLIP-so400m (384 px, patch 14) + 2-layer GELU MLP connector + Phi-2. Two public layouts:

``legacy`` — ``bczhou/TinyLLaVA-3.1B`` (LLaVA codebase, class ``TinyLlavaPhiForCausalLM``, model_type
``tiny_llava_phi``): a ``PhiForCausalLM`` whose ``model`` also holds ``vision_tower.vision_tower`` and
``mm_projector``; its ``lm_head`` has no bias. The SigLIP tower drops its last encoder layer and its pooling head
when it loads and feeds all 729 patch states of its (new) last layer to the connector, so the converted tower
keeps the layers the checkpoint holds, reads ``hidden_states[-1]`` and keeps every patch (strategy ``full``).

The legacy model builds its tower with ``delay_load`` and loads it at inference from the config's
``mm_vision_tower`` (``bczhou/TinyLLaVA-3.1B-SigLIP`` for the 3.1B): ``SigLipVisionModel.from_pretrained`` of
that SigLIP checkpoint, then ``del encoder.layers[-1:]`` and ``head = Identity()``. So a legacy checkpoint may
hold no ``model.vision_tower.vision_tower.vision_model.*`` keys; the tower then comes from a separate SigLIP
checkpoint (``vision_tower``: a directory or Hub id, by default ``mm_vision_tower``; given explicitly it also
replaces a tower the checkpoint holds, as the legacy code's reload does). Its ``vision_model.X`` becomes the
legacy ``model.vision_tower.vision_tower.vision_model.X``, its config.json sizes the tower (so400m's without one)
and, as in the legacy code, the tower keeps ``num_hidden_layers - 1`` encoder layers: the checkpoint holds all
``num_hidden_layers`` (the last one and the head are left out) or is a tower saved after that cut, with
``num_hidden_layers - 1`` layers (all kept); any other count is an error. A full ``SiglipModel`` checkpoint's
text half (``text_model.*``, ``logit_scale``, ``logit_bias``) is left out as the legacy loader leaves it out.
The converted tower then has exactly the layers it holds, like an embedded one (26 of so400m's 27, layer -1).

``factory`` — ``tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B`` (TinyLLaVA Factory, ``TinyLlavaForConditionalGeneration``,
model_type ``tinyllava``, ``trust_remote_code``): ``language_model`` (a ``PhiForCausalLM``, whose ``lm_head`` has a
bias), ``vision_tower._vision_tower`` (a full ``SiglipVisionModel``) and ``connector._connector``. Its vision
strategy ``patch`` drops the first of SigLIP's 729 patch states (``image_features[:, 1:]``) even though SigLIP has
no CLS token, so it becomes transformers' strategy ``default`` (728 image tokens); ``cls_patch`` becomes ``full``.
transformers' Llava ``lm_head`` has no bias, so Phi-2's ``lm_head.bias`` is folded into ``lm_head.weight``
exactly (see :func:`~hfprune.convert.writer.fold_lm_head_bias`).

Where the names come from (public sources, read when this converter was written):

- TinyLLaVA/TinyLLaVA_Factory: ``tinyllava/model/modeling_tinyllava.py`` (attributes ``language_model``,
  ``vision_tower``, ``connector``), ``tinyllava/model/vision_tower/base.py`` (``_vision_tower``; feature layer and
  the ``patch`` → ``[:, 1:]`` selection), ``tinyllava/model/vision_tower/siglip.py`` (``SiglipVisionModel``),
  ``tinyllava/model/connector/base.py`` + ``mlp.py`` (``_connector`` = Linear, GELU, Linear),
  ``tinyllava/model/llm/phi.py`` (``PhiForCausalLM``; pad token = unk token),
  ``tinyllava/model/configuration_tinyllava.py`` (config fields ``llm_model_name_or_path``, ``text_config``,
  ``vision_config``, ``connector_type``, ``vision_feature_layer``, ``vision_feature_select_strategy``,
  ``image_aspect_ratio``, ``tokenizer_model_max_length``, ``pad_token``...) and
  ``tinyllava/model/convert_legecy_weights_to_tinyllavafactory.py`` (the legacy → factory key prefixes and the
  legacy config fields ``mm_vision_tower``, ``mm_projector_type``, ``mm_vision_select_layer``,
  ``mm_vision_select_feature``, ``tokenizer_model_max_length``, ``pad_token``...).
- The legacy TinyLLaVABench code (kept in TinyLLaVA_Factory's history, commit 8a70e23e, and in
  josephtey/TinyLLaVABench): ``tinyllava/model/language_model/llava_phi.py``, ``tinyllava/model/llava_arch.py``,
  ``tinyllava/model/multimodal_encoder/siglip_encoder.py`` (``del encoder.layers[-1:]``, ``head = Identity``,
  ``hidden_states[-1]``, 729 tokens), ``tinyllava/model/multimodal_projector/builder.py`` (``mlp2x_gelu``).
- The Hub's remote code of the factory model (a copy: liuutin9/FPGA-Acceleration-of-TinyLLaVA-Inference-via-HLS,
  ``modeling_tinyllava_phi.py``, with its weight loader naming ``vision_tower._vision_tower.vision_model...`` and
  ``connector._connector.{0,2}``), and a factory ``config.json`` of a sibling model (alisalamatian1/ChartGaze,
  ``models/TinyLLaVA/my_modeling/TinyLLaVA-OpenELM-450M-SigLIP-0.89B_wAttn/config.json``).
- The legacy loader: TinyLLaVA_Factory's history (``tinyllava/model/builder.py`` ``load_pretrained_model``:
  ``if not vision_tower.is_loaded: vision_tower.load_model()``; ``tinyllava/model/llava_arch.py``:
  ``build_vision_tower(config, delay_load=True)``; ``multimodal_encoder/siglip_encoder.py`` ``load_model``) and
  transformers' ``models/llava/convert_llava_weights_to_hf.py`` (whose recipe calls
  ``model.get_vision_tower().load_model()`` before saving, because LLaVA checkpoints need not hold the tower; for
  SigLIP it uses 26 layers, no head, layer -1, strategy ``full``, as here).
- transformers 5.x itself (the pinned version): ``LlavaForConditionalGeneration`` parameter names.
"""

from hfprune.convert.tinyllava import convert_tinyllava

__all__ = ["convert_tinyllava"]
