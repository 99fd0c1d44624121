"""The sparse-MLP family: shapes, remote-code loading, and the binary loss/accuracy against hand-computed values."""

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from hfprune.data.spiral import PointSet
from hfprune.evaluation.classification import binary_loss, evaluate_binary
from hfprune.models import adapter_for_checkpoint, get_adapter
from hfprune.models.sparse_mlp.modeling_sparse_mlp import SparseMLPConfig, SparseMLPForBinaryClassification


def test_default_widths_shapes_and_parameter_count():
    adapter = get_adapter("sparse_mlp")
    model = adapter.build(adapter.config(2, 0, 0, {}))
    # 2·16+16 + 2·(16·16+16) + 16+1
    assert sum(p.numel() for p in model.parameters()) == 609
    names = [name for name, _ in model.named_parameters()]
    assert names == [f"layers.{i}.{kind}" for i in range(4) for kind in ("weight", "bias")]
    weights = adapter.prunable_weights(model)
    assert list(weights) == [f"layers.{i}.weight" for i in range(4)]
    assert [tuple(w.shape) for w in weights.values()] == [(16, 2), (16, 16), (16, 16), (1, 16)]
    assert all(w is model.get_parameter(name) for name, w in weights.items())
    out = model(inputs=torch.randn(5, 2), labels=torch.ones(5))
    assert out.logits.shape == (5,) and out.loss.ndim == 0
    assert (adapter.structure, adapter.task, adapter.auto_class) == (None, "binary_classification", "AutoModel")


def test_init_is_torch_default_linear_init_from_the_seed():
    torch.manual_seed(3)
    model = SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[5, 4]))
    torch.manual_seed(3)
    plain = [nn.Linear(2, 5), nn.Linear(5, 4), nn.Linear(4, 1)]
    for layer, reference in zip(model.layers, plain):
        assert torch.equal(layer.weight, reference.weight) and torch.equal(layer.bias, reference.bias)


def test_two_layer_variant_computes_relu_mlp():
    model = SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[3, 4]))
    assert len(model.layers) == 3
    x = torch.randn(7, 2)
    expected = model.layers[2](torch.relu(model.layers[1](torch.relu(model.layers[0](x))))).squeeze(-1)
    torch.testing.assert_close(model(x).logits, expected)
    with pytest.raises(ValueError, match="hidden_sizes"):
        SparseMLPConfig(hidden_sizes=[])


def test_saved_checkpoint_loads_in_a_fresh_process_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[6, 6, 6])).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert adapter_for_checkpoint(str(tmp_path / "ckpt")).name == "sparse_mlp"
    x = torch.randn(11, 2)
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(inputs=x).logits.detach(), tmp_path / "logits.pt")
    script = "\n".join([
        "import sys, torch",
        "from transformers import AutoModel",
        f"model = AutoModel.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)",
        "assert 'hfprune' not in sys.modules, 'loading must not need hfprune'",
        "assert type(model).__name__ == 'SparseMLPForBinaryClassification'",
        f"logits = model(inputs=torch.load({str(tmp_path / 'x.pt')!r})).logits",
        f"assert torch.equal(logits, torch.load({str(tmp_path / 'logits.pt')!r})), logits",
        "print('OK')",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


@torch.no_grad()
def _hand_model():
    """logit = relu(x1) − relu(x2): layer 0 the identity, layer 1 [1, −1], biases 0."""
    model = SparseMLPForBinaryClassification(SparseMLPConfig(hidden_sizes=[2]))
    model.layers[0].weight.copy_(torch.eye(2))
    model.layers[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    for layer in model.layers:
        layer.bias.zero_()
    return model


def test_binary_loss_and_accuracy_on_four_hand_computed_points():
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 3.0]])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0])
    # logits 2, −1, 0, −3. BCE: y=1 → log(1+e^−z), y=0 → log(1+e^z)
    per_point = [math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(3))]
    # predictions (z > 0): 1, 0, 0 (z = 0 is not > 0), 0 → right, right, wrong, wrong
    model = _hand_model()
    loss = binary_loss(model, {"inputs": x, "labels": y})
    assert loss.item() == pytest.approx(sum(per_point) / 4, abs=1e-6)
    metrics = evaluate_binary(model, PointSet(x, y), batch_size=3)  # two batches: 3 + 1 points
    assert metrics["acc"] == pytest.approx(0.5)
    assert metrics["loss"] == pytest.approx(sum(per_point) / 4, abs=1e-6)
    assert model.training, "evaluate_binary restores the training mode"
