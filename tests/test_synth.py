"""Tests for lsurf.synth: the synthetic dataset's layout, determinism, safety and difficulty.

The files are checked with plain pickle and read back with lsurf.data's own reader.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_helpers import FOLDER, SMALL_TEST, SMALL_TRAIN, TRAIN_FILES, md5sums

from lsurf.data import REFERENCE_MEAN, REFERENCE_STD, load_split
from lsurf.errors import DataError
from lsurf.synth import write_synthetic


@pytest.fixture(scope="module")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The defaults (10k / 2k) are what `lsurf data synth` writes; shared, never modified.
    return write_synthetic(tmp_path_factory.mktemp("default"))


def test_synthetic_files_have_the_real_layout(small_root: Path) -> None:
    folder = small_root / FOLDER
    assert sorted(path.name for path in small_root.iterdir()) == [FOLDER]  # no staging left
    sizes = []
    for name in [*TRAIN_FILES, "test_batch"]:
        encoded = (folder / name).read_bytes()
        assert encoded[:2] == b"\x80\x02"  # pickle protocol 2
        content = pickle.loads(encoded, encoding="latin1")
        assert set(content) == {"batch_label", "labels", "data", "filenames"}
        data = content["data"]
        assert data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
        assert data.flags["C_CONTIGUOUS"]
        assert all(type(label) is int and 0 <= label < 10 for label in content["labels"])
        assert len(content["labels"]) == len(content["filenames"]) == len(data)
        assert isinstance(content["batch_label"], str)
        sizes.append(len(data))
    assert sum(sizes[:5]) == SMALL_TRAIN and max(sizes[:5]) - min(sizes[:5]) <= 1
    assert sizes[5] == SMALL_TEST
    meta = pickle.loads((folder / "batches.meta").read_bytes(), encoding="latin1")
    assert len(meta["label_names"]) == 10 and meta["num_vis"] == 3072
    assert meta["num_cases_per_batch"] == max(sizes[:5])
    for name, digest in md5sums(small_root).items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == digest


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    first = md5sums(write_synthetic(tmp_path / "a", 50, 20, seed=3))
    second = md5sums(write_synthetic(tmp_path / "b", 50, 20, seed=3))
    other = md5sums(write_synthetic(tmp_path / "c", 50, 20, seed=4))
    assert first == second
    assert first["test_batch"] != other["test_batch"]
    # Overwriting a synthetic folder is allowed, and yields the new dataset.
    assert md5sums(write_synthetic(tmp_path / "a", 50, 20, seed=4)) == other


def test_synthetic_never_overwrites_real_data(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"the real thing")
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_synthetic(tmp_path, 20, 10)
    assert (folder / "data_batch_1").read_bytes() == b"the real thing"
    assert sorted(path.name for path in tmp_path.iterdir()) == [FOLDER]


@pytest.mark.parametrize(
    ("train_size", "test_size", "seed"), [(0, 10, 0), (10, -1, 0), (10, 10, -2)]
)
def test_synthetic_refuses_bad_sizes(
    tmp_path: Path, train_size: int, test_size: int, seed: int
) -> None:
    with pytest.raises(DataError):
        write_synthetic(tmp_path, train_size, test_size, seed)


def test_synthetic_classes_are_learnable_but_not_trivial(default_root: Path) -> None:
    train = load_split(default_root, "train", REFERENCE_MEAN, REFERENCE_STD)
    test = load_split(default_root, "test", REFERENCE_MEAN, REFERENCE_STD)
    assert (len(train), len(test)) == (10000, 2000)
    assert torch.bincount(train.labels).tolist() == [1000] * 10  # balanced
    flat = train.images.flatten(1)
    class_means = torch.stack([flat[train.labels == label].mean(0) for label in range(10)])
    predicted = torch.cdist(test.images.flatten(1), class_means).argmin(1)
    accuracy = (predicted == test.labels).double().mean().item()
    print(f"nearest-class-mean test accuracy on synthetic CIFAR-10: {accuracy:.1%}")
    # Chance is 10 %; a pixel-wise mean must not solve it (the textures sit at random offsets).
    assert 0.25 < accuracy < 0.6
