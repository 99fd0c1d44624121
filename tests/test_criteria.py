"""pruned_taylor_fo (App. B.1): Σ over the removed filters of |Σ a·∂L/∂a| at their consumer, per batch."""

import pytest
import torch

from hfprune.data.registry import load_image_classification
from hfprune.models import get_adapter
from hfprune.models.lenet.modeling_lenet import LeNet5MiniConfig, LeNet5MiniForImageClassification
from hfprune.pruning.structured.importance import PrunedTaylorFO, removed_score
from hfprune.study.tasks.image_classification import ImageClassificationTask


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = LeNet5MiniForImageClassification(LeNet5MiniConfig()).eval()
    data = load_image_classification("mnist_sample", train_limit=96, test_limit=10)
    task = ImageClassificationTask(data, eval_batch_size=32, calibration_samples=64)
    return model, task, get_adapter("lenet5_mini").groups(model.config)


def reference_scores(model, task, consumer: str, channels: int) -> torch.Tensor:
    """Molchanov et al.'s first-order Taylor score of each input channel of ``consumer``, by hand."""
    total = torch.zeros(channels, dtype=torch.float64)
    captured = {}
    handle = dict(model.named_modules())[consumer].register_forward_pre_hook(
        lambda module, args: captured.__setitem__("a", args[0].detach().requires_grad_(True)) or (captured["a"],))
    for batch in task.calibration_batches():
        loss = torch.nn.functional.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
        (grad,) = torch.autograd.grad(loss, captured["a"])
        total += (captured["a"] * grad).sum((0, 2, 3)).abs().double()
    handle.remove()
    return total


def test_calibration_is_a_fixed_unaugmented_subset(setup):
    _, task, _ = setup
    first = [batch["labels"] for batch in task.calibration_batches()]
    assert sum(len(b) for b in first) == 64 and [len(b) for b in first] == [32, 32]
    assert all(torch.equal(a, b["labels"]) for a, b in zip(first, task.calibration_batches()))


def test_pruned_taylor_fo_sums_the_reference_scores_of_the_removed_filters(setup):
    model, task, groups = setup
    criterion = PrunedTaylorFO(groups, task.calibration_batches, task.loss_fn())
    kept = {"conv2": (0, 2, 4, 6, 8)}
    expected = reference_scores(model, task, "conv3", 10)[[1, 3, 5, 7, 9]].sum().item()
    assert criterion(model, kept) == pytest.approx(expected, rel=1e-5)
    both = {"conv1": (1, 2, 3), "conv2": tuple(range(9))}
    conv1 = reference_scores(model, task, "conv2", 10)
    assert criterion(model, both) == pytest.approx(
        conv1.sum().item() - conv1[[1, 2, 3]].sum().item() + reference_scores(model, task, "conv3", 10)[9].item(),
        rel=1e-5)


def test_removed_score_counts_only_removed_units():
    from hfprune.pruning.structured.groups import Group

    groups = {"g": Group("g", "filters", 4, ())}
    assert removed_score({"g": torch.tensor([1.0, 2.0, 4.0, 8.0])}, groups, {"g": (1, 3)}) == 5.0
    assert removed_score({"g": torch.tensor([1.0, 2.0, 4.0, 8.0])}, groups, {"g": (0, 1, 2, 3)}) == 0.0
