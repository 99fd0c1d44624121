"""Layer-by-layer pruning with the model on the CPU or on disk (``--offload cpu|disk``): the same pruned weights as
the in-memory path, bit for bit, for wanda, owl and sparsegpt (also 2:4) on a tiny Llama and a tiny Qwen2 saved in
shards; the output is the source's checkpoint layout and loads and generates with plain transformers in a fresh
process; the disk path never holds more than one block's weights; ``hfprune prune unstructured --offload`` gives
the in-memory command's checkpoint and facts; bad input is one line before any work."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors import safe_open
from safetensors.torch import save_file

from llava_fixtures import write_llava_fixture
from tiny_models import ARCHITECTURES, calibration_batches
from hfprune.errors import HfpruneError
from hfprune.models.llava.tiny import build_tiny_llava
from hfprune.oneshot.unstructured import prune_unstructured_checkpoint
from hfprune.pruning.masking import MaskedParameters
from hfprune.pruning.unstructured import method_from, offload
from hfprune.pruning.unstructured.offload import SAFETENSORS_INDEX, prune_from_disk, prune_on_cpu
from waiting import patience

S = 0.5
METHODS = {"wanda": {}, "owl": {}, "sparsegpt": {}, "wanda-2:4": {"granularity": "2:4"},
           "sparsegpt-2:4": {"granularity": "2:4"}}
ROOT = Path(__file__).resolve().parent.parent


def method_of(label: str):
    return method_from(label.split("-")[0], **METHODS[label])


@functools.cache
def source(name: str, folder: Path) -> tuple[Path, list[dict]]:
    """A tiny model of ``name`` saved in shards of at most 20 KB (several per block), and calibration batches."""
    arch = ARCHITECTURES[name]
    model = arch.build()
    model.save_pretrained(folder / name, max_shard_size="20KB")
    return folder / name, calibration_batches(arch, model)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    return lambda name: source(name, folder)


def in_memory(path: Path, label: str, batches: list[dict]):
    """The in-memory path: the whole model loaded, pruned, masks applied."""
    model = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    result = method_of(label).masks(model, S, calibration=batches)
    MaskedParameters(model, result.masks).apply()
    return model, result


def checkpoint_tensors(folder: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Every tensor of a sharded checkpoint: key -> (its shard's file name, tensor)."""
    weight_map = json.loads((folder / SAFETENSORS_INDEX).read_text())["weight_map"]
    tensors = {}
    for key, file in weight_map.items():
        with safe_open(folder / file, framework="pt") as handle:
            tensors[key] = (file, handle.get_tensor(key))
    return tensors


@pytest.mark.parametrize("label", list(METHODS))
@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_offloaded_pruning_gives_the_in_memory_weights_bit_for_bit(sources, tmp_path, name, label):
    path, batches = sources(name)
    reference, expected = in_memory(path, label, batches)
    weights = reference.state_dict()

    pruned = prune_from_disk(path, method_of(label), S, tmp_path / "out", calibration=batches)
    written, dense = checkpoint_tensors(tmp_path / "out"), checkpoint_tensors(path)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(path))  # config, shards, index: the layout
    assert (tmp_path / "out" / SAFETENSORS_INDEX).read_text() == (path / SAFETENSORS_INDEX).read_text()
    for key, (file, tensor) in written.items():
        assert file == dense[key][0] and tensor.dtype == dense[key][1].dtype, key
        assert torch.equal(tensor, weights[key]), key  # the in-memory path's pruned (and updated) weights
        if key not in pruned.counts:
            assert torch.equal(tensor, dense[key][1]), key  # untargeted: the source's
    assert pruned.counts == {key: (int((~mask).sum()), mask.numel()) for key, mask in expected.masks.items()}
    assert pruned.parameters == sum(p.numel() for p in reference.parameters())
    assert pruned.nonzero == sum(int(torch.count_nonzero(p)) for p in reference.parameters())
    assert pruned.result.layer_ratios == expected.layer_ratios and pruned.result.group_scores == expected.group_scores
    if label == "owl":  # two passes: every layer's outlier ratio first, so the layers get different sparsities
        assert len(set(expected.layer_ratios.values())) > 1

    model = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    on_cpu = prune_on_cpu(model, method_of(label), S, calibration=batches)
    MaskedParameters(model, on_cpu.masks).apply()
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())


GENERATE = textwrap.dedent("""
    import json, sys, torch, transformers
    for spec in json.load(open(sys.argv[1])):
        model = transformers.AutoModelForCausalLM.from_pretrained(spec["path"]).eval()
        expected = torch.load(spec["expected"])
        with torch.no_grad():
            logits = model(**expected["inputs"]).logits
            tokens = model.generate(**expected["inputs"], max_new_tokens=6, do_sample=False)
        torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-5)
        assert torch.equal(tokens, expected["tokens"]), (spec["path"], tokens, expected["tokens"])
    assert "hfprune" not in sys.modules
    print("OK")
""")


def test_offloaded_checkpoints_load_and_generate_with_plain_transformers_in_a_fresh_process(sources, tmp_path):
    specs = []
    for name, label in [("llama", "sparsegpt"), ("qwen2", "wanda")]:
        path, batches = sources(name)
        reference, _ = in_memory(path, label, batches)
        out = tmp_path / f"{name}-{label}"
        prune_from_disk(path, method_of(label), S, out, calibration=batches)
        inputs = {"input_ids": batches[0]["input_ids"][:1], "attention_mask": batches[0]["attention_mask"][:1]}
        with torch.no_grad():
            expected = {"inputs": inputs, "logits": reference(**inputs).logits,
                        "tokens": reference.generate(**inputs, max_new_tokens=6, do_sample=False)}
        torch.save(expected, tmp_path / f"{name}.pt")
        specs.append({"path": str(out), "expected": str(tmp_path / f"{name}.pt")})
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    result = subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / "specs.json")], capture_output=True,
                            text=True, cwd=tmp_path, timeout=patience(30))
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("label", ["sparsegpt", "owl"])
def test_the_disk_path_holds_at_most_one_block_of_weights_at_a_time(sources, tmp_path, monkeypatch, label):
    """At every tensor read, the blocks holding real (non-meta) weights are at most the one being read (while the
    first block's inputs are captured: block 0 and the embeddings), and outside the blocks only the modules before
    them (the embeddings) — never the final norm or the LM head."""
    path, batches = sources("llama")
    built, reads = {}, []

    def empty_model(folder):
        built["model"] = model = offload_empty_model(folder)
        return model

    def read(self, name):
        model = built["model"]
        resident = {parameter for parameter, value in model.named_parameters() if value.device.type != "meta"}
        blocks = {parameter.split(".")[2] for parameter in resident if parameter.startswith("model.layers.")}
        reads.append((name, blocks, resident - {p for p in resident if p.startswith("model.layers.")}))
        return offload_read(self, name)

    offload_empty_model, offload_read = offload.empty_model, offload.Checkpoint.__getitem__
    monkeypatch.setattr(offload, "empty_model", empty_model)
    monkeypatch.setattr(offload.Checkpoint, "__getitem__", read)
    prune_from_disk(path, method_of(label), S, tmp_path / "out", calibration=batches)

    assert reads and all(p.device.type == "meta" for p in built["model"].parameters())
    for name, blocks, outside in reads:
        block = name.split(".")[2] if name.startswith("model.layers.") else "0"  # else: capturing block 0's inputs
        assert blocks <= {block}, (name, blocks)  # none but the block being read
        assert outside <= {"model.embed_tokens.weight"}, (name, outside)
    loaded = [name.split(".")[2] for name, *_ in reads if name.startswith("model.layers.") and
              name.endswith("q_proj.weight")]
    passes = 2 if label == "owl" else 1  # OWL: the dense pass for the outlier ratios, then the pruning pass
    assert loaded == ["0", "1", "2"] * passes


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava")
    return build_tiny_llava(folder / "dense", num_layers=3), write_llava_fixture(folder / "data", n=6)


@pytest.mark.parametrize("method", ["sparsegpt", "owl"])
def test_prune_unstructured_offloaded_writes_the_in_memory_checkpoint_and_facts(llava, tmp_path, method):
    """A LLaVA checkpoint (legacy key layout, images in the calibration batches) through the one-shot function."""
    dense, (data, images) = llava
    common = dict(calibration_data=str(data), image_root=str(images), calibration_samples=4, batch_size=2,
                  progress=False)
    facts = {offloaded: prune_unstructured_checkpoint(str(dense), method, S, tmp_path / str(offloaded), **common,
                                                      offload=offloaded)
             for offloaded in (None, "cpu", "disk")}
    reference = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / "None").state_dict()
    for offloaded in ("cpu", "disk"):
        pruned = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / offloaded).state_dict()
        assert all(torch.equal(value, reference[key]) for key, value in pruned.items()), offloaded
        assert {key: value for key, value in facts[offloaded].items() if key != "out"} == \
               {key: value for key, value in facts[None].items() if key != "out"}
        assert (tmp_path / offloaded / "README.md").is_file() and (tmp_path / offloaded / "tokenizer.json").is_file()
        assert json.loads((tmp_path / offloaded / "hfprune_pruning.json").read_text())["sparsity"] == \
            facts[None]["sparsity"]


def test_offload_refuses_what_it_cannot_run_in_one_line(sources, tmp_path):
    path, batches = sources("llama")
    with pytest.raises(HfpruneError, match="--offload runs wanda, owl and sparsegpt"):
        prune_from_disk(path, method_from("gmp"), S, tmp_path / "gmp", calibration=batches)
    with pytest.raises(HfpruneError, match="--offload must be one of cpu, disk"):
        offload.check_offload(method_from("wanda"), "gpu")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(HfpruneError, match="is the source checkpoint or holds it"):
        prune_from_disk(path, method_from("wanda"), S, path.parent, calibration=batches)
    with pytest.raises(HfpruneError, match="reads a local checkpoint folder"):
        prune_from_disk("someone/some-model", method_from("wanda"), S, tmp_path / "o", calibration=batches)
    with pytest.raises(HfpruneError, match="reads safetensors checkpoints"):
        prune_from_disk(tmp_path / "bin", method_from("wanda"), S, tmp_path / "o", calibration=batches)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "config.json").write_text((path / "config.json").read_text())
    weights = tf.AutoModelForCausalLM.from_pretrained(path).state_dict()
    save_file({key: value for key, value in weights.items() if key != "model.norm.weight"},
              tmp_path / "part" / "model.safetensors")
    with pytest.raises(HfpruneError, match="has no tensor for the model's 'model.norm.weight'"):
        prune_from_disk(tmp_path / "part", method_from("wanda"), S, tmp_path / "o", calibration=batches)
    assert not (tmp_path / "gmp").exists() and not (tmp_path / "o").exists()


def test_cli_prune_unstructured_offload_disk_as_typed(llava, tmp_path):
    from typer.testing import CliRunner

    from hfprune.cli import app

    dense, (data, images) = llava
    command = ["prune", "unstructured", str(dense), "--method", "wanda", "--sparsity", "0.5", "--calibration-data",
               str(data), "--image-root", str(images), "--calibration-samples", "4", "--batch-size", "2",
               "--no-progress"]
    result = CliRunner().invoke(app, [*command, "--offload", "disk", "--out", str(tmp_path / "disk")])
    assert result.exit_code == 0, result.output
    assert "wanda: sparsity 0.5000" in result.output and (tmp_path / "disk" / "hfprune_pruning.json").is_file()
    assert not (tmp_path / "disk.partial").exists()
    refused = CliRunner().invoke(app, [*command[:4], "ump", *command[5:], "--offload", "disk", "--out",
                                       str(tmp_path / "o")])
    assert isinstance(refused.exception, HfpruneError) and "--offload prunes one decoder layer at a time, but ump" \
        in str(refused.exception) and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_offload_memory_benchmark_runs_tiny(tmp_path):
    """The benchmark's script end to end at toy size (one method: each run is a fresh process)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "offload_memory.py"), "--tiny", "--methods",
                             "wanda", "--work", str(tmp_path)], capture_output=True, text=True, timeout=patience(60),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| wanda |"))
    assert row.split("|")[-2].strip() == "0", row  # max |difference| of the pruned weights
    assert "wanda: 0 of 30 tensors differ" in result.stdout and not any(tmp_path.iterdir())
