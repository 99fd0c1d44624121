"""`hfprune convert tinyllava`: both public TinyLLaVA-3.1B layouts become plain transformers Llava checkpoints."""

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration, LlavaProcessor
from typer.testing import CliRunner

from hfprune.cli import app
from hfprune.errors import HfpruneError
from hfprune.convert import convert_tinyllava
from hfprune.convert.configs import llava_config, source_vision_config
from hfprune.convert.keys import LEGACY_TOWER, LM_HEAD_BIAS, plan_conversion, target_name
from hfprune.convert.tower import _as_legacy_tower_key
from hfprune.convert.writer import fold_lm_head_bias
from tinyllava_layouts import (
    REAL_FACTORY_CONFIG,
    REAL_LEGACY_CONFIG,
    SO400M,
    TINY_TOWER_DIR,
    factory_weight_shapes,
    legacy_weight_shapes,
    siglip_shapes,
    write_factory_checkpoint,
    write_legacy_checkpoint,
    write_siglip_tower,
)

REAL = {"legacy": (REAL_LEGACY_CONFIG, legacy_weight_shapes), "factory": (REAL_FACTORY_CONFIG, factory_weight_shapes)}
PHI2_IMAGE_TOKEN = 50295  # <image> appended to Phi-2's 50,295 tokens


# ------------------------------------------------------------------ (a) the key tables on the real 3.1B names


@pytest.mark.parametrize("layout", ["legacy", "factory"])
def test_key_tables_map_every_real_parameter_bijectively(layout):
    config, shapes_of = REAL[layout]
    shapes = shapes_of()
    llava = llava_config(config, layout, shapes, image_token_index=PHI2_IMAGE_TOKEN,
                         vision=source_vision_config(config, layout))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava)
    parameters = {name: tuple(p.shape) for name, p in model.named_parameters()}

    mapped = {key: target_name(key, layout) for key in shapes if key != LM_HEAD_BIAS[layout]}
    assert None not in mapped.values()
    assert sorted(mapped.values()) == sorted(parameters), "onto, and no parameter twice"
    assert all(shapes[key] == parameters[target] for key, target in mapped.items())
    plan = plan_conversion(shapes, layout, parameters)
    assert plan.renames == mapped and not plan.dropped
    assert plan.lm_head_bias == (LM_HEAD_BIAS[layout] if layout == "factory" else None)
    assert sum(p.numel() for p in model.parameters()) > 3.0e9


def test_real_configs_become_the_expected_llava_configs():
    legacy = llava_config(REAL_LEGACY_CONFIG, "legacy", legacy_weight_shapes(), image_token_index=PHI2_IMAGE_TOKEN)
    factory = llava_config(REAL_FACTORY_CONFIG, "factory", factory_weight_shapes(), image_token_index=PHI2_IMAGE_TOKEN,
                           vision=source_vision_config(REAL_FACTORY_CONFIG, "factory"))
    for config in (legacy, factory):
        text = config.text_config
        assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size, text.vocab_size) == \
            (2560, 32, 10240, 51200)
        assert text.rope_parameters["partial_rotary_factor"] == 0.4 and not config.tie_word_embeddings
        assert (config.vision_config.hidden_size, config.vision_config.image_size) == (1152, 384)
        assert config.projector_hidden_act == "gelu" and config.multimodal_projector_bias
    # legacy: 26 kept layers, their last output, all 729 patches; factory: layer -2 of 27, first patch dropped
    assert (legacy.vision_config.num_hidden_layers, legacy.vision_feature_layer,
            legacy.vision_feature_select_strategy, legacy.image_seq_length) == (26, -1, "full", 729)
    assert not legacy.vision_config.vision_use_head
    assert (factory.vision_config.num_hidden_layers, factory.vision_feature_layer,
            factory.vision_feature_select_strategy, factory.image_seq_length) == (27, -2, "default", 728)


@pytest.mark.parametrize("layers", [27, 26])
def test_a_real_siglip_tower_becomes_the_legacy_checkpoints_tower(layers):
    """bczhou/TinyLLaVA-3.1B-SigLIP (so400m: 27 layers and a head, or 26 saved after the legacy cut) gives
    exactly the tower names a legacy checkpoint that holds its tower has."""
    siglip = siglip_shapes("vision_model.", SO400M, layers, pooling_head=layers == 27)
    renamed = {_as_legacy_tower_key(key, kept_layers=26): shape for key, shape in siglip.items()}
    renamed.pop(None, None)
    assert renamed == {key: shape for key, shape in legacy_weight_shapes().items() if key.startswith(LEGACY_TOWER)}


# ------------------------------------------------------------------ (b) end to end on tiny checkpoints


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {"legacy": write_legacy_checkpoint(root / "legacy"),
            "legacy-bin": write_legacy_checkpoint(root / "legacy-bin", weights_format="bin"),
            "factory": write_factory_checkpoint(root / "factory")}


def _image() -> Image.Image:
    return Image.fromarray((torch.rand(30, 40, 3, generator=torch.Generator().manual_seed(3)) * 255)
                           .to(torch.uint8).numpy())


def _assert_converts_exactly(source, out, image_tokens: int = 16, reference=None) -> LlavaForConditionalGeneration:
    """``out`` loads with plain transformers, every tensor equals its source and the logits the reference's."""
    model, info = LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    processor = LlavaProcessor.from_pretrained(out)
    state = model.state_dict()
    assert set(state) == set(source.origin)
    for parameter, key in source.origin.items():
        if parameter == "lm_head.weight" and source.lm_head_bias is not None:
            continue  # the factory's lm_head.bias is folded into it
        assert torch.equal(state[parameter], source.tensors[key]), parameter

    inputs = processor(images=_image(), text="<image>\nWhat is in the image?", return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == image_tokens
    with torch.no_grad():
        logits = model(**inputs).logits
        expected = (reference or source.reference)(**inputs).logits
    if source.lm_head_bias is not None:
        expected = expected + source.lm_head_bias
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    return model


@pytest.mark.parametrize("name, image_tokens", [("legacy", 16), ("legacy-bin", 16), ("factory", 15)])
def test_conversion_loads_with_plain_transformers_and_gives_the_reference_logits(sources, tmp_path, name,
                                                                                 image_tokens):
    source = sources[name]
    out = convert_tinyllava(source.directory, tmp_path / "out", progress=False, max_shard_bytes=256 * 1024)
    _assert_converts_exactly(source, out, image_tokens)


def test_output_is_sharded_like_save_pretrained(sources, tmp_path):
    out = convert_tinyllava(sources["factory"].directory, tmp_path / "out", progress=False,
                            max_shard_bytes=256 * 1024)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == sorted(p.name for p in out.glob("model-*.safetensors"))
    assert any(name.startswith("language_model.model.layers.") for name in index["weight_map"]), \
        "keys as save_pretrained writes them"
    assert not (tmp_path / "out.partial").exists()


def test_processor_adds_the_image_token_pad_and_chat_template(sources, tmp_path):
    out = convert_tinyllava(sources["legacy"].directory, tmp_path / "out", progress=False)
    processor = LlavaProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<image>") == len(tokenizer) - 1 and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.model_max_length == 3072 and "USER: " in processor.chat_template
    # image_aspect_ratio "pad": a wide image is padded to a square of the mean grey before resizing
    wide = Image.new("RGB", (30, 10), (255, 0, 0))
    pixels = processor.image_processor(wide, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 30, 30)
    torch.testing.assert_close(pixels[0, :, 0, 0], torch.full((3,), (127 / 255 - 0.5) / 0.5), atol=1e-6, rtol=0)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["pad_token_id"] == tokenizer.eos_token_id


def test_dtype_casts_every_tensor(sources, tmp_path):
    out = convert_tinyllava(sources["factory"].directory, tmp_path / "out", dtype="bfloat16", progress=False)
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


# ------------------------------------------------------------------ (c) user errors


def _copy(source, tmp_path) -> Path:
    return Path(shutil.copytree(source.directory, tmp_path / "src"))


def _edit_weights(directory: Path, edit) -> None:
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.pop("model.layers.1.mlp.fc2.weight"), "missing keys in the legacy checkpoint: "
                                                       "model.layers.1.mlp.fc2.weight"),
    (lambda t: t.update({"extra.weight": torch.zeros(2)}), "unknown keys in the legacy checkpoint: extra.weight"),
    (lambda t: t.update({"model.image_newline": torch.zeros(2)}), "unexpected keys in the legacy checkpoint "),
    (lambda t: t.update({"model.mm_projector.0.bias": torch.zeros(3)}), "shape mismatch for "
                                                                        "'model.mm_projector.0.bias'"),
])
def test_bad_weights_are_named_and_nothing_is_written(sources, tmp_path, edit, expected):
    directory = _copy(sources["legacy"], tmp_path)
    _edit_weights(directory, edit)
    with pytest.raises(HfpruneError, match="^" + re.escape(expected)) as error:
        convert_tinyllava(directory, tmp_path / "out", progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_unknown_layout_and_undetectable_layout(sources, tmp_path):
    with pytest.raises(HfpruneError, match="unknown layout 'llava15'; choose auto, legacy, factory"):
        convert_tinyllava(sources["legacy"].directory, tmp_path / "out", layout="llava15")
    directory = _copy(sources["factory"], tmp_path)
    (directory / "config.json").write_text("{}")
    for name in directory.glob("model-*.safetensors"):
        tensors = load_file(name)
        save_file({k.replace("connector._connector", "proj"): v for k, v in tensors.items()}, name)
    with pytest.raises(HfpruneError, match="pass --layout legacy"):
        convert_tinyllava(directory, tmp_path / "out", progress=False)


def test_non_empty_out_is_refused(sources, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(HfpruneError, match="--out .* is not empty"):
        convert_tinyllava(sources["legacy"].directory, tmp_path / "out", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_hub_id_offline_says_to_download_it(tmp_path):
    with pytest.raises(HfpruneError, match="cannot download 'bczhou/TinyLLaVA-3.1B'.*pass the local directory"):
        convert_tinyllava("bczhou/TinyLLaVA-3.1B", tmp_path / "out", progress=False)


# ------------------------------------------------------------------ (d) the legacy vision tower from a separate SigLIP


def _set_config(directory: Path, **fields) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(fields)
    (directory / "config.json").write_text(json.dumps(config))


def _towerless(tmp_path, seed: int = 0):
    """A tiny legacy checkpoint without tower weights (its config's mm_vision_tower: a local directory)."""
    return write_legacy_checkpoint(tmp_path / "src", seed=seed, with_tower=False)


@pytest.mark.parametrize("form, weights_format, where", [
    ("whole", "safetensors", "relative"), ("cut", "bin", "relative"), ("siglip", "safetensors", "absolute")])
def test_a_checkpoint_without_its_tower_takes_the_one_mm_vision_tower_names(tmp_path, form, weights_format,
                                                                              where):
    source = _towerless(tmp_path)
    if where == "relative":  # the checkpoint's own mm_vision_tower: a directory relative to the checkpoint
        tower = write_siglip_tower(source.directory / TINY_TOWER_DIR, source.reference, form, weights_format)
    else:
        tower = write_siglip_tower(tmp_path / "elsewhere" / "siglip", source.reference, form, weights_format)
        _set_config(source.directory, mm_vision_tower=str(tower.directory))
    out = convert_tinyllava(source.directory, tmp_path / "out", progress=False)
    model = _assert_converts_exactly(source.with_tower(tower), out)
    # what the legacy tower keeps: 2 of the 3 layers, no head, the last kept layer's states
    vision = model.config.vision_config
    assert (vision.num_hidden_layers, vision.vision_use_head, model.config.vision_feature_layer) == (2, False, -1)


def test_a_hub_id_as_mm_vision_tower_offline_asks_for_vision_tower(tmp_path):
    source = _towerless(tmp_path)
    _set_config(source.directory, mm_vision_tower="bczhou/TinyLLaVA-3.1B-SigLIP")
    shutil.rmtree(source.directory / TINY_TOWER_DIR)
    with pytest.raises(HfpruneError, match=r"holds no vision tower weights.*mm_vision_tower: cannot download "
                                           r"'bczhou/TinyLLaVA-3.1B-SigLIP'.*pass the local directory DIR with "
                                           r"--vision-tower") as error:
        convert_tinyllava(source.directory, tmp_path / "out", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()

    tower = write_siglip_tower(tmp_path / "TinyLLaVA-3.1B-SigLIP", source.reference)  # sizes from its config.json
    result = CliRunner().invoke(app, ["convert", "tinyllava", str(source.directory), "--out", str(tmp_path / "out"),
                                      "--vision-tower", str(tower.directory), "--no-progress"])
    assert result.exit_code == 0, result.output
    _assert_converts_exactly(source.with_tower(tower), tmp_path / "out")


def test_an_explicit_vision_tower_replaces_the_checkpoints_own(sources, tmp_path, caplog):
    source = sources["legacy"]
    other = write_legacy_checkpoint(tmp_path / "other", seed=5)  # another tower, as a separate SigLIP checkpoint
    tower = write_siglip_tower(tmp_path / "siglip", other.reference, "whole")
    with caplog.at_level(logging.WARNING, logger="hfprune.convert.tower"):
        out = convert_tinyllava(source.directory, tmp_path / "out", vision_tower=tower.directory, progress=False)
    assert [r.getMessage() for r in caplog.records] == \
        [f"note: the vision tower comes from {tower.directory}; the one in the checkpoint is left out"]
    expected = write_legacy_checkpoint(tmp_path / "copy").reference  # the same reference, then the other tower
    expected.model.vision_tower.load_state_dict(other.reference.model.vision_tower.state_dict())
    _assert_converts_exactly(source.with_tower(tower), out, reference=expected)


def _drop(directory: Path, dropped) -> Path:
    """``directory``, its ``model.safetensors`` less the keys for which ``dropped(key)`` holds."""
    tensors = load_file(directory / "model.safetensors")
    save_file({key: tensor for key, tensor in tensors.items() if not dropped(key)}, directory / "model.safetensors")
    return directory


def _own_tower(key: str) -> bool:
    return key.startswith(LEGACY_TOWER)


@pytest.mark.parametrize("dropped, edit_tower, expected", [
    (lambda key: key in (LEGACY_TOWER + "post_layernorm.weight", LEGACY_TOWER + "encoder.layers.0.mlp.fc1.bias"),
     None,
     f"the legacy checkpoint holds only part of its vision tower: {LEGACY_TOWER}encoder.layers.0.mlp.fc1.bias, "
     f"{LEGACY_TOWER}post_layernorm.weight missing (2 of 37 tensors); pass a whole SigLIP tower with --vision-tower"),
    (lambda key: key.startswith(LEGACY_TOWER + "encoder."),  # the embeddings only
     None, "the legacy checkpoint holds only part of its vision tower: "),
    (_own_tower, lambda tower: _drop(tower, lambda key: key.endswith("layers.1.mlp.fc2.weight")),
     "the vision tower {tower} lacks vision_model.encoder.layers.1.mlp.fc2.weight (1 of the 37 tensors the "
     "legacy tower loads)"),
    (_own_tower, lambda tower: _drop(tower, lambda key: ".layers.1." in key or ".layers.2." in key),
     "the vision tower {tower} holds 1 encoder layers; with num_hidden_layers 3 the legacy tower needs 3 (a whole "
     "tower, of which it keeps 2) or 2 (a tower saved after that cut)"),
    (_own_tower, lambda tower: save_file({"visual.proj.weight": torch.zeros(2)}, tower / "model.safetensors"),
     "the vision tower {tower} is not a SigLIP checkpoint: expected vision_model.* keys, found visual.proj.weight"),
    (_own_tower, lambda tower: _set_config(tower.parent, mm_vision_tower=None),
     "the legacy checkpoint holds no vision tower weights and its config.json names no mm_vision_tower; pass the "
     "SigLIP tower's directory with --vision-tower"),
])
def test_a_partial_or_wrong_tower_is_named(sources, tmp_path, dropped, edit_tower, expected):
    main = _drop(_copy(sources["legacy"], tmp_path), dropped)
    tower = write_siglip_tower(main / TINY_TOWER_DIR, sources["legacy"].reference, "whole").directory
    if edit_tower is not None:
        edit_tower(tower)
    with pytest.raises(HfpruneError, match="^" + re.escape(expected.format(tower=tower))) as error:
        convert_tinyllava(main, tmp_path / "out", progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_vision_tower_is_for_the_legacy_layout_only(sources, tmp_path):
    with pytest.raises(HfpruneError, match="--vision-tower is for the legacy layout only"):
        convert_tinyllava(sources["factory"].directory, tmp_path / "out", vision_tower=tmp_path, progress=False)


# ------------------------------------------------------------------ (e) the command line


def test_cli_convert(sources, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "tinyllava", str(sources["factory"].directory), "--out",
                                 str(tmp_path / "out"), "--layout", "factory", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "out") in result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == \
        ["LlavaForConditionalGeneration"]
    refused = runner.invoke(app, ["convert", "llava-next", str(sources["factory"].directory), "--out",
                                  str(tmp_path / "other")])
    assert isinstance(refused.exception, HfpruneError) and "tinyllava" in str(refused.exception)


# ------------------------------------------------------------------ details


def test_lm_head_bias_folds_exactly_through_the_final_layer_norm():
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(300, 48, generator=generator), torch.randn(300, generator=generator)
    norm = torch.nn.LayerNorm(48)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(48, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(48, generator=generator) * 0.1 + 0.05)
    folded = fold_lm_head_bias(weight, bias, norm.weight.detach(), norm.bias.detach(), torch.float32)
    hidden = norm(torch.randn(5, 48, generator=generator) * 3).detach()
    torch.testing.assert_close(hidden @ folded.T, hidden @ weight.T + bias, atol=1e-4, rtol=0)
    assert torch.equal(fold_lm_head_bias(weight, torch.zeros(300), norm.weight, norm.bias, torch.float32), weight)
    with pytest.raises(HfpruneError, match="final LayerNorm has zero weights"):
        fold_lm_head_bias(weight, bias, torch.zeros(48), norm.bias.detach(), torch.float32)


def test_buffers_saved_by_older_transformers_are_dropped(sources, tmp_path):
    directory = _copy(sources["legacy"], tmp_path)
    _edit_weights(directory, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8),
                                                 "model.vision_tower.vision_tower.vision_model.embeddings.position_ids":
                                                     torch.arange(16)[None]}))
    out = convert_tinyllava(directory, tmp_path / "out", progress=False)
    assert len(load_file(out / "model.safetensors")) == len(sources["legacy"].origin)


def test_a_tokenizer_larger_than_the_vocabulary_grows_it(tmp_path):
    source = write_factory_checkpoint(tmp_path / "src", vocab_size=390)  # build_tokenizer has 400 tokens
    out = convert_tinyllava(source.directory, tmp_path / "out", progress=False)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    embeddings = model.get_input_embeddings().weight.detach()
    assert embeddings.shape[0] == len(LlavaProcessor.from_pretrained(out).tokenizer) == 400
    assert torch.equal(embeddings[:390], source.tensors["language_model.model.embed_tokens.weight"])
    torch.testing.assert_close(embeddings[395], embeddings[:390].mean(0))
