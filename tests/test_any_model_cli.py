"""``hfprune prune unstructured`` end to end on every architecture of tests/tiny_models.py and on a causal LM hfprune
names nowhere: each a tiny random checkpoint saved with its tokenizer or processor (tests/tiny_processors.py), pruned
through the CLI with one method per architecture — the methods in turn within each kind of model, calibration-aware
ones on the data of the model's kind (text, LLaVA-1.5 conversations with images, an image folder), the pruned train
loss of every language model with conversations or text — then reloaded in one fresh process with plain
transformers' Auto class the model card names: same class, same zeros, same outputs, generation runs. Untargeted
parameters are bit-identical to the dense checkpoint's; every target Linear is as sparse as its method asked."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fresh_process import assert_reload_in_fresh_process
from llava_fixtures import write_llava_fixture
from tiny_models import ARCHITECTURES, UNSEEN, calibration_batches, tiny_model, token_ids
from tiny_processors import kind_of, save_checkpoint
from hfprune.cli import app
from hfprune.errors import HfpruneError
from hfprune.pruning.counts import num_pruned
from hfprune.pruning.unstructured import method_from

S = 0.5
METHODS = {"ump": {}, "gmp": {}, "onp": {}, "pnp": {}, "wanda": {}, "owl": {}, "sparsegpt": {},
           "wanda-2:4": {"granularity": "2:4"}, "sparsegpt-2:4": {"granularity": "2:4"}}
LABELS = list(METHODS)
OFFSET = {"causal_lm": 0, "vision_language": 4, "vision_encoder": 2}  # each kind starts its turn elsewhere
NAMES = [*ARCHITECTURES, UNSEEN[0]]
NO_DATA = {"paligemma"}  # PaliGemma ships no chat template: no conversations, methods that need no data


def method_of(label: str):
    return method_from(label.split("-")[0], **METHODS[label])


def rotation() -> dict[str, str]:
    """One method per architecture: the methods in turn within each kind; an architecture without data of its
    kind takes the next method that needs none."""
    chosen, seen = {}, {kind: 0 for kind in OFFSET}
    for name in NAMES:
        kind = kind_of(name)
        position = OFFSET[kind] + seen[kind]
        seen[kind] += 1
        while name in NO_DATA and method_of(LABELS[position % len(LABELS)]).needs_calibration:
            position += 1
        chosen[name] = LABELS[position % len(LABELS)]
    return chosen


ROTATION = rotation()


def test_the_rotation_runs_every_method_and_calibrates_every_kind():
    assert set(ROTATION.values()) == set(LABELS)
    for kind in OFFSET:
        assert any(method_of(ROTATION[name]).needs_calibration for name in NAMES if kind_of(name) == kind)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    json_path, image_root = write_llava_fixture(root / "llava", n=6)
    text = root / "wiki.txt"
    text.write_text(" ".join(["The dog is sitting on a blue mat and the cat is looking at the camera ."] * 30))
    images = root / "images"
    images.mkdir()
    for index in range(5):
        Image.new("RGB", (24 + 3 * index, 30), (40 * index, 120, 200 - 30 * index)).save(images / f"{index}.png")
    return {"causal_lm": ["--calibration-data", str(text), "--seqlen", "16"],
            "vision_language": ["--calibration-data", str(json_path), "--image-root", str(image_root)],
            "vision_encoder": ["--calibration-data", str(images)]}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prune(name: str, dense, out, data) -> dict:
    label, kind = ROTATION[name], kind_of(name)
    method = method_of(label)
    args = ["prune", "unstructured", str(dense), "--method", method.name, "--sparsity", str(S), "--out", str(out),
            "--calibration-samples", "4", "--batch-size", "2", "--no-progress"]
    if method.pattern:
        args += ["--pattern", method.pattern]
    if name not in NO_DATA and (method.needs_calibration or kind != "vision_encoder"):
        args += data[kind]
    if name not in NO_DATA and kind != "vision_encoder":
        args += ["--loss-samples", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (name, label, result.output, result.exception)
    assert f"{method.name}: sparsity" in result.output
    return json.loads((out / "hfprune_pruning.json").read_text())


def check_sparsity(label: str, facts: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Zeros of each target as its method allocated them: S per Linear (per row for Wanda, exactly N of M for N:M),
    the global budget for GMP, the recorded per-block ratios (mean S) for ONP, PNP and OWL."""
    method = method_of(label)
    row = method.options().get("granularity") == "row"
    total = 0
    for name, ratio in facts["layer_sparsity"].items():
        weight = tensors[name]
        zeros = int((weight == 0).sum())
        total += zeros
        rows, columns = weight.shape
        if method.pattern:
            assert bool(((weight == 0).reshape(rows, columns // 4, 4).sum(-1) >= 2).all()), name
        elif row:
            assert zeros >= rows * num_pruned(columns, ratio), name
        else:
            assert zeros >= round(ratio * weight.numel()), name
        if method.name in ("ump", "wanda", "sparsegpt"):
            assert ratio == S, name
    weights = facts["target_weights"]
    rounding = sum(tensors[name].shape[0] if row else 1 for name in facts["layer_sparsity"])  # per row or Linear
    assert facts["sparsity"] == pytest.approx(S, abs=rounding / weights), label
    assert total >= round(facts["sparsity"] * weights)


def check_untouched(label: str, facts: dict, dense: dict, pruned: dict) -> None:
    """Parameters outside the targets bit-identical; kept target weights too, except SparseGPT's updates."""
    assert set(dense) == set(pruned)
    for name, tensor in pruned.items():
        if name in facts["layer_sparsity"]:
            kept = tensor != 0
            if not method_of(label).updates_weights:
                assert torch.equal(tensor[kept], dense[name][kept]), name
        else:
            assert torch.equal(tensor.view(torch.uint8), dense[name].view(torch.uint8)), name


def test_every_architecture_through_the_cli_reloads_with_plain_transformers(tmp_path, data, one_thread):
    checkpoints = []
    for name in NAMES:
        dense = save_checkpoint(name, tmp_path / name)
        out = tmp_path / f"{name}-pruned"
        facts = prune(name, dense, out, data)
        label, kind = ROTATION[name], kind_of(name)
        pruned_model = _loaded(out, facts["auto_class"])
        dense_tensors, pruned_tensors = _parameters(_loaded(dense, facts["auto_class"])), _parameters(pruned_model)
        check_untouched(label, facts, dense_tensors, pruned_tensors)
        check_sparsity(label, facts, pruned_tensors)
        assert set(facts["layer_blocks"]) == set(facts["layer_sparsity"])
        assert sorted(set(facts["layer_blocks"].values())) == list(range(len(set(facts["layer_blocks"].values()))))
        if name not in NO_DATA and kind != "vision_encoder":
            assert facts["metrics"]["pruned_train_loss"] > 0 and facts["metrics"]["pruned_train_tokens"] > 0
        card = (out / "README.md").read_text()
        assert f"from transformers import {facts['auto_class']}" in card and "| **overall** |" in card
        assert any(path.name in ("tokenizer.json", "preprocessor_config.json") for path in out.iterdir())
        inputs = _inputs(name)
        with torch.no_grad():
            first = pruned_model(**inputs)
        outputs = first.logits if getattr(first, "logits", None) is not None else first.last_hidden_state
        zeros = {key: int((tensor == 0).sum()) for key, tensor in pruned_tensors.items()
                 if key in facts["layer_sparsity"]}
        checkpoints.append({"path": out, "auto_class": facts["auto_class"], "model_class": facts["model_class"],
                            "zeros": zeros, "inputs": inputs, "outputs": outputs,
                            "generate": 2 if kind != "vision_encoder" else 0})
    assert_reload_in_fresh_process(tmp_path, checkpoints)


def _inputs(name: str) -> dict:
    if name in UNSEEN:
        ids, mask = token_ids(2, 8)
        return {"input_ids": ids, "attention_mask": mask}
    return calibration_batches(ARCHITECTURES[name], tiny_model(name))[0]


def _loaded(path, auto_class: str):
    import transformers

    return getattr(transformers, auto_class).from_pretrained(path).eval()


def _parameters(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: save_checkpoint(name, root / name) for name in ("llama", "qwen2_vl", "dinov2", "paligemma")}


def test_list_targets_prints_name_shape_block_role_without_reading_weights(checkpoints, tmp_path):
    import shutil

    from hfprune.pruning.unstructured import list_targets

    for name in ("dinov2", "qwen2_vl"):
        bare = tmp_path / name
        shutil.copytree(checkpoints[name], bare, ignore=shutil.ignore_patterns("*.safetensors"))
        result = CliRunner().invoke(app, ["prune", "unstructured", str(bare), "--list-targets"])
        assert result.exit_code == 0, (result.output, result.exception)
        lines = result.output.strip().splitlines()
        assert lines[0].split() == ["name", "shape", "block", "role"]
        expected = list_targets(tiny_model(name))
        rows = [line.split() for line in lines[1:-1]]
        assert rows == [[target.name, "x".join(map(str, target.shape)), str(target.block), target.role or "-"]
                        for target in expected]
        weights = sum(target.shape[0] * target.shape[1] for target in expected)
        blocks = len({target.block for target in expected})
        assert lines[-1] == f"{len(expected)} target Linears in {blocks} blocks, {weights:,} weights"
        assert {row[3] for row in rows} >= {"q", "k", "v", "o", "up", "down"}
    assert all(row[0].startswith("model.language_model.layers.") for row in rows)  # a VLM: its language model only
    only = CliRunner().invoke(app, ["prune", "unstructured", str(checkpoints["llama"]), "--list-targets",
                                    "--target", r".*\.mlp\..*", "--ignore", r".*down_proj"])
    assert [line.split()[3] for line in only.output.strip().splitlines()[1:-1]] == ["gate", "up"] * 3


@pytest.mark.parametrize("name, args, message", [
    ("llama", ["--method", "wanda", "--image-root", "IMAGES", "--calibration-data", "TEXT"],
     "--image-root is the image folder of vision-language conversations; this causal_lm model calibrates on TEXT "
     "(a .txt"),
    ("qwen2_vl", ["--method", "ump", "--seqlen", "16"], "--seqlen sets the token blocks of a causal LM's text"),
    ("dinov2", ["--method", "ump", "--loss-samples", "2", "--calibration-data", "IMAGES"],
     "a vision encoder has none to measure"),
    ("llama", ["--method", "wanda"], "calibrates on data: give --calibration-data TEXT (a .txt"),
    ("llama", ["--method", "wanda", "--calibration-data", "nowhere.txt"], "--calibration-data 'nowhere.txt' not found"),
    ("qwen2_vl", ["--method", "wanda", "--calibration-data", "JSON"], "needs --image-root"),
    ("llama", ["--method", "wanda", "--calibration-data", "TEXT", "--seqlen", "999"],
     "--seqlen 999 exceeds the model's context of 256 tokens"),
    ("paligemma", ["--method", "wanda", "--calibration-data", "JSON", "--image-root", "IMAGES"], "no chat template"),
    ("dinov2", ["--method", "wanda", "--calibration-data", "EMPTY"], "no image files"),
    ("dinov2", ["--method", "wanda", "--calibration-data", "mnist_sample"], "1-channel images; the model reads 3"),
    ("llama", ["--method", "ump", "--target", r"nothing\.matches"], "no Linear layer matches"),
])
def test_bad_input_is_one_line_naming_the_flag_before_anything_is_written(checkpoints, data, tmp_path, name, args,
                                                                           message):
    places = {"TEXT": data["causal_lm"][1], "JSON": data["vision_language"][1],
              "IMAGES": data["vision_language"][3], "EMPTY": str(tmp_path)}
    args = [places.get(arg, arg) for arg in args]
    result = CliRunner().invoke(app, ["prune", "unstructured", str(checkpoints[name]), "--sparsity", "0.5",
                                      "--out", str(tmp_path / "out"), "--no-progress", *args])
    assert isinstance(result.exception, HfpruneError), (result.output, result.exception)
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_without_out_or_method_pruning_says_what_it_needs(checkpoints):
    for args, message in ((["--method", "ump", "--sparsity", "0.5"], "needs --out DIR"),
                          (["--sparsity", "0.5", "--out", "o"], "needs --method")):
        result = CliRunner().invoke(app, ["prune", "unstructured", str(checkpoints["llama"]), *args])
        assert isinstance(result.exception, HfpruneError) and message in str(result.exception)


def test_an_encoder_saved_without_a_head_is_pruned_as_saved(tmp_path, data):
    """``facebook/dinov2-base`` is a Dinov2Model: it is pruned, saved and named as one, never given a random head."""
    import transformers

    from tiny_processors import tiny_processor

    model = transformers.Dinov2Model(tiny_model("dinov2").config).eval()
    model.save_pretrained(tmp_path / "dense")
    tiny_processor("dinov2", model.config).save_pretrained(tmp_path / "dense")
    result = CliRunner().invoke(app, ["prune", "unstructured", str(tmp_path / "dense"), "--method", "wanda",
                                      "--sparsity", "0.5", "--out", str(tmp_path / "out"), "--no-progress",
                                      *data["vision_encoder"]])
    assert result.exit_code == 0, (result.output, result.exception)
    facts = json.loads((tmp_path / "out" / "hfprune_pruning.json").read_text())
    assert facts["model_class"] == "Dinov2Model" and facts["auto_class"] == "AutoModel"
    pruned = transformers.AutoModel.from_pretrained(tmp_path / "out")
    assert type(pruned).__name__ == "Dinov2Model"
    assert set(_parameters(pruned)) == set(_parameters(model))
