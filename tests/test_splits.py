"""lsurf.data.splits: every dataset kind as splits on a device, cached or streamed alike."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lsurf.config import DataConfig
from lsurf.data.cifar import load_split
from lsurf.data.splits import CachedSplit, SplitData, open_split, open_splits, pack, unpack
from lsurf.data.synthetic import write_synthetic
from lsurf.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CPU = torch.device("cpu")
CLASSES = ("bird", "cat", "dog")


@pytest.fixture(autouse=True)
def user_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's package (tests/fixtures/userpkg) importable, as if on PYTHONPATH."""
    monkeypatch.syspath_prepend(str(FIXTURES))


def data_config(**changes) -> DataConfig:
    settings = {"batch_size": 7, "workers": 0, "splits": ("train", "test")}
    settings.update(changes)
    return DataConfig(**settings)


def write_image_folder(root: Path, test_classes: tuple[str, ...] = CLASSES) -> Path:
    """train/ and test/ with a few random PNGs per class, of different sizes and modes."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", CLASSES), ("test", test_classes)):
        for number, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for image in range(3):
                height, width = 9 + 4 * image + number, 12 + 3 * number
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                picture = Image.fromarray(pixels)
                if image == 2:
                    picture = picture.convert("L")  # a greyscale file still gives 3 channels
                picture.save(folder / f"{image}.png")
    return root


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


def every_batch(split: SplitData, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(split.batches(batch_size))


def assert_same_batches(cached: SplitData, streamed: SplitData, batch_size: int) -> None:
    one, other = every_batch(cached, batch_size), every_batch(streamed, batch_size)
    assert [len(targets) for _, targets in one] == [len(targets) for _, targets in other]
    for (inputs, targets), (other_inputs, other_targets) in zip(one, other, strict=True):
        assert torch.equal(inputs, other_inputs)
        assert torch.equal(targets, other_targets)
        assert inputs.is_contiguous(memory_format=torch.channels_last) == (
            other_inputs.is_contiguous(memory_format=torch.channels_last)
        )


@torch.inference_mode()
def mean_loss(model: nn.Module, split: SplitData, batch_size: int) -> float:
    """The full-split mean cross-entropy, summed the way the evaluator sums it."""
    total = torch.zeros((), dtype=torch.float64)
    for inputs, targets in split.batches(batch_size):
        logits = model(inputs)
        if logits.dim() == 3:  # tokens: (B, T, vocabulary) against (B, T)
            logits, targets = logits.flatten(0, 1), targets.flatten()
        total += F.cross_entropy(logits, targets, reduction="sum").double()
    return float(total) / sum(target.numel() for _, target in split.batches(batch_size))


def image_model(classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, classes),
    )
    return model.to(memory_format=torch.channels_last).eval()


# --- cifar ---------------------------------------------------------------------------------


def test_cifar10_split_holds_load_splits_exact_tensors(cifar_root: Path):
    data = data_config(root=cifar_root)
    split = open_split(data, "train", CPU, channels_last=True)
    expected = load_split(cifar_root, "train", data.mean, data.std)
    assert (split.name, split.num_classes, split.cached, len(split)) == ("train", 10, True, 200)
    assert split.nbytes == expected.images.nbytes + expected.labels.nbytes
    inputs, targets = split.first(200)
    assert torch.equal(inputs, expected.images) and torch.equal(targets, expected.labels)
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert inputs.dtype == torch.float32 and targets.dtype == torch.int64


def test_cifar10_subset_is_load_splits_subset(cifar_root: Path):
    data = data_config(root=cifar_root, subset=37, subset_seed=5)
    split = open_split(data, "test", CPU, channels_last=False)
    expected = load_split(cifar_root, "test", data.mean, data.std, subset=37, subset_seed=5)
    inputs, targets = split.first(1000)
    assert len(split) == 37 and inputs.is_contiguous()
    assert torch.equal(inputs, expected.images) and torch.equal(targets, expected.labels)


def test_cifar100_split_has_100_classes(tmp_path: Path):
    root = write_synthetic(tmp_path, train_size=30, test_size=20, seed=1, dataset="cifar100")
    data = data_config(root=root, dataset="cifar100")
    splits = open_splits(data, CPU, channels_last=True)
    assert list(splits) == ["train", "test"]
    test = splits["test"]
    expected = load_split(root, "test", data.mean, data.std, dataset="cifar100")
    assert (test.num_classes, len(test)) == (100, 20)
    assert torch.equal(test.first(20)[0], expected.images)
    assert torch.equal(test.first(20)[1], expected.labels)


def test_cifar_split_over_the_cache_budget_streams_the_same_batches(cifar_root: Path):
    cached = open_split(data_config(root=cifar_root), "test", CPU, channels_last=True)
    streamed = open_split(data_config(root=cifar_root, cache_mb=0), "test", CPU, True)
    assert (cached.cached, streamed.cached) == (True, False)
    assert streamed.nbytes == cached.nbytes and len(streamed) == 100
    assert_same_batches(cached, streamed, batch_size=32)
    model = image_model(10)
    assert mean_loss(model, cached, 32) == mean_loss(model, streamed, 32)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_packed_split_unpacks_to_the_same_tensors_layout_and_losses(
    cifar_root: Path, channels_last: bool
):
    split = open_split(data_config(root=cifar_root), "test", CPU, channels_last)
    packed = pack(split)
    assert packed is not None
    header, arrays = packed
    # What another process maps: a copy of the bytes alone, in a buffer of its own.
    copied = [np.frombuffer(bytearray(array.tobytes()), array.dtype) for array in arrays]
    again = unpack(header, copied)
    assert (again.name, again.num_classes, len(again)) == ("test", 10, 100)
    assert again.inputs.stride() == split.inputs.stride()
    assert again.inputs.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(again.inputs, split.inputs) and torch.equal(again.targets, split.targets)
    assert again.inputs.data_ptr() == copied[0].ctypes.data  # the buffer itself, not a copy
    model = image_model(10)
    assert mean_loss(model, again, 32) == mean_loss(model, split, 32)


def test_only_cached_cpu_splits_of_numpy_dtypes_pack(cifar_root: Path):
    inputs, targets = torch.randn(6, 5), torch.arange(10)
    view = pack(CachedSplit("train", 2, inputs[:3], targets[4:7]))  # views travel as copies
    assert view is not None and [array.tolist() for array in view[1][1:]] == [[4, 5, 6]]
    assert unpack(*view).inputs.equal(inputs[:3])
    assert pack(CachedSplit("train", 2, inputs.bfloat16(), targets[:6])) is None
    streamed = open_split(data_config(root=cifar_root, cache_mb=0), "test", CPU, True)
    assert not streamed.cached and pack(streamed) is None


# --- image folders -------------------------------------------------------------------------


def test_imagefolder_split_classes_shapes_and_order(image_root: Path):
    data = data_config(root=image_root, dataset="imagefolder", image_size=8)
    split = open_split(data, "test", CPU, channels_last=True)
    assert (split.num_classes, len(split), split.cached) == (3, 9, True)
    inputs, targets = split.first(9)
    assert inputs.shape == (9, 3, 8, 8) and inputs.dtype == torch.float32
    assert targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted class folders, file order
    assert split.nbytes == 9 * (3 * 8 * 8 * 4 + 8)


def test_imagefolder_transform_resizes_the_short_side_then_crops_the_centre(tmp_path: Path):
    # 40x20, a red band on the left 6 columns, blue elsewhere. Resized to a short side of
    # round(8 / 0.875) = 9 (18x9) and centre-cropped to 8x8, no red survives; squashing the
    # whole image to 8x8 instead would keep it.
    for split in ("train", "test"):
        folder = tmp_path / split / "only"
        folder.mkdir(parents=True)
        pixels = np.zeros((20, 40, 3), dtype=np.uint8)
        pixels[:, :, 2] = 200
        pixels[:, :6] = (255, 0, 0)
        Image.fromarray(pixels).save(folder / "wide.png")
    mean, std = (0.5, 0.25, 0.125), (0.5, 0.25, 0.2)
    data = data_config(root=tmp_path, dataset="imagefolder", image_size=8, mean=mean, std=std)
    inputs, _ = open_split(data, "train", CPU, channels_last=False).first(1)
    expected = [(0 / 255 - 0.5) / 0.5, (0 / 255 - 0.25) / 0.25, (200 / 255 - 0.125) / 0.2]
    for channel, value in enumerate(expected):
        assert torch.allclose(inputs[0, channel], torch.full((8, 8), value), atol=1e-6)


def test_imagefolder_missing_split_names_the_folder_and_layout(tmp_path: Path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    data = data_config(root=tmp_path, dataset="imagefolder")
    with pytest.raises(DataError) as caught:
        open_split(data, "test", CPU, channels_last=True)
    assert str(caught.value) == (
        f"imagefolder split 'test' not found: {tmp_path / 'test'} is not a folder; "
        f"expected {tmp_path}/test/<class>/<image> (one subfolder per class)"
    )


def test_imagefolder_test_classes_must_be_trains(tmp_path: Path):
    root = write_image_folder(tmp_path, test_classes=("bird", "cow", "dog"))
    with pytest.raises(DataError) as caught:
        open_split(data_config(root=root, dataset="imagefolder"), "test", CPU, True)
    assert str(caught.value) == (
        f"imagefolder {root / 'test'} has other classes than {root / 'train'} (missing: cat; "
        "extra: cow); a class's index is its place among the sorted folder names, so give "
        "both splits the same class folders"
    )


def test_imagefolder_class_folder_without_images_is_one_line(image_root: Path):
    (image_root / "train" / "eel").mkdir()
    with pytest.raises(DataError) as caught:
        open_split(data_config(root=image_root, dataset="imagefolder"), "train", CPU, True)
    message = str(caught.value)
    assert message.startswith(f"imagefolder {image_root / 'train'}: Found no valid file for")
    assert "eel" in message and "\n" not in message


@pytest.mark.parametrize("workers", [0, 2])
def test_imagefolder_unreadable_image_is_one_line(image_root: Path, workers: int):
    (image_root / "train" / "cat" / "1.png").write_bytes(b"not a png")
    data = data_config(root=image_root, dataset="imagefolder", workers=workers)
    with pytest.raises(DataError) as caught:
        open_split(data, "train", CPU, channels_last=True)
    message = str(caught.value)
    assert message.startswith(f"imagefolder {image_root / 'train'}: example 4 cannot be read")
    assert message.endswith("; replace or remove it") and "\n" not in message


def test_imagefolder_streamed_equals_cached(image_root: Path):
    settings = {"root": image_root, "dataset": "imagefolder", "image_size": 8, "workers": 2}
    cached = open_split(data_config(**settings), "train", CPU, channels_last=True)
    streamed = open_split(data_config(**settings, cache_mb=0), "train", CPU, True)
    assert (cached.cached, streamed.cached, streamed.num_classes) == (True, False, 3)
    assert streamed.nbytes == cached.nbytes
    assert_same_batches(cached, streamed, batch_size=4)
    model = image_model(3)
    assert mean_loss(model, cached, 4) == mean_loss(model, streamed, 4)
    assert all(torch.equal(a, b) for a, b in zip(cached.first(5), streamed.first(5), strict=True))


# --- a user's callable ---------------------------------------------------------------------


def test_python_dataset_of_pairs(tmp_path: Path):
    data = data_config(dataset="userpkg.data:images", kwargs={"count": 10, "side": 4})
    split = open_split(data, "test", CPU, channels_last=True)
    assert (split.num_classes, len(split), split.cached) == (None, 10, True)
    from userpkg.data import images

    examples = images("test", count=10, side=4)
    inputs, targets = split.first(10)
    assert torch.equal(inputs, torch.stack([pixels for pixels, _ in examples]))
    assert targets.tolist() == [label for _, label in examples]
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert split.nbytes == 10 * (3 * 4 * 4 * 4 + 8)


def test_python_pair_of_tensors_without_root():
    data = data_config(dataset="userpkg.data:tensors", kwargs={"count": 9})
    split = open_split(data, "train", CPU, channels_last=True)
    inputs, targets = split.first(100)
    assert (split.num_classes, len(split), split.cached) == (None, 9, True)
    assert torch.equal(inputs, torch.arange(45, dtype=torch.float32).view(9, 5))
    assert targets.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert [len(targets) for _, targets in split.batches(4)] == [4, 4, 1]


def test_python_token_dataset_batches_token_ids():
    data = data_config(dataset="userpkg.data:tokens", kwargs={"count": 20, "length": 6})
    split = open_split(data, "train", CPU, channels_last=True)
    batches = every_batch(split, 8)
    assert [tuple(inputs.shape) for inputs, _ in batches] == [(8, 6), (8, 6), (4, 6)]
    inputs, targets = batches[0]
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # next-token targets, shifted by one


@pytest.mark.parametrize("workers", [0, 2])
def test_python_dataset_streamed_equals_cached(workers: int):
    settings = {"dataset": "userpkg.data:lazy_images", "kwargs": {"count": 23}, "workers": workers}
    cached = open_split(data_config(**settings), "train", CPU, channels_last=True)
    streamed = open_split(data_config(**settings, cache_mb=0), "train", CPU, True)
    assert (cached.cached, streamed.cached) == (True, False)
    assert_same_batches(cached, streamed, batch_size=7)
    model = image_model(3)
    assert mean_loss(model, cached, 7) == mean_loss(model, streamed, 7)
    assert all(torch.equal(a, b) for a, b in zip(cached.first(3), streamed.first(3), strict=True))


def test_token_dataset_streamed_equals_cached():
    settings = {"dataset": "userpkg.data:tokens", "kwargs": {"count": 20, "vocabulary": 11}}
    cached = open_split(data_config(**settings), "test", CPU, channels_last=True)
    streamed = open_split(data_config(**settings, cache_mb=0), "test", CPU, True)
    assert_same_batches(cached, streamed, batch_size=6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 11)).eval()
    assert mean_loss(model, cached, 6) == mean_loss(model, streamed, 6)


def test_streamed_split_keeps_its_worker_processes_across_passes():
    data = data_config(dataset="userpkg.data:worker_ids", workers=2, cache_mb=0)
    split = open_split(data, "train", CPU, channels_last=True)
    passes = [
        {int(worker) for _, targets in split.batches(4) for worker in targets} for _ in range(3)
    ]
    assert len(passes[0]) == 2 and os.getpid() not in passes[0]
    assert passes[0] == passes[1] == passes[2]


# --- subsets -------------------------------------------------------------------------------


def documented_subset(total: int, subset: int, seed: int) -> list[int]:
    """The rule: randperm(total) under a generator seeded with subset_seed, first `subset`,
    sorted back into the dataset's order."""
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(total, generator=generator)[:subset].tolist())


@pytest.mark.parametrize("cache_mb", [4096, 0])
def test_subset_of_a_tensor_pair_follows_the_rule(cache_mb: int):
    data = data_config(dataset="userpkg.data:tensors", subset=11, subset_seed=3, cache_mb=cache_mb)
    inputs, _ = open_split(data, "train", CPU, channels_last=True).first(11)
    assert (inputs[:, 0] / 5).long().tolist() == documented_subset(30, 11, 3)


def test_subset_of_a_dataset_follows_the_rule():
    settings = {"dataset": "userpkg.data:lazy_images", "kwargs": {"count": 24}}
    whole = open_split(data_config(**settings), "train", CPU, True).first(24)
    part = open_split(data_config(**settings, subset=6, subset_seed=9), "train", CPU, True)
    chosen = documented_subset(24, 6, 9)
    assert torch.equal(part.first(6)[0], whole[0][chosen])
    assert torch.equal(part.first(6)[1], whole[1][chosen])


def test_subset_of_an_image_folder_follows_the_rule(image_root: Path):
    settings = {"root": image_root, "dataset": "imagefolder", "image_size": 8}
    whole = open_split(data_config(**settings), "train", CPU, True).first(9)
    part = open_split(data_config(**settings, subset=4, subset_seed=1), "train", CPU, True)
    chosen = documented_subset(9, 4, 1)
    assert torch.equal(part.first(4)[0], whole[0][chosen])
    assert part.first(4)[1].tolist() == whole[1][chosen].tolist()


def test_subset_larger_than_the_split_is_a_data_error():
    data = data_config(dataset="userpkg.data:images", kwargs={"count": 5}, subset=6)
    with pytest.raises(DataError) as caught:
        open_split(data, "train", CPU, channels_last=True)
    assert str(caught.value) == (
        "subset=6 is not possible: the train split has 5 examples; choose a subset between 1 "
        "and 5, or none for the whole split"
    )


# --- a user's mistakes ---------------------------------------------------------------------

EXPECTED = (
    "userpkg.data:broken(split, **data.kwargs) must return a map-style Dataset of (input "
    "tensor, target tensor or int) pairs, or a pair of tensors (inputs, targets) with the same "
    "first dimension"
)
LABEL = "data.dataset userpkg.data:broken (split 'train')"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("none", f"{LABEL} returned a NoneType; {EXPECTED}"),
        ("tensor", f"{LABEL} returned a tensor of shape (4, 3); {EXPECTED}"),
        ("triples", f"{LABEL}: example 0 is a tuple of 3 items, not an (input, target) pair; "),
        (
            "lengths",
            "data.dataset userpkg.data:broken returned tensors of shapes (5, 3) and (4,) for "
            f"split 'train', which do not pair up; {EXPECTED}",
        ),
        ("empty", f"{LABEL} has no examples; {EXPECTED}"),
        ("bare", f"{LABEL}: example 0 is a tensor of shape (3, 4, 4), not an (input, target) "),
        ("array_input", f"{LABEL}: example 0 has an input of type list, not a tensor; "),
        ("string_target", f"{LABEL}: example 0 has a target of type str, not a tensor or an int"),
        (
            "ragged",
            f"{LABEL}: example 5 is (float32 (3, 5, 5), int64 ()) but example 0 is "
            "(float32 (3, 4, 4), int64 ()); every example needs the same shapes and dtypes so "
            "that batches stack",
        ),
    ],
)
def test_bad_dataset_results_are_one_line_data_errors(kind: str, message: str):
    data = data_config(dataset="userpkg.data:broken", kwargs={"kind": kind})
    with pytest.raises(DataError) as caught:
        open_split(data, "train", CPU, channels_last=True)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("cache_mb", [4096, 0])
def test_bad_example_read_by_a_worker_is_one_line(cache_mb: int):
    data = data_config(
        dataset="userpkg.data:broken", kwargs={"kind": "ragged"}, workers=2, cache_mb=cache_mb
    )
    with pytest.raises(DataError) as caught:
        split = open_split(data, "train", CPU, channels_last=True)
        every_batch(split, 4)  # a streamed split meets the bad example only when it reads it
    assert str(caught.value).startswith(f"{LABEL}: example 5 is (float32 (3, 5, 5), int64 ())")
    assert "\n" not in str(caught.value)


def test_unknown_dataset_module_is_a_config_error():
    data = data_config(dataset="userpkg.nowhere:images")
    with pytest.raises(ConfigError, match=r"^data.dataset: cannot import module 'userpkg.nowhere'"):
        open_split(data, "train", CPU, channels_last=True)
