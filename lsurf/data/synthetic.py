"""Synthetic stand-ins for CIFAR-10 and CIFAR-100, written in exactly the real file formats.

This module owns the synthetic datasets, for machines (CI, air-gapped clusters) that cannot
download the real ones:

- generating a learnable 10- or 100-class problem: each class a smooth random colour texture,
  each image that texture at a random offset with random contrast, brightness and noise;
- writing it as the python version of the dataset, ``OUT/cifar-10-batches-py/``
  (``data_batch_1`` to ``data_batch_5``, ``test_batch``, ``batches.meta``) or
  ``OUT/cifar-100-python/`` (``train``, ``test``, ``meta``; fine and coarse labels), with the
  real files' keys, types and pickle protocol, plus a checksum file that marks the folder as
  synthetic and so safe to overwrite.

The file formats themselves (folder and file names, label keys, image shape, class names) are
`lsurf.data.layouts`' layouts, the ones `lsurf.data.cifar` reads; both datasets are one code
path here.

Inputs: an output folder, the train and test sizes, a seed, the dataset name. Outputs: the
root folder of the freshly written dataset, to pass to `lsurf.data.cifar.load_split`; the same seed
writes the same bytes.
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np

from lsurf.data.layouts import (
    CHANNELS,
    SIDE,
    SYNTHETIC_MARKER,
    VALUES_PER_IMAGE,
    CifarLayout,
    layout_of,
)
from lsurf.errors import DataError

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


def write_synthetic(
    out: Path,
    train_size: int = 10000,
    test_size: int = 2000,
    seed: int = 0,
    dataset: str = "cifar10",
) -> Path:
    """Write a learnable synthetic look-alike of `dataset` into its folder under ``out``.

    ``dataset`` is "cifar10" (``out/cifar-10-batches-py``) or "cifar100"
    (``out/cifar-100-python``). Each class is a smooth random colour texture; each image is
    its class texture at a random circular offset, maybe mirrored, with random contrast,
    brightness and pixel noise. On CIFAR-10, nearest class mean on raw pixels gets about 40 %
    of the test split right, a small ResNet about 80 % after two epochs. The same seed writes
    the same bytes. Returns ``out``, the root to pass to `load_split`.
    """
    layout = layout_of(dataset)
    for name, size in (("train_size", train_size), ("test_size", test_size)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DataError(f"{name} must be a positive whole number, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative whole number, got {seed!r}")
    out = Path(out)
    folder = out / layout.folder
    if folder.exists() and not _is_replaceable(folder):
        raise DataError(
            f"refusing to overwrite {folder}: it has no {SYNTHETIC_MARKER}, so it may be real "
            f"{layout.title}; choose another output folder or remove this one yourself"
        )

    # Separate streams, so the test images do not change when train_size does.
    templates, colours = _synthetic_classes(layout.num_classes, np.random.default_rng([seed, 0]))
    train_pixels, train_labels = _synthetic_images(
        train_size, templates, colours, np.random.default_rng([seed, 1])
    )
    test_pixels, test_labels = _synthetic_images(
        test_size, templates, colours, np.random.default_rng([seed, 2])
    )

    contents: dict[str, dict[str, Any]] = {layout.meta_file: _meta_content(layout, train_size)}
    # np.array_split spreads the remainder, so every example lands in exactly one file.
    parts = len(layout.train_files)
    train_parts = zip(
        layout.train_files,
        np.array_split(train_pixels, parts),
        np.array_split(train_labels, parts),
        np.array_split(np.arange(train_size), parts),
        strict=True,
    )
    for number, (name, pixels, labels, indices) in enumerate(train_parts, start=1):
        label = f"training batch {number} of {parts}"
        contents[name] = _batch_content(layout, label, pixels, labels, indices)
    (test_file,) = layout.test_files
    contents[test_file] = _batch_content(
        layout, "testing batch 1 of 1", test_pixels, test_labels, np.arange(test_size)
    )

    out.mkdir(parents=True, exist_ok=True)
    # Build the folder beside its final place and swap it in, so an interrupted run never
    # leaves a half-written dataset under the real name.
    staging = Path(tempfile.mkdtemp(prefix=f".{layout.folder}.new-", dir=out))
    try:
        checksums = []
        for name, content in contents.items():
            # Protocol 2 is what Python 2 could read, as the real files are.
            encoded = pickle.dumps(content, protocol=2)
            (staging / name).write_bytes(encoded)
            digest = hashlib.md5(encoded, usedforsecurity=False).hexdigest()
            checksums.append(f"{digest}  {name}\n")  # md5sum's format: `md5sum -c` checks it
        (staging / SYNTHETIC_MARKER).write_text("".join(checksums))
        _swap_in(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _synthetic_classes(num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per class: a periodic smooth texture (classes, 3, 32, 32) float32 of unit standard
    deviation per channel, and a mean colour (classes, 3) float32."""
    # Random Fourier coefficients on the lowest frequencies only; the inverse real FFT makes
    # the texture smooth and periodic, so circular shifts leave no seam.
    frequencies = _TEXTURE_MAX_FREQUENCY + 1
    rows = np.r_[0:frequencies, SIDE - _TEXTURE_MAX_FREQUENCY : SIDE]  # +-k along y
    shape = (num_classes, CHANNELS, len(rows), frequencies)
    spectrum = np.zeros((num_classes, CHANNELS, SIDE, SIDE // 2 + 1), np.complex128)
    spectrum[:, :, rows[:, None], np.arange(frequencies)[None, :]] = rng.standard_normal(
        shape
    ) + 1j * rng.standard_normal(shape)
    spectrum[:, :, 0, 0] = 0  # the mean colour is set separately
    textures = np.fft.irfft2(spectrum, s=(SIDE, SIDE))
    textures /= textures.std(axis=(-2, -1), keepdims=True)
    colours = 128.0 + _COLOUR_SPREAD * rng.standard_normal((num_classes, CHANNELS))
    return textures.astype(np.float32), colours.astype(np.float32)


def _synthetic_images(
    count: int, textures: np.ndarray, colours: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` images as (count, 3072) uint8 in CIFAR's plane order, and their labels."""
    labels = rng.permutation(np.arange(count) % len(textures))  # balanced classes
    row_shift = rng.integers(0, SIDE, count)
    column_shift = rng.integers(0, SIDE, count)
    mirrored = rng.random(count) < 0.5
    contrast = rng.uniform(*_CONTRAST_RANGE, count).astype(np.float32)
    brightness = (_BRIGHTNESS_SPREAD * rng.standard_normal(count)).astype(np.float32)

    positions = np.arange(SIDE)
    rows = (positions[None, :] + row_shift[:, None]) % SIDE  # (count, 32)
    columns = (positions[None, :] + column_shift[:, None]) % SIDE
    columns = np.where(mirrored[:, None], columns[:, ::-1], columns)
    channels = np.arange(CHANNELS)[None, :, None, None]

    pixels = np.empty((count, CHANNELS, SIDE, SIDE), np.uint8)
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
    return pixels.reshape(count, VALUES_PER_IMAGE), labels


def _meta_content(layout: CifarLayout, train_size: int) -> dict[str, Any]:
    """The meta file's dict, with the real one's keys."""
    if layout.coarse_label_names:  # CIFAR-100's holds the two lists of names only
        return {
            layout.label_names_key: list(layout.label_names),
            "coarse_label_names": list(layout.coarse_label_names),
        }
    return {
        "num_cases_per_batch": -(-train_size // len(layout.train_files)),
        layout.label_names_key: list(layout.label_names),
        "num_vis": VALUES_PER_IMAGE,
    }


def _batch_content(
    layout: CifarLayout,
    batch_label: str,
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
) -> dict[str, Any]:
    """One data file's dict with the real files' keys and types."""
    content: dict[str, Any] = {
        "batch_label": batch_label,
        layout.label_key: [int(label) for label in labels],
    }
    if layout.coarse_of_fine:  # CIFAR-100: each image's superclass too, the real one's
        content["coarse_labels"] = [layout.coarse_of_fine[label] for label in labels]
    content["data"] = np.ascontiguousarray(pixels)
    content["filenames"] = [
        f"synthetic_{layout.label_names[label]}_{index:06d}.png"
        for label, index in zip(labels, indices, strict=True)
    ]
    return content


def _is_replaceable(folder: Path) -> bool:
    """Whether `folder` is ours to overwrite: a synthetic dataset, or an empty folder."""
    if not folder.is_dir():
        return False
    return (folder / SYNTHETIC_MARKER).is_file() or not any(folder.iterdir())


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the finished `staging` folder at `folder`, replacing a previous synthetic one."""
    if folder.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        folder.rename(retired / folder.name)
        staging.rename(folder)
        shutil.rmtree(retired)
    else:
        staging.rename(folder)
