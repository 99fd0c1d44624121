"""``hfprune prune DIR --method ump|gmp|onp|pnp|wanda|owl|sparsegpt --sparsity S [--pattern N:M] --out OUT`` and
``hfprune push OUT REPO`` as typed."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from llava_fixtures import write_llava_fixture
from hfprune.errors import HfpruneError
from hfprune.export.push import push_checkpoint
from hfprune.models.llava.tiny import build_tiny_llava
from hfprune.oneshot.unstructured import instruction_subset, prune_unstructured_checkpoint
from hfprune.pruning.unstructured import unstructured_masks
from hfprune.train.trainer import make_loader
from waiting import patience

TARGET_SUFFIXES = (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".dense.weight", ".fc1.weight", ".fc2.weight")


def is_target(name):
    return name.startswith("model.language_model.layers.") and name.endswith(TARGET_SUFFIXES)


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("prune") / "llava", num_layers=3)


def logits(model):
    torch.manual_seed(0)
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("method", ["ump", "gmp", "onp", "pnp"])
def test_pruned_checkpoint_loads_with_plain_transformers_with_the_same_sparsity_and_logits(dense_dir, tmp_path, method):
    facts = prune_unstructured_checkpoint(str(dense_dir), method, 0.4375, tmp_path / "out", progress=False)
    dense = LlavaForConditionalGeneration.from_pretrained(dense_dir).eval()
    expected = unstructured_masks(dense, method, 0.4375)
    expected.apply(dense)

    pruned = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    dense_params, pruned_params = dict(dense.named_parameters()), dict(pruned.named_parameters())
    targets = [name for name in pruned_params if is_target(name)]
    assert sorted(f"{name}" for name in facts["layer_sparsity"]) == sorted(targets)
    zeros = sum(int((pruned_params[name] == 0).sum()) for name in targets)
    total = sum(pruned_params[name].numel() for name in targets)
    assert abs(zeros - 0.4375 * total) <= len(targets) and zeros == round(facts["sparsity"] * total)
    for name, param in pruned_params.items():  # same masks; everything else bit-identical to the dense model
        assert torch.equal(param, dense_params[name]), name
    torch.testing.assert_close(logits(pruned), logits(dense), rtol=0, atol=0)
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"method: `{method}`" in card and "| layer | q_proj | k_proj | v_proj | dense | fc1 | fc2 |" in card
    assert (tmp_path / "out" / "processor_config.json").is_file() or (tmp_path / "out" / "tokenizer.json").is_file()


def test_cli_as_typed_with_pruned_train_loss(dense_dir, tmp_path):
    json_path, image_root = write_llava_fixture(tmp_path / "llava", n=6)
    out = tmp_path / "llava-ump"
    command = [sys.executable, "-m", "hfprune", "prune", str(dense_dir), "--method", "ump", "--sparsity", "0.4375",
               "--out", str(out), "--calibration-data", str(json_path), "--image-root", str(image_root),
               "--loss-samples", "4", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(300),
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ump: sparsity 0.43" in result.stdout and "pruned train loss" in result.stdout
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    assert facts["metrics"]["pruned_train_loss"] > 0 and facts["metrics"]["pruned_train_tokens"] > 0
    assert "pruned_train_loss" in (out / "README.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--method", "ump", "--sparsity", "0.5", "--structure", "heads=0.5"], "exactly one of --structure"),
    (["--sparsity", "0.5"], "needs --method"),
    (["--method", "l1", "--sparsity", "0.5"], "unknown unstructured method 'l1'"),
    (["--method", "ump", "--sparsity", "1.5"], "--sparsity must be in"),
    (["--method", "onp", "--sparsity", "0.5", "--score", "activation"], "calibrates on data: give --calibration-data"),
    (["--method", "ump", "--sparsity", "0.4375", "--pattern", "2:4"], "set the sparsity to 0.5"),
    (["--method", "ump", "--sparsity", "0.5", "--pattern", "2of4"], "N:M pattern such as '2:4'"),
    (["--method", "ump", "--sparsity", "0.5", "--target", "nothing\\.matches"], "nothing"),
])
def test_bad_prune_arguments_are_one_line_errors(dense_dir, tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "hfprune", "prune", str(dense_dir), "--out", str(tmp_path / "o"),
                             *args], capture_output=True, text=True, timeout=patience(120),
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def conversations(tmp_path_factory):
    return write_llava_fixture(tmp_path_factory.mktemp("conversations") / "llava", n=6)


@pytest.mark.parametrize("method, pattern", [("wanda", None), ("sparsegpt", None), ("sparsegpt", "2:4")])
def test_calibrated_checkpoint_loads_with_plain_transformers_with_the_same_sparsity_and_logits(
        dense_dir, conversations, tmp_path, method, pattern):
    json_path, image_root = conversations
    sparsity, options = 0.5, {"granularity": pattern} if pattern else {}
    facts = prune_unstructured_checkpoint(str(dense_dir), method, sparsity, tmp_path / "out", options=options,
                                          calibration_data=str(json_path), image_root=str(image_root),
                                          calibration_samples=4, batch_size=2, progress=False)
    dense = LlavaForConditionalGeneration.from_pretrained(dense_dir).eval()
    original = {name: param.detach().clone() for name, param in dense.named_parameters()}
    processor = LlavaProcessor.from_pretrained(dense_dir)
    calibration = make_loader(instruction_subset(str(json_path), str(image_root), processor, dense, 4, 0), 2,
                              shuffle=False, seed=0)
    expected = unstructured_masks(dense, method, sparsity, calibration=calibration, **options)  # SparseGPT: in place
    expected.apply(dense)

    pruned = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    for name, param in pruned.named_parameters():
        assert torch.equal(param, dict(dense.named_parameters())[name]), name
        if not is_target(name):
            assert torch.equal(param, original[name]), name
    targets = [name for name, _ in pruned.named_parameters() if is_target(name)]
    zeros = sum(int((pruned.get_parameter(name) == 0).sum()) for name in targets)
    assert zeros == sum(pruned.get_parameter(name).numel() for name in targets) // 2 == round(facts["sparsity"] * facts["target_weights"])
    torch.testing.assert_close(logits(pruned), logits(dense), rtol=0, atol=0)
    assert facts["pattern"] == pattern and json.loads((tmp_path / "out" / "hfprune_pruning.json").read_text())["pattern"] == pattern
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"method: `{method}`" in card and ("pattern: 2:4" in card) == (pattern == "2:4")


def test_cli_prunes_two_of_four_with_wanda_on_conversations_with_images(dense_dir, conversations, tmp_path):
    json_path, image_root = conversations
    out = tmp_path / "wanda-2of4"
    command = [sys.executable, "-m", "hfprune", "prune", str(dense_dir), "--method", "wanda", "--sparsity", "0.5",
               "--pattern", "2:4", "--calibration-data", str(json_path), "--image-root", str(image_root),
               "--calibration-samples", "4", "--out", str(out), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=patience(300),
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    pruned = LlavaForConditionalGeneration.from_pretrained(out)
    for name, param in pruned.named_parameters():
        if is_target(name):
            rows, columns = param.shape
            assert ((param == 0).reshape(rows, columns // 4, 4).sum(dim=-1) == 2).all(), name
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    assert facts["pattern"] == "2:4" and facts["options"]["granularity"] == "2:4" and "--pattern 2:4" in facts["command"]
    card = (out / "README.md").read_text()
    assert "pattern: 2:4 semi-structured sparsity" in card and "- 2:4-sparsity" in card


class FakeHub:
    """Stands in for the Hub: records what would be created and uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/1"})()


@pytest.fixture
def pruned_dir(dense_dir, tmp_path):
    prune_unstructured_checkpoint(str(dense_dir), "gmp", 0.4375, tmp_path / "gmp", progress=False)
    return tmp_path / "gmp"


def test_push_uploads_the_folder_with_its_card_using_the_login_token(pruned_dir, monkeypatch):
    import huggingface_hub

    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_SECRET_token")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *args, **kwargs: hub)
    url = push_checkpoint(pruned_dir, "me/tinyllava-gmp", private=True)
    assert url.endswith("/commit/1")
    (_, repo, create), (_, _, upload) = hub.calls
    assert repo == "me/tinyllava-gmp" and create["private"] is True and upload["folder_path"] == str(pruned_dir)
    assert "token" not in upload and "token" not in create  # the login's token, never one of ours
    for path in pruned_dir.iterdir():
        assert "hf_SECRET_token" not in path.read_text(errors="ignore")


@pytest.mark.parametrize("token, repo, message", [
    (None, "me/model", "not logged in"),
    ("hf_x", "not a repo id", "NAMESPACE/NAME"),
])
def test_push_errors_say_how_to_fix(pruned_dir, monkeypatch, token, repo, message):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    with pytest.raises(HfpruneError, match=message):
        push_checkpoint(pruned_dir, repo)


def test_push_refuses_a_folder_without_a_checkpoint(tmp_path):
    with pytest.raises(HfpruneError, match="no config.json"):
        push_checkpoint(tmp_path, "me/model")
