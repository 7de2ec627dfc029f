"""Tests for lsurf.data.synthetic: the synthetic datasets' layout, determinism, safety and
difficulty, for CIFAR-10 and CIFAR-100, and the `lsurf data synth` command that writes them.

The files are checked with plain pickle and read back with lsurf.data.cifar's own reader.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_helpers import (
    FILES_100,
    FINE_TO_COARSE,
    FOLDER,
    FOLDER_100,
    SMALL_TEST,
    SMALL_TRAIN,
    TRAIN_FILES,
    md5sums,
)

from lsurf.cli import main
from lsurf.data.cifar import load_split
from lsurf.data.layouts import REFERENCE_MEAN, REFERENCE_STD
from lsurf.data.synthetic import write_synthetic
from lsurf.errors import DataError


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


def test_cifar100_synthetic_files_have_the_real_layout(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path, SMALL_TRAIN, SMALL_TEST, dataset="cifar100")
    folder = root / FOLDER_100
    assert sorted(path.name for path in root.iterdir()) == [FOLDER_100]  # no staging left
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [*FILES_100, "SYNTHETIC_MD5SUMS"]
    )
    for name, size, batch_label in (
        ("train", SMALL_TRAIN, "training batch 1 of 1"),
        ("test", SMALL_TEST, "testing batch 1 of 1"),
    ):
        encoded = (folder / name).read_bytes()
        assert encoded[:2] == b"\x80\x02"  # pickle protocol 2, as the real files
        content = pickle.loads(encoded, encoding="latin1")
        assert set(content) == {"batch_label", "fine_labels", "coarse_labels", "data", "filenames"}
        assert content["batch_label"] == batch_label
        data, fine = content["data"], content["fine_labels"]
        assert data.dtype == np.uint8 and data.shape == (size, 3072)
        assert data.flags["C_CONTIGUOUS"]
        assert all(type(label) is int and 0 <= label < 100 for label in fine)
        # The superclass of every image is its class's real one.
        assert content["coarse_labels"] == [FINE_TO_COARSE[label] for label in fine]
        assert len(content["filenames"]) == size
    meta = pickle.loads((folder / "meta").read_bytes(), encoding="latin1")
    assert set(meta) == {"fine_label_names", "coarse_label_names"}
    names, coarse_names = meta["fine_label_names"], meta["coarse_label_names"]
    assert len(names) == len(set(names)) == 100 and names == sorted(names)
    assert names[:10] == [
        "apple", "aquarium_fish", "baby", "bear", "beaver",
        "bed", "bee", "beetle", "bicycle", "bottle",
    ]  # fmt: skip
    assert names[-3:] == ["wolf", "woman", "worm"]
    assert len(coarse_names) == 20 and coarse_names == sorted(coarse_names)
    assert coarse_names[0] == "aquatic_mammals" and coarse_names[-1] == "vehicles_2"
    # Spot checks of the pairing, by name: a class and its superclass.
    for fine_name, coarse_name in (
        ("apple", "fruit_and_vegetables"),
        ("aquarium_fish", "fish"),
        ("lawn_mower", "vehicles_2"),
        ("worm", "non-insect_invertebrates"),
    ):
        assert coarse_names[FINE_TO_COARSE[names.index(fine_name)]] == coarse_name
    test = pickle.loads((folder / "test").read_bytes(), encoding="latin1")
    first_label, first_file = test["fine_labels"][0], test["filenames"][0]
    assert first_file == f"synthetic_{names[first_label]}_000000.png"
    for name, digest in md5sums(root, FOLDER_100).items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == digest


def test_cifar10_synthetic_content_is_pinned(small_root: Path) -> None:
    # The same seed writes the same bytes, across lsurf versions too: a CIFAR-10 sweep on
    # synthetic data stays comparable with one run before CIFAR-100 was added. (Hashes of the
    # arrays, not of the files: the pickled module names differ between numpy 1 and 2.)
    pinned = {
        "data_batch_1": ("ed58a6510fdc1172", [6, 3, 7, 8, 1, 8, 8, 9, 0, 2, 8, 7]),
        "test_batch": ("7dda0b83b26d9976", [3, 0, 6, 5, 5, 8, 3, 0, 7, 2, 8, 1]),
    }
    for name, (digest, first_labels) in pinned.items():
        content = pickle.loads((small_root / FOLDER / name).read_bytes(), encoding="latin1")
        assert hashlib.sha256(content["data"].tobytes()).hexdigest()[:16] == digest
        assert content["labels"][:12] == first_labels


@pytest.mark.parametrize(
    ("dataset", "folder", "test_file"),
    [("cifar10", FOLDER, "test_batch"), ("cifar100", FOLDER_100, "test")],
)
def test_synthetic_is_deterministic_and_seeded(
    tmp_path: Path, dataset: str, folder: str, test_file: str
) -> None:
    def write(name: str, seed: int) -> dict[str, str]:
        return md5sums(write_synthetic(tmp_path / name, 50, 20, seed, dataset), folder)

    first, second, other = write("a", 3), write("b", 3), write("c", 4)
    assert first == second
    assert first[test_file] != other[test_file]
    # Overwriting a synthetic folder is allowed, and yields the new dataset.
    assert write("a", 4) == other


@pytest.mark.parametrize(
    ("dataset", "folder", "data_file"),
    [("cifar10", FOLDER, "data_batch_1"), ("cifar100", FOLDER_100, "train")],
)
def test_synthetic_never_overwrites_real_data(
    tmp_path: Path, dataset: str, folder: str, data_file: str
) -> None:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / data_file).write_bytes(b"the real thing")
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_synthetic(tmp_path, 20, 10, dataset=dataset)
    assert (tmp_path / folder / data_file).read_bytes() == b"the real thing"
    assert sorted(path.name for path in tmp_path.iterdir()) == [folder]


def test_both_datasets_live_side_by_side_in_one_root(tmp_path: Path) -> None:
    write_synthetic(tmp_path, 20, 10, dataset="cifar10")
    before = md5sums(tmp_path, FOLDER)
    write_synthetic(tmp_path, 30, 10, dataset="cifar100")
    assert sorted(path.name for path in tmp_path.iterdir()) == [FOLDER, FOLDER_100]
    assert md5sums(tmp_path, FOLDER) == before  # the CIFAR-10 copy is untouched
    ten = load_split(tmp_path, "train", REFERENCE_MEAN, REFERENCE_STD)
    hundred = load_split(tmp_path, "train", REFERENCE_MEAN, REFERENCE_STD, dataset="cifar100")
    assert (len(ten), len(hundred)) == (20, 30)


def test_unknown_dataset_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'mnist'; valid datasets: cifar10, cifar100"):
        write_synthetic(tmp_path, 20, 10, dataset="mnist")
    assert list(tmp_path.iterdir()) == []


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


def test_cifar100_classes_are_learnable_but_not_trivial(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path, 5000, 1000, dataset="cifar100")
    train = load_split(root, "train", REFERENCE_MEAN, REFERENCE_STD, dataset="cifar100")
    test = load_split(root, "test", REFERENCE_MEAN, REFERENCE_STD, dataset="cifar100")
    assert torch.bincount(train.labels).tolist() == [50] * 100  # balanced, every class
    flat = train.images.flatten(1)
    class_means = torch.stack([flat[train.labels == label].mean(0) for label in range(100)])
    predicted = torch.cdist(test.images.flatten(1), class_means).argmin(1)
    accuracy = (predicted == test.labels).double().mean().item()
    print(f"nearest-class-mean test accuracy on synthetic CIFAR-100: {accuracy:.1%}")
    # Chance is 1 %: well above it, so there is something to learn, and far from solved.
    assert 0.04 < accuracy < 0.3


# --- lsurf data synth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "title", "folder", "dataset"),
    [
        ([], "CIFAR-10", FOLDER, "cifar10"),
        (["--dataset", "cifar100"], "CIFAR-100", FOLDER_100, "cifar100"),
    ],
)
def test_cli_data_synth_writes_the_chosen_dataset(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    title: str,
    folder: str,
    dataset: str,
) -> None:
    argv = ["data", "synth", *arguments, "--out", str(tmp_path)]
    assert main([*argv, "--train-size", "30", "--test-size", "12", "--seed", "5"]) == 0
    assert capsys.readouterr().out == f"synthetic {title} (30 train, 12 test) in {tmp_path}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [folder]
    # The command writes exactly what the library call does.
    library = write_synthetic(tmp_path / "library", 30, 12, seed=5, dataset=dataset)
    assert md5sums(tmp_path, folder) == md5sums(library, folder)
    split = load_split(tmp_path, "test", REFERENCE_MEAN, REFERENCE_STD, dataset=dataset)
    assert len(split) == 12


def test_cli_data_synth_refuses_an_unknown_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["data", "synth", "--dataset", "imagenet", "--out", str(tmp_path)])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'imagenet'" in error and "cifar100" in error
    assert error.count("\n") == 1 and list(tmp_path.iterdir()) == []
