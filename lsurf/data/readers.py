"""Datasets read example by example, every example checked: a user's `Dataset` or tensor pair
(`data.dataset: package.module:callable`, or an object handed to the Python API) and
torchvision ImageFolder trees.

Owns what `lsurf.data.splits` must not take on trust: that a callable returned a map-style
dataset or a pair of tensors, that every example is an (input, target) pair shaped like the
first, and the ImageFolder evaluation transform (documented in lsurf.data.splits). A bad example
met inside a DataLoader worker travels back as a `Rejected` marker, so the user sees one
line from the main process rather than a worker's traceback.

Inputs: what a dataset callable returned, or an ImageFolder root and split. Outputs:
`Examples` (a checked map-style dataset that knows its example shapes and size) or a checked
tensor pair; mistakes raise a one-line `DataError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch.utils.data import Dataset, default_collate

from lsurf.config import DataConfig
from lsurf.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs (B, ...), targets (B, ...))

# ImageNet's evaluation habit: resize to 1/0.875 of the crop (256 for 224), then centre crop.
CROP_FRACTION = 0.875

# --- examples, checked ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Rejected:
    """An example that failed its check, passed along instead of raised.

    A DataLoader worker's exception reaches the main process wrapped in a multi-line
    traceback; this travels like a batch and becomes a one-line DataError there.
    """

    message: str


class Examples(Dataset):
    """A map-style dataset's (input, target) pairs, checked one by one against the first.

    Every example must be a pair of a tensor (the same shape and dtype as the first
    example's) and a target tensor or int (likewise), so that any batch of them stacks.
    ``unreadable`` names the exceptions that mean an example's file is damaged (for image
    folders), reported as such rather than as a crash.
    """

    def __init__(
        self,
        dataset: Any,
        label: str,
        expected: str,
        indices: list[int] | None = None,
        unreadable: tuple[type[Exception], ...] = (),
    ) -> None:
        self.dataset = dataset
        self.label = label  # names the dataset and split in messages
        self.expected = expected  # what the dataset should have been, for messages
        self.indices = list(range(len(dataset))) if indices is None else indices
        self.unreadable = unreadable
        if not self.indices:
            raise DataError(f"{label} has no examples; {expected}")
        probe = self._pair(self.indices[0])
        if isinstance(probe, _Rejected):
            raise DataError(probe.message)
        first_input, first_target = probe
        self.input_shape = tuple(first_input.shape)
        self.input_dtype = first_input.dtype
        self.target_shape = tuple(first_target.shape)
        self.target_dtype = first_target.dtype
        self.example_nbytes = first_input.nbytes + first_target.nbytes

    def restricted_to(self, positions: list[int]) -> Examples:
        """The examples at `positions` (of this view), in that order."""
        return Examples(
            self.dataset,
            self.label,
            self.expected,
            [self.indices[position] for position in positions],
            self.unreadable,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Batch | _Rejected:
        index = self.indices[position]
        pair = self._pair(index)
        if isinstance(pair, _Rejected):
            return pair
        inputs, target = pair
        found = (tuple(inputs.shape), inputs.dtype, tuple(target.shape), target.dtype)
        wanted = (self.input_shape, self.input_dtype, self.target_shape, self.target_dtype)
        if found != wanted:
            return _Rejected(
                f"{self.label}: example {index} is ({_describe_tensor(inputs)}, "
                f"{_describe_tensor(target)}) but example {self.indices[0]} is "
                f"({_describe_spec(wanted[0], wanted[1])}, {_describe_spec(wanted[2], wanted[3])});"
                " every example needs the same shapes and dtypes so that batches stack"
            )
        return pair

    def _pair(self, index: int) -> Batch | _Rejected:
        """Example `index` as (input tensor, target tensor), or why it is not one."""
        try:
            item = self.dataset[index]
        except self.unreadable as error:
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            return _Rejected(
                f"{self.label}: example {index} cannot be read ({reason}); replace or remove it"
            )
        if not isinstance(item, tuple | list) or len(item) != 2:
            return _Rejected(
                f"{self.label}: example {index} is {_describe(item)}, not an (input, target) "
                f"pair; {self.expected}"
            )
        inputs, target = item
        if not isinstance(inputs, torch.Tensor):
            return _Rejected(
                f"{self.label}: example {index} has an input of type {type(inputs).__name__}, "
                f"not a tensor; {self.expected}"
            )
        if isinstance(target, numbers.Integral) and not isinstance(target, bool):
            target = torch.tensor(int(target), dtype=torch.int64)
        if not isinstance(target, torch.Tensor):
            return _Rejected(
                f"{self.label}: example {index} has a target of type {type(target).__name__}, "
                f"not a tensor or an int; {self.expected}"
            )
        return inputs, target


def collate(items: list[Batch | _Rejected]) -> Batch | _Rejected:
    """Stack checked examples into one batch (in a worker: in shared memory)."""
    for item in items:
        if isinstance(item, _Rejected):
            return item
    inputs, targets = default_collate(items)
    return inputs, targets


def accepted(batch: Batch | _Rejected) -> Batch:
    if isinstance(batch, _Rejected):
        raise DataError(batch.message)
    return batch


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _describe_tensor(tensor: torch.Tensor) -> str:
    return _describe_spec(tuple(tensor.shape), tensor.dtype)


def _describe_spec(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    return f"{str(dtype).removeprefix('torch.')} {shape}"


# --- a callable's result -------------------------------------------------------------------


def _expected_result(dataset: str) -> str:
    return (
        f"{dataset}(split, **data.kwargs) must return a map-style Dataset of (input tensor, "
        "target tensor or int) pairs, or a pair of tensors (inputs, targets) with the same "
        "first dimension"
    )


def is_tensor_pair(result: object) -> TypeGuard[Sequence[torch.Tensor]]:
    return (
        isinstance(result, tuple | list)
        and len(result) == 2
        and all(isinstance(part, torch.Tensor) for part in result)
    )


def checked_tensors(dataset: str, split: str, result: Sequence[torch.Tensor]) -> Batch:
    inputs, targets = result
    if inputs.dim() == 0 or targets.dim() == 0 or len(inputs) != len(targets):
        raise DataError(
            f"data.dataset {dataset} returned tensors of shapes {tuple(inputs.shape)} and "
            f"{tuple(targets.shape)} for split {split!r}, which do not pair up; "
            f"{_expected_result(dataset)}"
        )
    if len(targets) == 0:
        raise DataError(
            f"data.dataset {dataset} returned no examples for split {split!r}; "
            f"{_expected_result(dataset)}"
        )
    return inputs, targets


def checked_dataset(dataset: str, split: str, result: object) -> Examples:
    label = f"data.dataset {dataset} (split {split!r})"
    indexable = hasattr(result, "__len__") and hasattr(result, "__getitem__")
    if not indexable or isinstance(result, str | bytes | Mapping | torch.Tensor):
        raise DataError(f"{label} returned {_describe(result)}; {_expected_result(dataset)}")
    return Examples(result, label, _expected_result(dataset))


# --- image folders -------------------------------------------------------------------------


def image_folder(data: DataConfig, split: str) -> tuple[Examples, int]:
    """ROOT/<split> as checked examples through the evaluation transform, and its class count."""
    from torchvision import datasets, transforms  # only here: importing it costs a second
    from torchvision.datasets.folder import find_classes

    if data.root is None:
        raise DataError("data.root is not set; point it at the folder holding train/ and test/")
    root = Path(data.root)
    folder = root / split
    layout = f"{root}/{split}/<class>/<image> (one subfolder per class)"
    if not folder.is_dir():
        raise DataError(
            f"imagefolder split {split!r} not found: {folder} is not a folder; expected {layout}"
        )
    transform = transforms.Compose(
        [
            transforms.Resize(
                round(data.image_size / CROP_FRACTION),
                interpolation=transforms.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            transforms.CenterCrop(data.image_size),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    try:
        images = datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as error:  # no class folders, or a class folder without images
        reason = " ".join(str(error).split())
        raise DataError(f"imagefolder {folder}: {reason}; expected {layout}") from None

    train = root / "train"
    if split != "train" and train.is_dir():
        try:
            train_classes, _ = find_classes(str(train))
        except FileNotFoundError:
            train_classes = images.classes  # train itself is broken; opening it says how
        if train_classes != images.classes:
            missing = sorted(set(train_classes) - set(images.classes))
            extra = sorted(set(images.classes) - set(train_classes))
            raise DataError(
                f"imagefolder {folder} has other classes than {train} (missing: "
                f"{', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}); a "
                "class's index is its place among the sorted folder names, so give both splits "
                "the same class folders"
            )
    label = f"imagefolder {folder}"
    expected = f"expected {layout}"
    return Examples(images, label, expected, unreadable=(OSError,)), len(images.classes)
