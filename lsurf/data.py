"""CIFAR-10 splits as normalized tensors, and a synthetic stand-in written in the same format.

This module owns everything about the dataset on disk:

- reading the python version of CIFAR-10 (``ROOT/cifar-10-batches-py/``: ``data_batch_1`` to
  ``data_batch_5``, ``test_batch``) through an unpickler that can build numpy arrays and
  nothing else, because the data folder is user input and a pickle can otherwise run code;
- turning a split into one contiguous, normalized float32 tensor, once per process, so that
  the thousands of evaluations of a sweep never touch a loader or a per-image transform;
- writing a learnable synthetic 10-class dataset in exactly that file format, for machines
  (CI, air-gapped clusters) that cannot download the real one.

Inputs: a data root folder, a split name, the per-channel mean/std the checkpoint was trained
with, an optional subset size and seed. Outputs: a `Split` of CPU tensors (the caller moves
it to its device once), or the root folder of a freshly written synthetic dataset.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import torch

from lsurf.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct, scalar

Channels = tuple[float, float, float]

# tomgoldstein/loss-landscape, cifar10/dataloader.py: transforms.Normalize with the CIFAR-10
# channel statistics written in grey levels and divided by 255; written the same way here so
# the float32 values match the reference bit for bit.
REFERENCE_MEAN: Final[Channels] = (125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0)
REFERENCE_STD: Final[Channels] = (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0)
# akamaster/pytorch_resnet_cifar10, trainer.py: its pretrained ResNets were trained with the
# ImageNet statistics, not CIFAR-10's.
AKAMASTER_MEAN: Final[Channels] = (0.485, 0.456, 0.406)
AKAMASTER_STD: Final[Channels] = (0.229, 0.224, 0.225)

SPLITS: Final = ("train", "test")

_FOLDER: Final = "cifar-10-batches-py"
_TRAIN_FILES: Final = tuple(f"data_batch_{number}" for number in range(1, 6))
_SPLIT_FILES: Final[dict[str, tuple[str, ...]]] = {"train": _TRAIN_FILES, "test": ("test_batch",)}
_META_FILE: Final = "batches.meta"
# Its presence marks a folder as ours to overwrite; torchvision's CIFAR10 class can also be
# pointed at the synthetic files with these checksums in place of the real ones.
_SYNTHETIC_MARKER: Final = "SYNTHETIC_MD5SUMS"
_SIDE: Final = 32
_CHANNELS: Final = 3
_VALUES_PER_IMAGE: Final = _CHANNELS * _SIDE * _SIDE  # 3072: R plane, G plane, B plane
_NUM_CLASSES: Final = 10
_LABEL_NAMES: Final = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_REPLACE_HINT: Final = "replace it with the file from cifar-10-python.tar.gz"


@dataclass(frozen=True)
class Split:
    """One CIFAR-10 split, loaded once per process and reused for every evaluation."""

    images: torch.Tensor  # (N, 3, 32, 32) float32, normalized per channel, contiguous
    labels: torch.Tensor  # (N,) int64 class indices in [0, 10)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(
    root: Path,
    split: str,
    mean: Channels,
    std: Channels,
    subset: int | None = None,
    subset_seed: int = 0,
    download: bool = False,
) -> Split:
    """Read one split from ``root/cifar-10-batches-py`` and normalize it into one tensor.

    ``subset`` keeps that many examples, chosen by a seeded permutation and kept in file
    order. ``download`` fetches the real archive through torchvision when the files are absent.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    _check_channels("mean", mean, positive=False)
    _check_channels("std", std, positive=True)
    root = Path(root)
    folder = root / _FOLDER
    missing = _first_missing(folder, _SPLIT_FILES[split])
    if missing is not None and download:
        failure = _download(root, split)
        missing = _first_missing(folder, _SPLIT_FILES[split])
        if missing is not None:
            raise DataError(_not_found_message(root, missing, failure))
    if missing is not None:
        raise DataError(_not_found_message(root, missing, None))

    batches = [_read_batch(folder / name) for name in _SPLIT_FILES[split]]
    pixels = np.concatenate([data for data, _ in batches])  # (N, 3072) uint8
    labels = np.concatenate([batch_labels for _, batch_labels in batches])  # (N,) int64
    if subset is not None:
        # Select before converting to float: a 1k subset of train never allocates 600 MB.
        chosen = _subset_indices(len(labels), subset, subset_seed, split).numpy()
        pixels, labels = pixels[chosen], labels[chosen]
    return Split(images=_normalize(pixels, mean, std), labels=torch.from_numpy(labels))


def write_synthetic(
    out: Path, train_size: int = 10000, test_size: int = 2000, seed: int = 0
) -> Path:
    """Write a learnable synthetic CIFAR-10 look-alike into ``out/cifar-10-batches-py``.

    Each class is a smooth random colour texture; each image is its class texture at a random
    circular offset, maybe mirrored, with random contrast, brightness and pixel noise. Nearest
    class mean on raw pixels gets about 40 % of the test split right, a small ResNet about 80 %
    after two epochs. The same seed writes the same bytes. Returns ``out``, the root to pass
    to `load_split`.
    """
    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DataError(f"{name} must be a positive whole number, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative whole number, got {seed!r}")
    out = Path(out)
    folder = out / _FOLDER
    if folder.exists() and not _is_replaceable(folder):
        raise DataError(
            f"refusing to overwrite {folder}: it has no {_SYNTHETIC_MARKER}, so it may be real "
            "CIFAR-10; choose another output folder or remove this one yourself"
        )

    # Separate streams, so the test images do not change when train_size does.
    templates, colours = _synthetic_classes(np.random.default_rng([seed, 0]))
    train_pixels, train_labels = _synthetic_images(
        train_size, templates, colours, np.random.default_rng([seed, 1])
    )
    test_pixels, test_labels = _synthetic_images(
        test_size, templates, colours, np.random.default_rng([seed, 2])
    )

    contents: dict[str, dict[str, Any]] = {
        _META_FILE: {
            "num_cases_per_batch": -(-train_size // len(_TRAIN_FILES)),
            "label_names": list(_LABEL_NAMES),
            "num_vis": _VALUES_PER_IMAGE,
        }
    }
    # np.array_split spreads the remainder, so every example lands in exactly one batch.
    train_parts = zip(
        np.array_split(train_pixels, len(_TRAIN_FILES)),
        np.array_split(train_labels, len(_TRAIN_FILES)),
        np.array_split(np.arange(train_size), len(_TRAIN_FILES)),
        strict=True,
    )
    for number, (pixels, labels, indices) in enumerate(train_parts, start=1):
        label = f"training batch {number} of {len(_TRAIN_FILES)}"
        contents[f"data_batch_{number}"] = _batch_content(label, pixels, labels, indices)
    contents["test_batch"] = _batch_content(
        "testing batch 1 of 1", test_pixels, test_labels, np.arange(test_size)
    )

    out.mkdir(parents=True, exist_ok=True)
    # Build the folder beside its final place and swap it in, so an interrupted run never
    # leaves a half-written dataset under the real name.
    staging = Path(tempfile.mkdtemp(prefix=f".{_FOLDER}.new-", dir=out))
    try:
        checksums = []
        for name, content in contents.items():
            # Protocol 2 is what Python 2 could read, as the real files are.
            encoded = pickle.dumps(content, protocol=2)
            (staging / name).write_bytes(encoded)
            digest = hashlib.md5(encoded, usedforsecurity=False).hexdigest()
            checksums.append(f"{digest}  {name}\n")  # md5sum's format: `md5sum -c` checks it
        (staging / _SYNTHETIC_MARKER).write_text("".join(checksums))
        _swap_in(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


# --- reading -------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles from Python 3 store bytes this way."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"bytes stored with encoding {encoding!r}, not latin1")
    return text.encode("latin1")


# Everything a CIFAR-10 batch needs: the real files (Python 2, numpy 1) reference the
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
                f"it references {module}.{name}, which CIFAR-10 data never contains"
            )
        return allowed


def _unpickle(stream: BinaryIO) -> Any:
    # latin1 maps Python 2 byte strings (keys, numpy's raw buffers) one to one onto str.
    return _ArrayOnlyUnpickler(stream, encoding="latin1").load()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (pixels (n, 3072) uint8, labels (n,) int64), validated."""
    try:
        with path.open("rb") as stream:
            content = _unpickle(stream)
    except Exception as error:  # noqa: BLE001 - a damaged pickle can raise almost any type
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch ({reason}); {_REPLACE_HINT}"
        ) from error

    if not isinstance(content, dict):
        raise DataError(
            f"{path} holds a {type(content).__name__}, not a CIFAR-10 batch dict; {_REPLACE_HINT}"
        )
    # Loaded with encoding='bytes' and pickled again, a file has bytes keys: accept both.
    entries = {
        (key.decode("latin1") if isinstance(key, bytes) else key): value
        for key, value in content.items()
    }
    for key in ("data", "labels"):
        if key not in entries:
            raise DataError(f"{path} has no {key!r} entry; {_REPLACE_HINT}")

    pixels = entries["data"]
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 2
        or pixels.shape[1] != _VALUES_PER_IMAGE
    ):
        found = (
            f"a {pixels.dtype} array of shape {pixels.shape}"
            if isinstance(pixels, np.ndarray)
            else f"a {type(pixels).__name__}"
        )
        raise DataError(
            f"{path}: 'data' is {found}, expected uint8 of shape (N, 3072); {_REPLACE_HINT}"
        )

    raw_labels = entries["labels"]
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
            f"{path}: 'labels' is not a list of {len(pixels)} integers, one per image; "
            f"{_REPLACE_HINT}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DataError(
            f"{path}: labels range over {labels.min()}..{labels.max()}, expected 0..9; "
            f"{_REPLACE_HINT}"
        )
    return pixels, labels.astype(np.int64)


def _normalize(pixels: np.ndarray, mean: Channels, std: Channels) -> torch.Tensor:
    """(N, 3072) uint8 -> (N, 3, 32, 32) float32, ((x / 255) - mean) / std per channel.

    The same float32 operations, in the same order, as torchvision's ToTensor followed by
    Normalize, so a checkpoint sees exactly the inputs it was evaluated on by the reference.
    """
    # Each row is the R plane, then G, then B, each 32x32 row-major: channel-first already.
    images = torch.from_numpy(pixels).view(-1, _CHANNELS, _SIDE, _SIDE).to(torch.float32)
    # One allocation above; everything after works in place (the train split is 600 MB).
    images.div_(255)
    images.sub_(torch.tensor(mean, dtype=torch.float32).view(1, _CHANNELS, 1, 1))
    images.div_(torch.tensor(std, dtype=torch.float32).view(1, _CHANNELS, 1, 1))
    return images


def _subset_indices(total: int, subset: int, seed: int, split: str) -> torch.Tensor:
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
    if len(numbers) != _CHANNELS or (positive and min(numbers) <= 0):
        kind = "positive numbers" if positive else "numbers"
        raise DataError(f"{name} must be three {kind}, one per RGB channel, got {values!r}")


def _first_missing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if not (folder / name).is_file():
            return folder / name
    return None


def _not_found_message(root: Path, missing: Path, download_failure: str | None) -> str:
    failure = f" and its download failed ({download_failure})" if download_failure else ""
    return (
        f"CIFAR-10 not found{failure}: expected {missing} (the python version of CIFAR-10); "
        f"download cifar-10-python.tar.gz and extract it into {root}, set data.download: true "
        f"where there is a network, or run `lsurf data synth --out {root}` for a synthetic "
        "stand-in"
    )


def _download(root: Path, split: str) -> str | None:
    """Fetch and extract the real archive into root; the reason it failed, or None."""
    import torchvision  # only here: importing it costs a second that loading never needs

    try:
        # torchvision checks the archive's and every file's MD5 before it loads them.
        torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
    except Exception as error:  # noqa: BLE001 - network, HTTP, checksum and tar errors alike
        return " ".join(f"{type(error).__name__}: {error}".split())[:200]
    return None


# --- the synthetic stand-in -----------------------------------------------------------------

# Difficulty knobs, in grey levels. Tuned so the classes are learnable but not separable at a
# glance: the textures differ in their spatial frequencies and colours, which a convnet picks
# up; the random offsets smear them out of a pixel-wise class mean, leaving mostly colour.
_TEXTURE_MAX_FREQUENCY: Final = 3  # cycles per image: smooth, CIFAR-like blobs, not noise
_TEXTURE_AMPLITUDE: Final = 25.0
_COLOUR_SPREAD: Final = 8.0  # class mean colours overlap, so colour alone is a weak cue
_CONTRAST_RANGE: Final = (0.5, 1.5)
_BRIGHTNESS_SPREAD: Final = 20.0
_NOISE_LEVEL: Final = 50.0
_CHUNK: Final = 2048  # images generated at a time, to bound memory for large splits


def _synthetic_classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per class: a periodic smooth texture (10, 3, 32, 32) float32 of unit standard deviation
    per channel, and a mean colour (10, 3) float32."""
    # Random Fourier coefficients on the lowest frequencies only; the inverse real FFT makes
    # the texture smooth and periodic, so circular shifts leave no seam.
    frequencies = _TEXTURE_MAX_FREQUENCY + 1
    rows = np.r_[0:frequencies, _SIDE - _TEXTURE_MAX_FREQUENCY : _SIDE]  # +-k along y
    shape = (_NUM_CLASSES, _CHANNELS, len(rows), frequencies)
    spectrum = np.zeros((_NUM_CLASSES, _CHANNELS, _SIDE, _SIDE // 2 + 1), np.complex128)
    spectrum[:, :, rows[:, None], np.arange(frequencies)[None, :]] = rng.standard_normal(
        shape
    ) + 1j * rng.standard_normal(shape)
    spectrum[:, :, 0, 0] = 0  # the mean colour is set separately
    textures = np.fft.irfft2(spectrum, s=(_SIDE, _SIDE))
    textures /= textures.std(axis=(-2, -1), keepdims=True)
    colours = 128.0 + _COLOUR_SPREAD * rng.standard_normal((_NUM_CLASSES, _CHANNELS))
    return textures.astype(np.float32), colours.astype(np.float32)


def _synthetic_images(
    count: int, textures: np.ndarray, colours: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` images as (count, 3072) uint8 in CIFAR's plane order, and their labels."""
    labels = rng.permutation(np.arange(count) % _NUM_CLASSES)  # balanced classes
    row_shift = rng.integers(0, _SIDE, count)
    column_shift = rng.integers(0, _SIDE, count)
    mirrored = rng.random(count) < 0.5
    contrast = rng.uniform(*_CONTRAST_RANGE, count).astype(np.float32)
    brightness = (_BRIGHTNESS_SPREAD * rng.standard_normal(count)).astype(np.float32)

    positions = np.arange(_SIDE)
    rows = (positions[None, :] + row_shift[:, None]) % _SIDE  # (count, 32)
    columns = (positions[None, :] + column_shift[:, None]) % _SIDE
    columns = np.where(mirrored[:, None], columns[:, ::-1], columns)
    channels = np.arange(_CHANNELS)[None, :, None, None]

    pixels = np.empty((count, _CHANNELS, _SIDE, _SIDE), np.uint8)
    for start in range(0, count, _CHUNK):
        part = slice(start, min(start + _CHUNK, count))
        # Gather each image's shifted (and maybe mirrored) texture: (n, 3, 32, 32).
        image = textures[
            labels[part, None, None, None],
            channels,
            rows[part, None, :, None],
            columns[part, None, None, :],
        ]
        image *= (_TEXTURE_AMPLITUDE * contrast[part])[:, None, None, None]
        image += colours[labels[part]][:, :, None, None] + brightness[part, None, None, None]
        image += _NOISE_LEVEL * rng.standard_normal(image.shape, dtype=np.float32)
        pixels[part] = np.clip(np.rint(image), 0, 255)
    return pixels.reshape(count, _VALUES_PER_IMAGE), labels


def _batch_content(
    batch_label: str, pixels: np.ndarray, labels: np.ndarray, indices: np.ndarray
) -> dict[str, Any]:
    """One batch dict with the real files' keys and types."""
    return {
        "batch_label": batch_label,
        "labels": [int(label) for label in labels],
        "data": np.ascontiguousarray(pixels),
        "filenames": [
            f"synthetic_{_LABEL_NAMES[label]}_{index:06d}.png"
            for label, index in zip(labels, indices, strict=True)
        ],
    }


def _is_replaceable(folder: Path) -> bool:
    """Whether `folder` is ours to overwrite: a synthetic dataset, or an empty folder."""
    if not folder.is_dir():
        return False
    return (folder / _SYNTHETIC_MARKER).is_file() or not any(folder.iterdir())


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the finished `staging` folder at `folder`, replacing a previous synthetic one."""
    if folder.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{_FOLDER}.old-", dir=folder.parent))
        folder.rename(retired / _FOLDER)
        staging.rename(folder)
        shutil.rmtree(retired)
    else:
        staging.rename(folder)
