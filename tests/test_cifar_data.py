"""CIFAR-10/100 in the Hub schema, the batched pad+crop+flip augmentation, and seeded ImageNet workers."""

import numpy as np
import pytest
import torch

from cifar_fixtures import make_cifar_like, red_of, write_cifar_hub_layout
from hfprune.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, pad_crop_flip
from hfprune.data.registry import DATASETS, load_image_classification
from hfprune.errors import HfpruneError


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    """Loading a parquet copy writes Arrow files to the `datasets` cache: keep them in tmp."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


def unnormalise(images, mean, std):
    return images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


def test_cifar_specs_name_the_hub_ids_and_columns():
    assert (DATASETS["cifar10"].hub_id, DATASETS["cifar10"].hub_config) == ("uoft-cs/cifar10", "plain_text")
    assert (DATASETS["cifar10"].image_column, DATASETS["cifar10"].label_column) == ("img", "label")
    assert (DATASETS["cifar100"].hub_id, DATASETS["cifar100"].label_column) == ("uoft-cs/cifar100", "fine_label")
    assert DATASETS["cifar10"].num_labels == 10 and DATASETS["cifar100"].num_labels == 100


def test_cifar10_hub_download_loads_normalised_per_channel_with_labels_paired(tmp_path):
    dataset_dict, raws, labels = make_cifar_like("cifar10", 30, 10)
    path = write_cifar_hub_layout(tmp_path, dataset_dict, "plain_text")
    data = load_image_classification("cifar10", path=str(path), image_size=32)
    assert data.num_labels == 10 and data.train.images.shape == (30, 3, 32, 32)
    for split, tensors in (("train", data.train), ("test", data.test)):
        np.testing.assert_array_equal(tensors.labels.numpy(), labels[split])
        pixels = unnormalise(tensors.images, CIFAR10_MEAN, CIFAR10_STD) * 255
        expected = torch.from_numpy(raws[split]).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)  # lossless PNG, exact pixels
    # normalised with the train split's statistics, not the batch's
    assert data.train.images[:, 0].mean() == pytest.approx(((20 + 2 * 4.5) / 255 - CIFAR10_MEAN[0]) / CIFAR10_STD[0],
                                                           abs=0.05)


def test_cifar100_uses_the_fine_label_and_ignores_the_coarse_one(tmp_path):
    dataset_dict, raws, labels = make_cifar_like("cifar100", 100, 20)
    path = tmp_path / "saved"
    dataset_dict.save_to_disk(str(path))
    data = load_image_classification("cifar100", path=str(path), train_limit=50)
    assert data.num_labels == 100 and len(data.train) == 50
    red = unnormalise(data.train.images, CIFAR100_MEAN, CIFAR100_STD)[:, 0, 0, 0] * 255
    np.testing.assert_allclose(red.numpy(), [red_of(label) for label in data.train.labels], atol=1e-3)
    assert set(data.train.labels.tolist()) <= set(labels["train"].tolist())
    assert data.batch_augment is None  # off unless the recipe asks


def reference_augment(raw: np.ndarray, top: int, left: int, flip: bool, mean, std) -> np.ndarray:
    """torchvision's order on one raw HWC uint8 image: zero-pad 4, crop 32x32 at (top, left), flip, normalise."""
    padded = np.zeros((40, 40, 3), dtype=np.float64)
    padded[4:36, 4:36] = raw
    crop = padded[top:top + 32, left:left + 32]
    if flip:
        crop = crop[:, ::-1]
    return ((crop / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


def test_batched_pad_crop_flip_equals_the_per_image_reference(tmp_path):
    raws = np.random.default_rng(3).integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    images = (torch.from_numpy(raws).permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    fill = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
    torch.manual_seed(11)
    out = pad_crop_flip(images, fill)
    torch.manual_seed(11)  # the same draws, in the order pad_crop_flip makes them
    tops, lefts, flips = torch.randint(0, 9, (64,)), torch.randint(0, 9, (64,)), torch.rand(64) < 0.5
    for i in range(64):
        expected = reference_augment(raws[i], int(tops[i]), int(lefts[i]), bool(flips[i]), mean, std)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-6)
    assert len(set(tops.tolist())) > 4 and 10 < int(flips.sum()) < 54  # offsets and flips really vary


def test_augmentation_is_seeded_and_only_in_the_training_loss(tmp_path):
    from hfprune.evaluation.classification import classification_loss
    from hfprune.study.tasks.image_classification import ImageClassificationTask
    from hfprune.train.sections import TrainingSection

    dataset_dict, _, _ = make_cifar_like("cifar10", 20, 10)
    path = tmp_path / "saved"
    dataset_dict.save_to_disk(str(path))
    data = load_image_classification("cifar10", path=str(path), augment=("pad_crop", "hflip"))
    task = ImageClassificationTask(data)
    batch = data.train[list(range(8))]
    seen = []
    def model(pixel_values):  # records what it is fed
        seen.append(pixel_values)
        return type("Output", (), {"logits": pixel_values.mean((1, 2, 3))[:, None].expand(-1, 10)})
    section = TrainingSection(epochs=1, batch_size=8, optimizer={"lr": 0.1})
    torch.manual_seed(0)
    task.loss_fn(section)(model, batch)
    torch.manual_seed(0)
    task.loss_fn(section)(model, batch)
    torch.manual_seed(0)
    expected = data.batch_augment(batch["pixel_values"])
    torch.testing.assert_close(seen[0], seen[1])
    torch.testing.assert_close(seen[0], expected)
    assert not torch.equal(seen[0], batch["pixel_values"])
    assert task.loss_fn(None) is classification_loss  # pruned train loss and evaluation: never augmented
    task.loss_fn(None)(model, batch)
    torch.testing.assert_close(seen[-1], batch["pixel_values"])


def test_cifar_rejects_per_image_augmentations(tmp_path):
    dataset_dict, _, _ = make_cifar_like("cifar10", 20, 10)
    path = tmp_path / "saved"
    dataset_dict.save_to_disk(str(path))
    with pytest.raises(HfpruneError, match="random_resized_crop.*is not one of pad_crop, hflip"):
        load_image_classification("cifar10", path=str(path), augment=("random_resized_crop",))


def _epoch_batches(data, seed):
    from hfprune.train.trainer import make_loader

    torch.manual_seed(seed)
    loader = make_loader(data.training_set, 8, shuffle=True, seed=seed)
    return [[batch["pixel_values"].clone() for batch in loader] for _ in range(2)], loader


def test_imagenet_workers_give_the_same_augmented_batches_in_every_run(tmp_path):
    from vit_fixtures import make_imagenet_like

    path = make_imagenet_like(tmp_path, n_train=24, n_val=8)
    load = lambda workers: load_image_classification(
        "imagenet_1k", path=str(path), image_size=16, augment=("random_resized_crop", "hflip"), num_workers=workers)
    first, loader = _epoch_batches(load(2), seed=5)
    assert loader.num_workers == 2 and loader.persistent_workers
    second, _ = _epoch_batches(load(2), seed=5)
    for a, b in zip(sum(first, []), sum(second, [])):
        torch.testing.assert_close(a, b)
    assert not torch.equal(first[0][0], first[1][0])  # a new epoch draws new augmentations
    other, _ = _epoch_batches(load(2), seed=6)
    assert not torch.equal(first[0][0], other[0][0])
