"""Where TinyLLaVA's pieces sit in a transformers ``LlavaForConditionalGeneration`` (5.x) with a Phi language model."""

# What the default unstructured targets (the Linears of the language model's decoder blocks, found by walking the
# model: hfprune.models.structure) are in a TinyLLaVA — a Llava (transformers 5.x) with a Phi LM — as regexes, for
# benchmarks and tests that pin them: the vision tower, the connector, the embeddings and the LM head never match.
PHI_DECODER_LINEARS = (
    r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|dense)",
    r"model\.language_model\.layers\.\d+\.mlp\.(fc1|fc2)",
)
