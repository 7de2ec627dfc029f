"""Tests for lsurf.data.cifar: CIFAR-10 and CIFAR-100 reading, normalization, subsets, safety,
errors, download.

Everything runs on generated data written in the real python formats (no network).
"""

from __future__ import annotations

import os
import pickle
import struct
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from cifar_helpers import FOLDER, FOLDER_100, SMALL_TEST, SMALL_TRAIN, TRAIN_FILES, md5sums
from torchvision import transforms

from lsurf.data.cifar import Split, load_split, selected_indices
from lsurf.data.layouts import AKAMASTER_MEAN, AKAMASTER_STD, REFERENCE_MEAN, REFERENCE_STD, SPLITS
from lsurf.data.synthetic import write_synthetic
from lsurf.errors import DataError

ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)


@pytest.fixture
def small_root_100(tmp_path: Path) -> Path:
    """A fresh synthetic CIFAR-100 folder of odd sizes, one per test: the tests damage it."""
    return write_synthetic(tmp_path / "data100", SMALL_TRAIN, SMALL_TEST, dataset="cifar100")


def raw_batches(
    root: Path, names: list[str], folder: str = FOLDER, label_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 3072) uint8 and labels, read with plain pickle (these files are ours)."""
    pixels, labels = [], []
    for name in names:
        with (root / folder / name).open("rb") as stream:
            content = pickle.load(stream, encoding="latin1")
        pixels.append(content["data"])
        labels.extend(content[label_key])
    return np.concatenate(pixels), np.array(labels)


def unnormalize(split: Split, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Back to grey levels, (N, 3, 32, 32) uint8."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return ((split.images * std_t + mean_t) * 255).round().to(torch.uint8).numpy()


def torchvision_cifar(root: Path, train: bool) -> torchvision.datasets.CIFAR10:
    """torchvision's own CIFAR10 reader, with the synthetic files' checksums."""
    sums = md5sums(root)

    class SyntheticCIFAR10(torchvision.datasets.CIFAR10):
        train_list = [[name, sums[name]] for name in TRAIN_FILES]
        test_list = [["test_batch", sums["test_batch"]]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": sums["batches.meta"]}

    return SyntheticCIFAR10(str(root), train=train)


def torchvision_cifar100(root: Path, train: bool) -> torchvision.datasets.CIFAR100:
    """torchvision's own CIFAR100 reader, with the synthetic files' checksums."""
    sums = md5sums(root, FOLDER_100)

    class SyntheticCIFAR100(torchvision.datasets.CIFAR100):
        train_list = [["train", sums["train"]]]
        test_list = [["test", sums["test"]]]
        meta = {"filename": "meta", "key": "fine_label_names", "md5": sums["meta"]}

    return SyntheticCIFAR100(str(root), train=train)


# --- reading and normalization ----------------------------------------------------------------


def test_reference_statistics_are_the_published_ones() -> None:
    # loss-landscape's dataloader.py: [125.3, 123.0, 113.9] / 255 and [63.0, 62.1, 66.7] / 255.
    assert REFERENCE_MEAN == pytest.approx((0.491373, 0.482353, 0.446667), abs=1e-6)
    assert REFERENCE_STD == pytest.approx((0.247059, 0.243529, 0.261569), abs=1e-6)
    assert AKAMASTER_MEAN == (0.485, 0.456, 0.406)
    assert AKAMASTER_STD == (0.229, 0.224, 0.225)
    assert SPLITS == ("train", "test")


def test_round_trip_reproduces_the_pickled_pixels(small_root: Path) -> None:
    for split_name, names, size in (
        ("train", TRAIN_FILES, SMALL_TRAIN),
        ("test", ["test_batch"], SMALL_TEST),
    ):
        split = load_split(small_root, split_name, REFERENCE_MEAN, REFERENCE_STD)
        pixels, labels = raw_batches(small_root, names)
        assert len(split) == size == len(pixels)
        assert split.images.shape == (size, 3, 32, 32)
        assert split.images.dtype == torch.float32 and split.images.is_contiguous()
        assert split.labels.shape == (size,) and split.labels.dtype == torch.int64
        assert np.array_equal(split.labels.numpy(), labels)
        restored = unnormalize(split, REFERENCE_MEAN, REFERENCE_STD)
        assert np.array_equal(restored, pixels.reshape(size, 3, 32, 32))

    # One pixel by hand: a row is 1024 red values, 1024 green, 1024 blue, each row-major.
    split = load_split(small_root, "test", REFERENCE_MEAN, REFERENCE_STD)
    pixels, _ = raw_batches(small_root, ["test_batch"])
    image, row, column = 5, 7, 11
    offset = row * 32 + column
    expected_rgb = [pixels[image, plane * 1024 + offset] for plane in range(3)]
    assert len(set(expected_rgb)) == 3  # distinct values, so a swapped plane would show
    restored = unnormalize(split, REFERENCE_MEAN, REFERENCE_STD)
    assert list(restored[image, :, row, column]) == expected_rgb


def test_identity_normalization_is_pixels_over_255(small_root: Path) -> None:
    split = load_split(small_root, "train", ZERO, ONE)
    pixels, _ = raw_batches(small_root, TRAIN_FILES)
    expected = torch.from_numpy(pixels).view(-1, 3, 32, 32).to(torch.float32) / 255
    assert torch.equal(split.images, expected)


def test_normalization_is_exact_per_channel(small_root: Path) -> None:
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    split = load_split(small_root, "test", mean, std)
    pixels, _ = raw_batches(small_root, ["test_batch"])
    scaled = torch.from_numpy(pixels).view(-1, 3, 32, 32).to(torch.float32) / 255
    for channel in range(3):
        expected = (scaled[:, channel] - mean[channel]) / std[channel]
        assert torch.equal(split.images[:, channel], expected)


def test_matches_torchvision_totensor_normalize_bit_for_bit(small_root: Path) -> None:
    split = load_split(small_root, "test", REFERENCE_MEAN, REFERENCE_STD)
    reference = torchvision_cifar(small_root, train=False)
    pipeline = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(REFERENCE_MEAN, REFERENCE_STD)]
    )
    for index in range(len(reference)):
        assert torch.equal(split.images[index], pipeline(reference.data[index]))


def test_torchvision_reads_the_synthetic_files_like_load_split(small_root: Path) -> None:
    for train, split_name in ((True, "train"), (False, "test")):
        reference = torchvision_cifar(small_root, train=train)
        split = load_split(small_root, split_name, ZERO, ONE)
        hwc = unnormalize(split, ZERO, ONE).transpose(0, 2, 3, 1)
        assert reference.data.shape == hwc.shape and np.array_equal(reference.data, hwc)
        assert reference.targets == split.labels.tolist()
        assert reference.classes == [
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ]  # fmt: skip


def python2_batch(pixels: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the real files: byte-string keys and buffer,
    numpy.core names, the array's state as numpy 1 stores it."""

    def string(text: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING: a Python 2 str
        if len(text) < 256:
            return b"U" + bytes([len(text)]) + text
        return b"T" + struct.pack("<I", len(text)) + text

    count = struct.pack("<H", len(pixels))
    return b"".join(
        [
            b"\x80\x02}(",  # protocol 2, a dict, its items follow
            string(b"batch_label"),
            string(b"training batch 1 of 5"),
            string(b"labels"),
            b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e",
            string(b"data"),
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85",
            string(b"b") + b"\x87R",  # _reconstruct(ndarray, (0,), 'b')
            b"(K\x01M" + count + b"M\x00\x0c\x86",  # state: version 1, shape (n, 3072)
            b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R",  # dtype('u1', 0, 1)
            b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
            b"\x89" + string(pixels.tobytes()) + b"tb",  # not Fortran order, raw bytes
            b"u.",
        ]
    )


def test_reads_python2_pickles_and_bytes_keys(small_root: Path) -> None:
    pixels, labels = raw_batches(small_root, ["test_batch"])
    python2 = python2_batch(pixels, labels.tolist())
    # The hand-built stream is what plain pickle reads as the real files (sanity of the test).
    plain = pickle.loads(python2, encoding="latin1")
    assert np.array_equal(plain["data"], pixels) and plain["labels"] == labels.tolist()
    (small_root / FOLDER / "test_batch").write_bytes(python2)
    split = load_split(small_root, "test", ZERO, ONE)
    assert np.array_equal(unnormalize(split, ZERO, ONE).reshape(len(pixels), -1), pixels)
    assert np.array_equal(split.labels.numpy(), labels)

    # Loaded with encoding='bytes' and dumped again, keys become bytes.
    bytes_keys = {b"data": pixels, b"labels": labels.tolist(), b"batch_label": b"x"}
    (small_root / FOLDER / "test_batch").write_bytes(pickle.dumps(bytes_keys))
    again = load_split(small_root, "test", ZERO, ONE)
    assert torch.equal(again.images, split.images) and torch.equal(again.labels, split.labels)


# --- CIFAR-100 -------------------------------------------------------------------------------


def test_cifar100_round_trip_reproduces_the_fine_labels_and_pixels(small_root_100: Path) -> None:
    for split_name, size in (("train", SMALL_TRAIN), ("test", SMALL_TEST)):
        split = load_split(
            small_root_100, split_name, REFERENCE_MEAN, REFERENCE_STD, dataset="cifar100"
        )
        pixels, fine = raw_batches(small_root_100, [split_name], FOLDER_100, "fine_labels")
        assert len(split) == size
        assert split.images.shape == (size, 3, 32, 32)
        assert split.images.dtype == torch.float32 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64
        assert np.array_equal(split.labels.numpy(), fine)  # the fine labels, not the coarse
        restored = unnormalize(split, REFERENCE_MEAN, REFERENCE_STD)
        assert np.array_equal(restored, pixels.reshape(size, 3, 32, 32))
    # 103 training images over 100 classes: labels above 9 are there, and within 0..99.
    train = load_split(small_root_100, "train", ZERO, ONE, dataset="cifar100")
    assert train.labels.max().item() >= 10 and 0 <= train.labels.min().item()
    assert train.labels.max().item() <= 99


def test_cifar100_subset_is_the_seeded_sorted_permutation(small_root_100: Path) -> None:
    full = load_split(small_root_100, "train", ZERO, ONE, dataset="cifar100")
    subset = load_split(
        small_root_100, "train", ZERO, ONE, subset=40, subset_seed=2, dataset="cifar100"
    )
    expected = torch.randperm(SMALL_TRAIN, generator=torch.Generator().manual_seed(2))[:40]
    expected = torch.sort(expected).values
    assert torch.equal(subset.images, full.images[expected])
    assert torch.equal(subset.labels, full.labels[expected])
    with pytest.raises(DataError, match=f"between 1 and {SMALL_TEST}"):
        load_split(small_root_100, "test", ZERO, ONE, subset=SMALL_TEST + 1, dataset="cifar100")


def _reference_data_split(total: int, k: int) -> np.ndarray:
    """The reference dataloader.py's choice for --data_split k, as it spells it."""
    indices = torch.tensor(np.arange(total))
    state = np.random.get_state()
    np.random.seed(0)
    chosen = np.random.choice(indices, total // k, replace=False)
    np.random.set_state(state)
    return chosen


def test_reference_split_selects_the_references_examples_of_train_only(small_root: Path) -> None:
    for total, k in [(50_000, 3), (50_000, 10), (1000, 7)]:
        chosen = selected_indices(total, "train", None, 0, k)
        assert np.array_equal(chosen.numpy(), np.sort(_reference_data_split(total, k)))
    assert selected_indices(1000, "test", None, 0, 4) is None  # the reference splits train only
    assert selected_indices(1000, "train", None, 0, 1) is None  # its default: everything
    state = np.random.get_state()
    full = load_split(small_root, "train", ZERO, ONE)
    part = load_split(small_root, "train", ZERO, ONE, reference_split=3)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG is untouched
    expected = torch.from_numpy(np.sort(_reference_data_split(SMALL_TRAIN, 3)))
    assert len(part) == SMALL_TRAIN // 3
    assert torch.equal(part.images, full.images[expected])
    assert torch.equal(part.labels, full.labels[expected])
    test = load_split(small_root, "test", ZERO, ONE, reference_split=3)
    assert len(test) == SMALL_TEST
    with pytest.raises(DataError, match="leaves no example"):
        selected_indices(5, "train", None, 0, 6)


def test_torchvision_cifar100_reads_the_synthetic_files_like_load_split(
    small_root_100: Path,
) -> None:
    pipeline = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(REFERENCE_MEAN, REFERENCE_STD)]
    )
    for train, split_name in ((True, "train"), (False, "test")):
        reference = torchvision_cifar100(small_root_100, train=train)
        split = load_split(
            small_root_100, split_name, REFERENCE_MEAN, REFERENCE_STD, dataset="cifar100"
        )
        assert reference.targets == split.labels.tolist()
        assert len(reference) == len(split)
        for index in range(len(reference)):
            assert torch.equal(split.images[index], pipeline(reference.data[index]))
        assert len(reference.classes) == 100
        assert reference.classes[:3] == ["apple", "aquarium_fish", "baby"]
        assert reference.classes[-1] == "worm"


def test_the_two_datasets_do_not_stand_in_for_each_other(small_root: Path) -> None:
    # A CIFAR-10 folder is no CIFAR-100: the message names the missing CIFAR-100 file.
    with pytest.raises(DataError) as caught:
        load_split(small_root, "test", ZERO, ONE, dataset="cifar100")
    message = str(caught.value)
    assert message.startswith("CIFAR-100 not found: expected ")
    assert str(small_root / FOLDER_100 / "test") in message


@pytest.mark.parametrize(("split", "first_file"), [("train", "train"), ("test", "test")])
def test_missing_cifar100_says_where_and_how_to_fix(
    tmp_path: Path, split: str, first_file: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, split, ZERO, ONE, dataset="cifar100")
    message = str(caught.value)
    assert message == (
        f"CIFAR-100 not found: expected {tmp_path / FOLDER_100 / first_file} (the python "
        f"version of CIFAR-100); download cifar-100-python.tar.gz and extract it into "
        f"{tmp_path}, set data.download: true where there is a network, or run "
        f"`lsurf data synth --dataset cifar100 --out {tmp_path}` for a synthetic stand-in"
    )


def test_unknown_dataset_lists_the_valid_ones(small_root: Path) -> None:
    with pytest.raises(DataError, match="'cifar1000'; valid datasets: cifar10, cifar100"):
        load_split(small_root, "test", ZERO, ONE, dataset="cifar1000")


def _valid_cifar100(count: int = 4) -> dict[str, Any]:
    return {
        "data": np.zeros((count, 3072), np.uint8),
        "fine_labels": [99] * count,
        "coarse_labels": [13] * count,
    }


MALFORMED_100: dict[str, tuple[Any, str]] = {
    # (file content, what the one-line message must say besides the file's path)
    "truncated": (None, "not a readable CIFAR-100 data file"),
    "not a dict": ([1, 2, 3], "not a CIFAR-100 data dict"),
    "CIFAR-10 keys": ({"data": np.zeros((4, 3072), np.uint8), "labels": [1] * 4}, "fine_labels"),
    "no data": ({"fine_labels": [0, 1]}, "no 'data' entry"),
    "wrong width": (
        {**_valid_cifar100(), "data": np.zeros((4, 3071), np.uint8)},
        "expected uint8 of shape (N, 3072)",
    ),
    "too few labels": (
        {**_valid_cifar100(), "fine_labels": [1, 2, 3]},
        "not a list of 4 integers",
    ),
    "label out of range": (
        {**_valid_cifar100(), "fine_labels": [0, 1, 100, 2]},
        "range over 0..100, expected 0..99 for CIFAR-100",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_100))
def test_malformed_cifar100_file_is_named(small_root_100: Path, case: str) -> None:
    path = small_root_100 / FOLDER_100 / "train"
    content, expected = MALFORMED_100[case]
    if content is None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError) as caught:
        load_split(small_root_100, "train", ZERO, ONE, dataset="cifar100")
    message = str(caught.value)
    assert str(path) in message and expected in message and "\n" not in message
    assert message.endswith("replace it with the file from cifar-100-python.tar.gz")


def test_class_count_follows_the_dataset(small_root_100: Path) -> None:
    # Label 99 is a CIFAR-100 class, and no CIFAR-10 one.
    path = small_root_100 / FOLDER_100 / "test"
    path.write_bytes(pickle.dumps(_valid_cifar100(), protocol=2))
    split = load_split(small_root_100, "test", ZERO, ONE, dataset="cifar100")
    assert split.labels.tolist() == [99] * 4
    ten = small_root_100 / FOLDER
    ten.mkdir()
    (ten / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [99] * 4}, protocol=2)
    )
    with pytest.raises(DataError, match="range over 99..99, expected 0..9 for CIFAR-10;"):
        load_split(small_root_100, "test", ZERO, ONE)


def test_malicious_cifar100_pickle_is_refused_unexecuted(
    small_root_100: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    path = small_root_100 / FOLDER_100 / "test"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    with pytest.raises(DataError, match="never contains") as caught:
        load_split(small_root_100, "test", ZERO, ONE, dataset="cifar100")
    assert str(path) in str(caught.value) and "CIFAR-100" in str(caught.value)
    assert not marker.exists()


# --- subsets ----------------------------------------------------------------------------------


def test_subset_is_the_seeded_sorted_permutation(small_root: Path) -> None:
    full = load_split(small_root, "train", REFERENCE_MEAN, REFERENCE_STD)
    subset = load_split(small_root, "train", REFERENCE_MEAN, REFERENCE_STD, subset=40)
    expected = torch.randperm(SMALL_TRAIN, generator=torch.Generator().manual_seed(0))[:40]
    expected = torch.sort(expected).values
    assert len(subset) == 40 and subset.images.is_contiguous()
    assert torch.equal(subset.images, full.images[expected])
    assert torch.equal(subset.labels, full.labels[expected])

    repeat = load_split(small_root, "train", REFERENCE_MEAN, REFERENCE_STD, subset=40)
    assert torch.equal(repeat.images, subset.images)
    other = load_split(small_root, "train", REFERENCE_MEAN, REFERENCE_STD, subset=40, subset_seed=1)
    assert not torch.equal(other.images, subset.images)
    whole = load_split(small_root, "train", REFERENCE_MEAN, REFERENCE_STD, subset=SMALL_TRAIN)
    assert torch.equal(whole.images, full.images)  # sorted: the whole set keeps file order


@pytest.mark.parametrize("size", [0, -3, SMALL_TEST + 1])
def test_impossible_subset_is_refused(small_root: Path, size: int) -> None:
    with pytest.raises(DataError, match=f"between 1 and {SMALL_TEST}"):
        load_split(small_root, "test", ZERO, ONE, subset=size)


# --- user errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "first_file"), [("train", "data_batch_1"), ("test", "test_batch")]
)
def test_missing_data_says_where_and_how_to_fix(
    tmp_path: Path, split: str, first_file: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, split, REFERENCE_MEAN, REFERENCE_STD)
    message = str(caught.value)
    assert str(tmp_path / FOLDER / first_file) in message
    assert f"lsurf data synth --out {tmp_path}" in message and "\n" not in message


def test_one_missing_batch_is_named(small_root: Path) -> None:
    (small_root / FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_split(small_root, "train", ZERO, ONE)


def test_unknown_split_lists_the_valid_ones(small_root: Path) -> None:
    with pytest.raises(DataError, match="'val'.*train, test"):
        load_split(small_root, "val", ZERO, ONE)


@pytest.mark.parametrize(
    ("mean", "std"), [(ZERO, (1.0, 0.0, 1.0)), ((0.5, 0.5), ONE), (ZERO, (1.0, -1.0, 1.0))]
)
def test_bad_statistics_are_refused(small_root: Path, mean: Any, std: Any) -> None:
    with pytest.raises(DataError, match="three"):
        load_split(small_root, "test", mean, std)


def _valid_batch(count: int = 4) -> dict[str, Any]:
    return {"data": np.zeros((count, 3072), np.uint8), "labels": [1] * count}


MALFORMED: dict[str, Any] = {
    "truncated": None,  # built from the real file below
    "not a dict": [1, 2, 3],
    "no labels": {"data": np.zeros((4, 3072), np.uint8)},
    "no data": {"labels": [0, 1]},
    "float pixels": {**_valid_batch(), "data": np.zeros((4, 3072), np.float32)},
    "wrong width": {**_valid_batch(), "data": np.zeros((4, 3071), np.uint8)},
    "images as 4d": {**_valid_batch(), "data": np.zeros((4, 3, 32, 32), np.uint8)},
    "too few labels": {**_valid_batch(), "labels": [1, 2, 3]},
    "label out of range": {**_valid_batch(), "labels": [0, 1, 10, 2]},
    "text labels": {**_valid_batch(), "labels": ["cat"] * 4},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_batch_is_named(small_root: Path, case: str) -> None:
    path = small_root / FOLDER / "data_batch_2"
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(pickle.dumps(MALFORMED[case], protocol=2))
    with pytest.raises(DataError) as caught:
        load_split(small_root, "train", ZERO, ONE)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsShell, _Evaluates])
@pytest.mark.parametrize("where", ["whole file", "inside the labels"])
def test_malicious_pickle_is_refused_unexecuted(
    small_root: Path, tmp_path: Path, payload: type, where: str
) -> None:
    marker = tmp_path / "pwned"
    evil = payload(marker)
    content = evil if where == "whole file" else {**_valid_batch(), "labels": [evil] * 4}
    path = small_root / FOLDER / "test_batch"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match="never contains") as caught:
        load_split(small_root, "test", ZERO, ONE)
    assert str(path) in str(caught.value)
    assert not marker.exists()


# --- download (torchvision faked at the edge: this machine has no network) ---------------------


def test_failed_download_explains_and_keeps_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def offline(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, "test", ZERO, ONE, download=True)
    assert calls == [(str(tmp_path), False, True)]
    message = str(caught.value)
    assert "download failed" in message and "no route to host" in message
    assert str(tmp_path / FOLDER / "test_batch") in message and "lsurf data synth" in message

    calls.clear()
    with pytest.raises(DataError):
        load_split(tmp_path, "test", ZERO, ONE, download=False)
    assert calls == []  # no network access unless asked for


def test_download_then_reads_with_our_own_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fetch(root: str, train: bool, download: bool) -> None:
        write_synthetic(Path(root), train_size=SMALL_TRAIN, test_size=SMALL_TEST)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fetch)
    split = load_split(tmp_path, "train", ZERO, ONE, download=True)
    assert len(split) == SMALL_TRAIN


def test_cifar100_download_goes_through_torchvision_cifar100(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def offline(root: str, train: bool, download: bool) -> None:
        calls.append(("CIFAR100", root, train, download))
        raise urllib.error.URLError("no route to host")

    def wrong_reader(root: str, train: bool, download: bool) -> None:
        calls.append(("CIFAR10", root, train, download))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", wrong_reader)
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, "train", ZERO, ONE, download=True, dataset="cifar100")
    assert calls == [("CIFAR100", str(tmp_path), True, True)]
    message = str(caught.value)
    assert message.startswith("CIFAR-100 not found and its download failed (URLError:")
    assert str(tmp_path / FOLDER_100 / "train") in message

    def fetch(root: str, train: bool, download: bool) -> None:
        write_synthetic(Path(root), SMALL_TRAIN, SMALL_TEST, dataset="cifar100")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fetch)
    split = load_split(tmp_path, "test", ZERO, ONE, download=True, dataset="cifar100")
    assert len(split) == SMALL_TEST
