"""`hfprune prune structured` on a tiny Llama and a tiny Qwen2.5-VL (native and own-code checkpoints, the model card,
one-line errors before any work), and an oracle study of a ViT-like encoder through the generic family's
``heads_ffn`` structure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from tiny_models import ARCHITECTURES, calibration_batches, token_ids
from vit_fixtures import make_imagenet_like
from hfprune.errors import HfpruneError
from hfprune.models.transformer.groups import block_groups
from hfprune.pruning.structured.gates import UnitGates


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "llama"
    ARCHITECTURES["llama"].build().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calibration.jsonl"
    ids, _ = token_ids(6, 10, seed=3)
    path.write_text("".join(json.dumps({"input_ids": row.tolist()}) + "\n" for row in ids))
    return path


def _logits(model, mask=None, groups=None):
    ids, attention = token_ids(2, 9, seed=5)
    with torch.no_grad():
        if mask is None:
            return model(input_ids=ids, attention_mask=attention).logits
        with UnitGates(model, groups) as gates:
            gates.set_mask(mask)
            return model(input_ids=ids, attention_mask=attention).logits


def _fresh_logits(checkpoints: dict, tmp_path) -> dict[str, torch.Tensor]:
    """Logits of each checkpoint (name -> (folder, trust_remote_code)) loaded with plain transformers in one process
    that never imports hfprune."""
    ids, attention = token_ids(2, 9, seed=5)
    torch.save({"input_ids": ids, "attention_mask": attention}, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        out = {{}}
        for name, (folder, trust) in {({k: (str(f), t) for k, (f, t) in checkpoints.items()})!r}.items():
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust).eval()
            with torch.no_grad():
                out[name] = model(**torch.load({str(tmp_path / 'inputs.pt')!r})).logits
        assert "hfprune" not in sys.modules
        torch.save(out, {str(tmp_path / 'out.pt')!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(tmp_path / "out.pt")


def _prune(*args):
    from hfprune.cli import app

    result = CliRunner().invoke(app, ["prune", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_help_says_the_structure_syntax():
    from hfprune.cli import app

    text = " ".join(CliRunner().invoke(app, ["prune", "structured", "--help"], env={"COLUMNS": "240"}).output.split())
    for phrase in ("heads=0.25", "kv_groups=0.25", "ffn=0.5", "layers=0.25", "--allocation", "global", "owl",
                   "llm_pruner_taylor", "block_influence", "--calibration-length"):
        assert phrase in text, phrase


def test_native_and_own_code_llama_checkpoints(llama, calibration, tmp_path):
    native, own = tmp_path / "native", tmp_path / "own"
    # uniform widths and removed layers: the original architecture, no remote code
    output = _prune("structured", llama, "--structure", "kv_groups=0.5,layers=0.34", "--method", "wanda",
                    "--calibration-data", calibration, "--calibration-length", "8", "--calibration-samples", "6",
                    "--out", native)
    assert "a native checkpoint" in output
    config = json.loads((native / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["num_hidden_layers"]) == (2, 1, 16, 2)
    assert "auto_map" not in config and not list(native.glob("*.py"))
    card = (native / "README.md").read_text()
    assert "Native checkpoint" in card and "trust_remote_code" not in card
    assert "MACs per 128-token sequence" in card and "| parameters |" in card
    facts = json.loads((native / "hfprune_pruning.json").read_text())
    assert facts["checkpoint"] == "native" and facts["params_after"] < facts["params_before"]
    assert facts["macs_after"] < facts["macs_before"]
    # per-layer widths (global allocation) with FLAP's bias compensation: the checkpoint carries its model code
    output = _prune(llama, "--structure", "heads=0.5,ffn=0.25", "--method", "flap", "--allocation", "global",
                    "--option", "compensate=true", "--calibration-data", calibration, "--calibration-length", "8",
                    "--out", own)
    assert "trust_remote_code=True" in output
    config = json.loads((own / "config.json").read_text())
    assert config["auto_map"] == {"AutoModelForCausalLM": "modeling_per_layer.PrunedLlamaForCausalLM"}
    assert config["architectures"] == ["PrunedLlamaForCausalLM"]
    card = (own / "README.md").read_text()
    assert "own model code" in card and "trust_remote_code=True" in card and "allocation: `global`" in card
    kept = json.loads((own / "hfprune_pruning.json").read_text())["groups"]
    assert sum(kept[f"layers.{i}.heads"][0] for i in range(3)) == 6
    assert sum(kept[f"layers.{i}.ffn"][0] for i in range(3)) == 216

    from hfprune.models import get_adapter

    dense = ARCHITECTURES["llama"].model_class.from_pretrained(llama).eval()
    mask = {name: tuple(kept) for name, kept in facts["mask"].items()}
    reloaded = get_adapter("causal_lm").load_pretrained(str(own))  # hfprune reads its own checkpoints too
    fresh = _fresh_logits({"native": (native, False), "own": (own, True)}, tmp_path)
    torch.testing.assert_close(fresh["native"], _logits(dense, mask, block_groups(dense)), atol=1e-5, rtol=0)
    torch.testing.assert_close(fresh["own"], _logits(reloaded), atol=1e-5, rtol=0)


def test_the_language_model_of_a_vlm_is_pruned_in_place(tmp_path, calibration):
    source = tmp_path / "qwen2_5_vl"
    arch = ARCHITECTURES["qwen2_5_vl"]
    dense = arch.build()
    dense.save_pretrained(source)
    out = tmp_path / "pruned"
    _prune("structured", source, "--structure", "ffn=0.5,layers=0.34", "--method", "l2", "--out", out)
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["intermediate_size"] == 48 and config["text_config"]["num_hidden_layers"] == 2
    assert config["vision_config"]["depth"] == 2 and "auto_map" not in config  # the vision tower is untouched
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    batch = calibration_batches(arch, dense, batches=1)[0]
    groups = block_groups(dense)
    with UnitGates(dense, groups) as gates, torch.no_grad():
        gates.set_mask({name: tuple(kept) for name, kept in facts["mask"].items()})
        expected = dense(**batch).logits
    pruned = arch.model_class.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(pruned(**batch).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("args, message", [
    (["--structure", "heads=1.0"], "removes every unit"),
    (["--structure", "heads=0.25"], "multiple of 2"),
    (["--structure", "heads=0.5", "--method", "wanda"], "--method wanda needs --calibration-data"),
    (["--structure", "ffn=0.5", "--allocation", "owl"], "--allocation owl needs --calibration-data"),
    (["--structure", "layers.0.heads=0.5", "--allocation", "global"], "is no kind"),
    (["--structure", "ffn=0.5", "--method", "flap", "--option", "compensation=true"], "option compensation"),
    (["--structure", "heads=0.5", "--method", "block_influence", "--calibration-data", "x.jsonl"],
     "scores layers, not heads"),
])
def test_bad_input_is_one_line_before_any_work(llama, tmp_path, args, message):
    from hfprune.cli import app

    result = CliRunner().invoke(app, ["prune", "structured", str(llama), *args, "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, HfpruneError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "out").exists()


# -- the oracle study: a family offers unstructured and heads_ffn, the recipe chooses ---------------------------------

def _study_recipe(data_path, model_path="deit", **pruning) -> dict:
    return {"name": "tiny_deit", "seed": 1, "model": {"family": "vision_encoder", "pretrained": str(model_path)},
            "data": {"dataset": "imagenet_1k", "path": str(data_path), "image_size": 32},
            "pruning": {"settings": [{"ratios": {"heads": 0.5, "ffn": 0.5}, "candidates": {"mode": "random",
                                                                                         "num": 2}}], **pruning},
            "retrain": {"epochs": 1, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 1e-3}},
            "evaluation": {"batch_size": 64}}


def test_a_family_offers_several_structures_and_the_recipe_chooses(tmp_path):
    from hfprune.study.registry import parse_recipe

    recipe = parse_recipe(_study_recipe(tmp_path, structure="heads_ffn"))
    assert recipe.structure == "heads_ffn"
    with pytest.raises(HfpruneError, match="is pruned unstructured: give pruning.methods"):
        parse_recipe(_study_recipe(tmp_path))  # the family's default stays unstructured
    with pytest.raises(HfpruneError, match="set pruning.structure: unstructured or heads_ffn"):
        parse_recipe(_study_recipe(tmp_path, structure="filters"))


def test_an_oracle_study_of_a_vit_like_encoder_prunes_heads_and_ffn(tmp_path):
    from transformers import DeiTConfig, DeiTForImageClassification
    from hfprune.study.registry import parse_recipe
    from hfprune.study.runner import run_study

    torch.manual_seed(0)
    DeiTForImageClassification(DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=48, image_size=32, patch_size=8, num_labels=1000)
                               ).save_pretrained(tmp_path / "deit")
    recipe = parse_recipe(_study_recipe(make_imagenet_like(tmp_path / "data"), tmp_path / "deit",
                                        structure="heads_ffn"))
    run_study(recipe, tmp_path / "study", progress=False)
    records = [json.loads(line) for line in (tmp_path / "study" / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert {name: len(kept) for name, kept in record["mask"].items()} == {
            **{f"layers.{i}.heads": 1 for i in range(2)}, **{f"layers.{i}.ffn": 24 for i in range(2)}}
        assert record["retrain_form"] == "physical" and record["mask_violations"] == 0
    best = json.loads((tmp_path / "study" / "best" / "config.json").read_text())
    assert (best["model_type"], best["num_attention_heads"], best["head_dim"], best["intermediate_size"]) == \
        ("deit", 1, 16, 24)


def test_a_vision_tower_is_pruned_with_image_calibration(tmp_path):
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
    from hfprune.oneshot.structured import prune_checkpoint

    arch = ARCHITECTURES["siglip_vision"]
    dense = arch.build()
    dense.save_pretrained(tmp_path / "siglip")
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    facts = prune_checkpoint(str(tmp_path / "siglip"), "heads=0.5,ffn=0.25", "wanda", tmp_path / "out",
                             calibration_data="imagenet_1k", calibration_path=str(make_imagenet_like(tmp_path / "d")),
                             calibration_samples=8, batch_size=4, allocation="global")
    assert facts["checkpoint"] == "own_code" and facts["macs_unit"] == "MACs per image"
    assert facts["macs_after"] < facts["macs_before"] and "8 images" in facts["calibration"]
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    pixels = arch.images(dense.config, 2)
    groups = block_groups(dense)
    with UnitGates(dense, groups) as gates, torch.no_grad():
        gates.set_mask({name: tuple(kept) for name, kept in
                        json.loads((tmp_path / "out" / "hfprune_pruning.json").read_text())["mask"].items()})
        expected = dense(**pixels).last_hidden_state
    from hfprune.models import get_adapter

    pruned = get_adapter("vision_encoder").load_pretrained(str(tmp_path / "out"))
    with torch.no_grad():
        torch.testing.assert_close(pruned(**pixels).last_hidden_state, expected, atol=1e-5, rtol=0)
