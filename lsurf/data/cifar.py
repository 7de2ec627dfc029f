"""CIFAR-10 and CIFAR-100 splits as normalized tensors, read from the python versions.

This module owns reading a dataset on disk:

- finding a split's files by the dataset's `lsurf.data.layouts.CifarLayout` (``ROOT/cifar-10-
  batches-py/`` with ``data_batch_1`` to ``data_batch_5`` and ``test_batch``, or
  ``ROOT/cifar-100-python/`` with ``train`` and ``test``), so both datasets go through one
  code path; the format constants themselves live in `lsurf.data.layouts`;
- reading them through an unpickler that can build numpy arrays and nothing else, because the
  data folder is user input and a pickle can otherwise run code;
- turning a split into one contiguous, normalized float32 tensor, once per process, so that
  the thousands of evaluations of a sweep never touch a loader or a per-image transform;
- the error messages for a missing or damaged dataset, and the optional download.

Inputs: a data root folder, a split name, the per-channel mean/std the checkpoint was trained
with, an optional subset size and seed, the dataset name. Outputs: a `Split` of CPU tensors
(the caller moves it to its device once).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import numpy as np
import torch

from lsurf.errors import DataError

if TYPE_CHECKING:
    from lsurf.config import DataConfig
from lsurf.data.layouts import (
    CHANNELS,
    SIDE,
    SPLITS,
    VALUES_PER_IMAGE,
    Channels,
    CifarLayout,
    layout_of,
)

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2 has no numpy._core: the same names from numpy.core
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]


@dataclass(frozen=True)
class Split:
    """One dataset split, loaded once per process and reused for every evaluation."""

    images: torch.Tensor  # (N, 3, 32, 32) float32, normalized per channel, contiguous
    labels: torch.Tensor  # (N,) int64 class indices in [0, number of classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_configured(data: DataConfig, split: str) -> Split:
    """`load_split` with the settings of a config's data section (cifar10 or cifar100)."""
    if data.root is None:
        raise DataError(f"data.root is not set; point it at the folder holding {data.dataset}")
    return load_split(
        data.root,
        split,
        data.mean,
        data.std,
        data.subset,
        data.subset_seed,
        data.download,
        dataset=data.dataset,
        reference_split=data.reference_split,
    )


def load_split(
    root: Path,
    split: str,
    mean: Channels,
    std: Channels,
    subset: int | None = None,
    subset_seed: int = 0,
    download: bool = False,
    dataset: str = "cifar10",
    reference_split: int | None = None,
) -> Split:
    """Read one split of `dataset` from its folder under ``root`` into one normalized tensor.

    ``dataset`` is "cifar10" (``root/cifar-10-batches-py``) or "cifar100"
    (``root/cifar-100-python``, its 100 fine labels). ``subset`` keeps that many examples,
    chosen by a seeded permutation and kept in file order; ``reference_split`` chooses the
    reference's 1/k of the train split instead (`selected_indices`). ``download`` fetches the real
    archive through torchvision when the files are absent.
    """
    layout = layout_of(dataset)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    _check_channels("mean", mean, positive=False)
    _check_channels("std", std, positive=True)
    root = Path(root)
    folder = root / layout.folder
    names = layout.split_files[split]
    missing = _first_missing(folder, names)
    if missing is not None and download:
        failure = _download(root, split, layout)
        missing = _first_missing(folder, names)
        if missing is not None:
            raise DataError(_not_found_message(root, missing, failure, layout))
    if missing is not None:
        raise DataError(_not_found_message(root, missing, None, layout))

    batches = [_read_batch(folder / name, layout) for name in names]
    pixels = np.concatenate([data for data, _ in batches])  # (N, 3072) uint8
    labels = np.concatenate([batch_labels for _, batch_labels in batches])  # (N,) int64
    chosen = selected_indices(len(labels), split, subset, subset_seed, reference_split)
    if chosen is not None:
        # Select before converting to float: a 1k subset of train never allocates 600 MB.
        pixels, labels = pixels[chosen.numpy()], labels[chosen.numpy()]
    return Split(images=_normalize(pixels, mean, std), labels=torch.from_numpy(labels))


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles from Python 3 store bytes this way."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes stored with encoding {encoding!r}, not latin1")
    return text.encode("latin1")


# Everything a CIFAR batch needs: the real files (Python 2, numpy 1) reference the
# numpy.core names; files written by numpy 2 reference numpy._core and _codecs.encode.
_ALLOWED_GLOBALS: Final[dict[tuple[str, str], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,  # numpy integers, if a tool re-pickled labels
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed for numpy arrays.

    A pickle runs code only through the callables it names; refusing every other name makes
    loading an untrusted file safe (no os.system, no eval, no arbitrary imports).
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"it references {module}.{name}, which CIFAR data never contains"
            )
        return allowed


def _unpickle(stream: BinaryIO) -> Any:
    # latin1 maps Python 2 byte strings (keys, numpy's raw buffers) one to one onto str.
    return _ArrayOnlyUnpickler(stream, encoding="latin1").load()


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One data file as (pixels (n, 3072) uint8, labels (n,) int64), validated."""
    replace_hint = f"replace it with the file from {layout.archive}"
    try:
        with path.open("rb") as stream:
            content = _unpickle(stream)
    except Exception as error:  # noqa: BLE001 - a damaged pickle can raise almost any type
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise DataError(
            f"{path} is not a readable {layout.title} data file ({reason}); {replace_hint}"
        ) from error

    if not isinstance(content, dict):
        raise DataError(
            f"{path} holds a {type(content).__name__}, not a {layout.title} data dict; "
            f"{replace_hint}"
        )
    # Loaded with encoding='bytes' and pickled again, a file has bytes keys: accept both.
    entries = {
        (key.decode("latin1") if isinstance(key, bytes) else key): value
        for key, value in content.items()
    }
    label_key = layout.label_key  # "labels" in CIFAR-10, "fine_labels" in CIFAR-100
    for key in ("data", label_key):
        if key not in entries:
            raise DataError(f"{path} has no {key!r} entry; {replace_hint}")

    pixels = entries["data"]
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != VALUES_PER_IMAGE
    ):
        found = (
            f"a {pixels.dtype} array of shape {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else f"a {type(pixels).__name__}"
        )
        raise DataError(
            f"{path}: 'data' is {found}, expected uint8 of shape (N, 3072); {replace_hint}"
        )

    raw_labels = entries[label_key]
    try:
        labels = np.asarray(raw_labels) if isinstance(raw_labels, list | np.ndarray) else None
    except ValueError:  # a ragged nested list
        labels = None
    if labels is not None and labels.size == 0:
        labels = labels.astype(np.int64)  # np.asarray([]) is float64
    if (
        labels is None
        or labels.ndim != 1
        or labels.dtype.kind not in "iu"
        or len(labels) != len(pixels)
    ):
        raise DataError(
            f"{path}: {label_key!r} is not a list of {len(pixels)} integers, one per image; "
            f"{replace_hint}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{path}: {label_key!r} range over {labels.min()}..{labels.max()}, expected "
            f"0..{layout.num_classes - 1} for {layout.title}; {replace_hint}"
        )
    return pixels, labels.astype(np.int64)


def _normalize(pixels: np.ndarray, mean: Channels, std: Channels) -> torch.Tensor:
    """(N, 3072) uint8 -> (N, 3, 32, 32) float32, ((x / 255) - mean) / std per channel.

    The same float32 operations, in the same order, as torchvision's ToTensor followed by
    Normalize, so a checkpoint sees exactly the inputs it was evaluated on by the reference.
    """
    # Each row is the R plane, then G, then B, each 32x32 row-major: channel-first already.
    images = torch.from_numpy(pixels).view(-1, CHANNELS, SIDE, SIDE).to(torch.float32)
    # One allocation above; everything after works in place (the train split is 600 MB).
    images.div_(255)
    images.sub_(torch.tensor(mean, dtype=torch.float32).view(1, CHANNELS, 1, 1))
    images.div_(torch.tensor(std, dtype=torch.float32).view(1, CHANNELS, 1, 1))
    return images


def selected_indices(
    total: int,
    split: str,
    subset: int | None,
    subset_seed: int = 0,
    reference_split: int | None = None,
) -> torch.Tensor | None:
    """Which examples of a split of `total` a sweep evaluates, sorted (None: all of them).

    `subset`: that many, by lsurf's seeded rule (`subset_indices`), in every split.
    `reference_split` k: the reference's --data_split, in the train split only: the
    len // k indices that `np.random.seed(0); np.random.choice(len, len // k, replace=False)`
    picks (its own RNG state, as the reference restores the global one afterwards), sorted
    (the reference visits them in a shuffled order; the mean over the same examples only
    differs in rounding).
    """
    if reference_split is not None and reference_split > 1 and split == "train":
        count = total // reference_split
        if count < 1:
            raise DataError(
                f"data.reference_split={reference_split} leaves no example of the {split} "
                f"split's {total}; choose at most {total}"
            )
        picked = np.random.RandomState(0).choice(np.arange(total), count, replace=False)
        return torch.from_numpy(np.sort(picked))
    if subset is not None:
        return subset_indices(total, subset, subset_seed, split)
    return None


def configured_indices(data: DataConfig, total: int, split: str) -> torch.Tensor | None:
    """`selected_indices` with a config's data section."""
    return selected_indices(total, split, data.subset, data.subset_seed, data.reference_split)


def subset_indices(total: int, subset: int, seed: int, split: str) -> torch.Tensor:
    """`subset` distinct indices of `total`, seeded, sorted so the subset keeps file order."""
    if isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= total:
        raise DataError(
            f"subset={subset!r} is not possible: the {split} split has {total} examples; "
            f"choose a subset between 1 and {total}, or none for the whole split"
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(total, generator=generator)[:subset]).values


def _check_channels(name: str, values: Channels, positive: bool) -> None:
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != CHANNELS or (positive and min(numbers) <= 0):
        kind = "positive numbers" if positive else "numbers"
        raise DataError(f"{name} must be three {kind}, one per RGB channel, got {values!r}")


def _first_missing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if not (folder / name).is_file():
            return folder / name
    return None


def _not_found_message(
    root: Path, missing: Path, download_failure: str | None, layout: CifarLayout
) -> str:
    failure = f" and its download failed ({download_failure})" if download_failure else ""
    # The CIFAR-10 command stays the short one it has always been: --dataset is its default.
    choice = "" if layout.name == "cifar10" else f"--dataset {layout.name} "
    return (
        f"{layout.title} not found{failure}: expected {missing} (the python version of "
        f"{layout.title}); download {layout.archive} and extract it into {root}, set "
        "data.download: true where there is a network, or run "
        f"`lsurf data synth {choice}--out {root}` for a synthetic stand-in"
    )


def _download(root: Path, split: str, layout: CifarLayout) -> str | None:
    """Fetch and extract the real archive into root; the reason it failed, or None."""
    import torchvision  # only here: importing it costs a second that loading never needs

    try:
        # torchvision checks the archive's and every file's MD5 before it loads them.
        reader = getattr(torchvision.datasets, layout.torchvision_class)
        reader(str(root), train=split == "train", download=True)
    except Exception as error:  # noqa: BLE001 - network, HTTP, checksum and tar errors alike
        return " ".join(f"{type(error).__name__}: {error}".split())[:200]
    return None
