"""ViT end to end: ImageNet-schema data, augmentations, `hfprune prune` as typed, `hfprune run`."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from vit_fixtures import make_imagenet_like, save_tiny_vit, tiny_vit_recipe
from waiting import patience


def hfprune(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hfprune", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=patience(600))


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    return make_imagenet_like(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("models") / "vit")


def test_imagenet_schema_loads_lazily_with_the_models_processor(imagenet_like, tiny_vit):
    from hfprune.data.registry import load_image_classification

    data = load_image_classification("imagenet_1k", path=str(imagenet_like), image_size=32,
                                     image_processor=str(tiny_vit), augment=("random_resized_crop", "hflip"))
    assert data.num_labels == 1000 and len(data.train) == 48 and len(data.test) == 16  # test = validation
    assert data.channels == 3 and data.image_size == 32
    item = data.test[0]
    assert item["pixel_values"].shape == (3, 32, 32)
    # the processor's mean/std: a flat colour c maps to (c/255 - mean)/std
    from vit_fixtures import COLOURS
    expected = (torch.tensor(COLOURS[int(item["labels"])]) / 255 - torch.tensor([0.5, 0.4, 0.3])) / torch.tensor(
        [0.2, 0.25, 0.3])
    torch.testing.assert_close(item["pixel_values"].mean((1, 2)), expected, atol=0.05, rtol=0)
    # augmentation is seeded by torch's RNG, only on the training view
    torch.manual_seed(0)
    first = data.train_augmented[1]["pixel_values"]
    torch.manual_seed(0)
    torch.testing.assert_close(data.train_augmented[1]["pixel_values"], first)
    torch.testing.assert_close(data.train[1]["pixel_values"], data.train[1]["pixel_values"])
    assert data.train_augmented[1]["labels"] == data.train[1]["labels"]


def test_mixup_and_cutmix_mix_with_the_reversed_batch():
    from hfprune.study.tasks.image_classification import mix_batch

    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    torch.manual_seed(0)
    mixed, lam = mix_batch(x, mixup=0.2, cutmix=0.0)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    for seed in range(5):
        torch.manual_seed(seed)
        mixed, lam = mix_batch(x, mixup=0.0, cutmix=1.0)
        pasted = (mixed[0, 0] != x[0, 0]).float().mean().item()  # row 0 takes pixels of row 3
        assert pasted == pytest.approx(1 - lam)
        assert torch.equal(x, torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16)), "input left alone"


def test_cli_prune_as_typed_on_a_local_checkpoint(tmp_path, tiny_vit):
    import shutil

    shutil.copytree(tiny_vit, tmp_path / "vit")
    result = hfprune("prune", "./vit", "--structure", "heads=0.5,ffn=0.5", "--method", "l1", "--out", "./vit-pruned",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "vit-pruned"
    assert {"config.json", "model.safetensors", "modeling_pruned_vit.py", "README.md", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "parameters" in card and "MACs per image" in card and "`l1`" in card and "seed: 0" in card
    assert "| 0 | 2 | 32 |" in card  # layer 0: 2 heads, 32 FFN neurons
    facts = json.loads((out / "hfprune_pruning.json").read_text())
    assert facts["params_after"] < facts["params_before"] and facts["macs_after"] < facts["macs_before"]
    # the same network as the dense model under the chosen mask, in a process without hfprune
    from hfprune.models import get_adapter
    from hfprune.pruning.structured.gates import UnitGates
    from transformers import ViTForImageClassification

    dense = ViTForImageClassification.from_pretrained(tiny_vit).eval()
    x = torch.randn(3, 3, 32, 32)
    with UnitGates(dense, get_adapter("vit").groups(dense.config)) as gates:
        gates.set_mask({name: tuple(kept) for name, kept in facts["mask"].items()})
        torch.save(dense(x).logits.detach(), tmp_path / "logits.pt")
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("./vit-pruned", trust_remote_code=True)
        assert "hfprune" not in sys.modules
        assert model.config.num_attention_heads_per_layer == [2, 2, 2]
        assert model.config.intermediate_size_per_layer == [32, 32, 32]
        AutoImageProcessor.from_pretrained("./vit-pruned")
        torch.testing.assert_close(model(torch.load("x.pt")).logits, torch.load("logits.pt"), atol=1e-5, rtol=0)
        print("OK")
    """)
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert loaded.returncode == 0 and "OK" in loaded.stdout, loaded.stderr


@pytest.mark.parametrize("args, expected", [
    (["--structure", "neurons=0.5"], "unknown structure 'neurons'"),
    (["--structure", "heads=1.5"], "ratio of 'heads' must be in [0, 1]"),
    (["--structure", "heads"], "is not KEY=RATIO"),
    (["--structure", "heads=0.5", "--method", "snip"], "unknown method 'snip'"),
    (["--structure", "heads=0.5", "--method", "taylor_fo"], "needs --calibration-data"),
])
def test_cli_prune_errors_are_one_line(tmp_path, tiny_vit, args, expected):
    result = hfprune("prune", tiny_vit, *args, "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_cli_prune_refuses_an_unloadable_model(tmp_path):
    (tmp_path / "broken").mkdir()
    result = hfprune("prune", tmp_path / "broken", "--structure", "heads=0.5", "--out", tmp_path / "out")
    assert result.returncode == 2 and "cannot load model" in result.stderr and "Traceback" not in result.stderr


def test_cli_prune_taylor_fo_with_calibration_data(tmp_path, tiny_vit, imagenet_like):
    result = hfprune("prune", tiny_vit, "--structure", "heads=0.25,ffn=0.75,layers.2.heads=0.5",
                     "--method", "taylor_fo", "--calibration-data", "imagenet_1k", "--calibration-path", imagenet_like,
                     "--calibration-samples", "16", "--seed", "4", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_attention_heads_per_layer"] == [3, 3, 2]
    assert config["intermediate_size_per_layer"] == [16, 16, 16]
    assert "imagenet_1k train split, 16 images" in (tmp_path / "out" / "README.md").read_text()


def test_tiny_vit_study_runs_end_to_end(tmp_path, imagenet_like):
    path = tmp_path / "tiny_vit.yaml"
    path.write_text(yaml.safe_dump(tiny_vit_recipe(imagenet_like)))
    result = hfprune("run", path, "--out", tmp_path / "study", "--no-progress")
    assert result.returncode == 0, result.stderr
    study = tmp_path / "study"
    records = [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines()]
    assert len(records) == 3 and len({r["mask_id"] for r in records}) == 3
    for record in records:
        assert record["mask_violations"] == 0
        assert {name: len(kept) for name, kept in record["mask"].items()} == {
            **{f"layers.{i}.heads": 2 for i in range(3)}, **{f"layers.{i}.ffn": 32 for i in range(3)}}
        for key in ("pruned_train_loss", "final_test_acc", "final_test_loss"):
            assert record[key] == record[key], key  # not NaN
    assert (study / "report.md").is_file()
    best = json.loads((study / "best" / "config.json").read_text())
    assert best["model_type"] == "pruned_vit" and best["num_attention_heads_per_layer"] == [2, 2, 2]
    # resuming runs nothing again
    again = hfprune("run", path, "--out", study, "--no-progress")
    assert again.returncode == 0 and "0 trials run" in again.stdout, again.stderr
