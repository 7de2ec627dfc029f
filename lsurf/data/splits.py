"""Every dataset a sweep can evaluate on, as splits that hand out (inputs, targets) batches.

This module owns turning `DataConfig` into one `SplitData` per split on one device:

- ``cifar10`` / ``cifar100``: the tensors of `lsurf.data.cifar.load_split`, unchanged, so a sweep
  evaluates bit for bit the values it always has;
- ``imagefolder``: torchvision's ``ImageFolder`` on ``ROOT/train`` and ``ROOT/test`` (the split
  name is the folder name, one subfolder per class, a class's index its position among the
  sorted folder names). Every image goes through one fixed evaluation transform: converted to
  RGB, its short side resized to ``round(image_size / 0.875)`` (bilinear, antialiased), centre
  cropped to ``image_size`` x ``image_size``, scaled to [0, 1] (``ToTensor``) and normalized with
  ``data.mean`` / ``data.std``: inputs (3, image_size, image_size) float32, targets int64.
  The test split must have exactly train's class folders, or the indices would mean other
  classes;
- ``tokens``: token-id sequences from ``ROOT/<split>.npy`` or ``.bin`` (lsurf.data.tokens),
  inputs the ids and targets the ids with padding marked, for the ``causal_lm`` loss;
- ``package.module:callable``: called as ``callable(split, **data.kwargs)``; it returns a
  map-style dataset (``__len__`` and ``__getitem__``) whose examples are (input, target) pairs
  (input: a tensor of any shape, the same for every example; target: a tensor or an int), or a
  pair of tensors (inputs, targets) with the same first dimension.

``data.subset`` keeps that many examples of every kind, chosen by the seeded rule of
`lsurf.data.cifar` (``torch.randperm`` under ``subset_seed``, the first ``subset``, sorted back into
the dataset's order).

A split whose tensors take at most ``data.cache_mb`` MiB (estimated from its first example) is
collated once into one inputs and one targets tensor on the device: a `CachedSplit`. A larger
one streams through one DataLoader kept for the whole sweep (fixed order, persistent workers,
pinned memory for CUDA): a `StreamedSplit`. Both cut the same batches with the same values, so
a model gives the same bits on either. 4-D floating inputs (images) are handed out in
channels_last layout when asked.

Early stopping (`evaluation.rel_error`) visits a split's examples in a seeded order instead:
`seeded_order(len(split), seed)`, torch.randperm under a CPU generator seeded with
`data.subset_seed`, the same permutation at every point, on every rank and every machine with
this torch. `batches(batch_size, order_seed)` cuts that order into batches of batch_size
(a cached split gathers each batch from its tensors; a streamed one reads through a loader
whose sampler is the permutation), so a point that stops after k batches has used the first
k·batch_size examples of the permutation.

A cached split on the CPU also travels as plain arrays (`pack`, `unpack`): how the workers of
an MPI node hold one copy of it between them (lsurf.run.worker), the same bytes in the same
layout as the split they would each have loaded.

Inputs: the data config, a split name, a device, whether images go channels_last.
Outputs: `SplitData` objects; user mistakes raise a one-line `DataError` (or `ConfigError`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lsurf.config import DataConfig, classes_of
from lsurf.data import tokens
from lsurf.data.cifar import configured_indices, load_configured
from lsurf.data.readers import (
    Batch,
    Examples,
    accepted,
    checked_dataset,
    checked_tensors,
    collate,
    image_folder,
    is_tensor_pair,
)
from lsurf.errors import DataError
from lsurf.imports import is_import_path, resolve

MIB = 2**20


class SplitData(ABC):
    """One split of one dataset on one device, iterated the same way at every grid point."""

    name: str  # 'train' or 'test'
    num_classes: int | None  # None when only the dataset's own code knows (import paths)
    nbytes: int  # the whole split's size as tensors (estimated for a streamed split)
    cached: bool  # True: one tensor pair on the device; False: streamed through a DataLoader

    @abstractmethod
    def __len__(self) -> int:
        """Examples in the split (after the subset)."""

    @abstractmethod
    def batches(self, batch_size: int, order_seed: int | None = None) -> Iterator[Batch]:
        """(inputs, targets) on the device, in a fixed order; the last batch may be smaller.

        order_seed None: the split's own order; else `seeded_order(len(self), order_seed)`."""

    @abstractmethod
    def first(self, count: int) -> Batch:
        """The first `count` examples (all, if fewer) on the device, e.g. for a probe pass."""


class CachedSplit(SplitData):
    """The whole split as one inputs and one targets tensor on the device."""

    cached = True

    def __init__(
        self, name: str, num_classes: int | None, inputs: torch.Tensor, targets: torch.Tensor
    ) -> None:
        assert len(inputs) == len(targets), "inputs and targets must pair up"
        self.name = name
        self.num_classes = num_classes
        self.inputs = inputs
        self.targets = targets
        self.nbytes = inputs.nbytes + targets.nbytes
        self._orders: dict[int, torch.Tensor] = {}  # seeded permutations, on the device

    def __len__(self) -> int:
        return len(self.targets)

    def batches(self, batch_size: int, order_seed: int | None = None) -> Iterator[Batch]:
        if order_seed is not None:
            yield from self._seeded_batches(batch_size, order_seed)
            return
        # Slices are views: no copy, and a channels_last tensor's slices stay channels_last.
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield self.inputs[start:stop], self.targets[start:stop]

    def _seeded_batches(self, batch_size: int, order_seed: int) -> Iterator[Batch]:
        order = self._orders.get(order_seed)
        if order is None:  # once per split and seed, not at every point
            order = seeded_order(len(self), order_seed).to(self.inputs.device)
            self._orders[order_seed] = order
        for start in range(0, len(self), batch_size):
            # A gather (a copy of one batch); indexing keeps a channels_last layout.
            chosen = order[start : start + batch_size]
            yield self.inputs[chosen], self.targets[chosen]

    def first(self, count: int) -> Batch:
        assert count >= 1, "a probe needs at least one example"
        return self.inputs[:count], self.targets[:count]


@dataclass(frozen=True)
class PackedSplit:
    """What turns a cached split's arrays back into the split: its name and classes, and the
    shape and strides of its inputs and of its targets (each array is a tensor's memory, in
    order: a contiguous or a channels_last tensor, read flat)."""

    name: str
    num_classes: int | None
    layouts: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (shape, stride) of each


def pack(split: SplitData) -> tuple[PackedSplit, list[np.ndarray]] | None:
    """A cached CPU split as (what it is, [inputs, targets] as flat arrays sharing its
    memory); None for a split that does not travel so (streamed, on a GPU, or of a dtype
    numpy does not hold, such as bfloat16)."""
    if not isinstance(split, CachedSplit) or split.inputs.device.type != "cpu":
        return None
    # A view into a larger tensor (labels sliced from a file's) travels as a copy of itself;
    # clone keeps the strides of a contiguous or channels_last tensor.
    tensors = [t if _is_dense(t) else t.clone() for t in (split.inputs, split.targets)]
    if not all(_is_dense(tensor) and tensor.dtype != torch.bfloat16 for tensor in tensors):
        return None
    # Its memory as one flat run of elements, whatever its layout: the strides go with it.
    arrays = [tensor.as_strided((tensor.numel(),), (1,)).numpy() for tensor in tensors]
    layouts = tuple((tuple(tensor.shape), tuple(tensor.stride())) for tensor in tensors)
    return PackedSplit(split.name, split.num_classes, layouts), arrays


def unpack(packed: PackedSplit, arrays: list[np.ndarray]) -> CachedSplit:
    """The cached split around `arrays` (no copy), with the shapes and strides `pack` took
    them from: the same layout, so the same kernels and the same bits."""
    inputs, targets = (
        torch.from_numpy(array).as_strided(shape, stride)
        for array, (shape, stride) in zip(arrays, packed.layouts, strict=True)
    )
    return CachedSplit(packed.name, packed.num_classes, inputs, targets)


def _is_dense(tensor: torch.Tensor) -> bool:
    """The tensor fills its memory exactly, from its start, in one of the two layouts a cached
    split has (contiguous, or channels_last images)."""
    layout_ok = tensor.is_contiguous() or (
        tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
    )
    fills = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return bool(layout_ok and fills and tensor.storage_offset() == 0)


class StreamedSplit(SplitData):
    """A split too large for the cache budget, read through a DataLoader at every pass.

    One loader per batch size lives as long as the split: with workers its processes persist,
    so the thousands of passes of a sweep fork them once.
    """

    cached = False

    def __init__(
        self,
        name: str,
        num_classes: int | None,
        examples: Dataset,
        nbytes: int,
        device: torch.device,
        channels_last: bool,
        workers: int,
    ) -> None:
        self.name = name
        self.num_classes = num_classes
        self.examples = examples
        self.nbytes = nbytes
        self.device = device
        self.channels_last = channels_last
        self.workers = workers
        self._loaders: dict[tuple[int, int | None], DataLoader] = {}

    def __len__(self) -> int:
        # torch's Dataset declares no __len__; a map-style one has it (checked_dataset)
        return len(self.examples)  # type: ignore[arg-type]

    def batches(self, batch_size: int, order_seed: int | None = None) -> Iterator[Batch]:
        loader = self._loaders.get((batch_size, order_seed))
        if loader is None:
            order = None if order_seed is None else seeded_order(len(self), order_seed).tolist()
            loader = DataLoader(
                self.examples,
                batch_size=batch_size,
                shuffle=False,
                sampler=order,  # None: the dataset's order
                num_workers=self.workers,
                collate_fn=collate,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
            )
            self._loaders[(batch_size, order_seed)] = loader
        # A point that stops early leaves this loop; the next pass restarts the loader,
        # which discards what its workers had read ahead.
        for batch in loader:
            yield self._on_device(accepted(batch))

    def first(self, count: int) -> Batch:
        assert count >= 1, "a probe needs at least one example"
        items = [self.examples[index] for index in range(min(count, len(self)))]
        return self._on_device(accepted(collate(items)))

    def _on_device(self, batch: Batch) -> Batch:
        inputs, targets = batch
        # non_blocking: from pinned memory the copy overlaps the previous batch's compute.
        inputs = inputs.to(self.device, non_blocking=True)
        layout = _layout(inputs.dim(), inputs.dtype, self.channels_last)
        inputs = inputs.contiguous(memory_format=layout)
        return inputs, targets.to(self.device, non_blocking=True)


def seeded_order(length: int, seed: int) -> torch.Tensor:
    """A permutation of range(length) (int64, CPU): the order early stopping visits examples
    in, fixed by `seed` alone (torch.randperm on a CPU generator: the same on every rank)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=generator)


def open_splits(
    data: DataConfig, device: torch.device, channels_last: bool
) -> dict[str, SplitData]:
    """Every split of `data.splits`, by name, in the config's order."""
    return {name: open_split(data, name, device, channels_last) for name in data.splits}


def open_split(
    data: DataConfig, split: str, device: torch.device, channels_last: bool
) -> SplitData:
    """One split of the configured dataset on `device`, cached or streamed by its size."""
    if data.dataset in ("cifar10", "cifar100"):
        return _cifar_split(data, split, device, channels_last)
    if data.dataset == "imagefolder":
        folder, num_classes = image_folder(data, split)
        return _from_dataset(data, split, num_classes, folder, device, channels_last)
    if data.dataset == "tokens":
        inputs, targets = tokens.token_split(data, split)
        chosen = configured_indices(data, len(targets), split)
        if chosen is not None:
            inputs, targets = inputs[chosen], targets[chosen]
        return _from_tensors(data, split, None, inputs, targets, device, channels_last)
    if not is_import_path(data.dataset):
        raise DataError(
            f"unknown data.dataset {data.dataset!r}; use cifar10, cifar100, imagefolder, tokens or "
            "an import path package.module:callable"
        )
    result = resolve(data.dataset, "data.dataset")(split, **data.kwargs)
    return from_object(result, data.dataset, data, split, device, channels_last)


def from_object(
    result: object,
    label: str,
    data: DataConfig,
    split: str,
    device: torch.device,
    channels_last: bool,
) -> SplitData:
    """A split from what a dataset callable returned, or what the Python API was handed: a
    map-style Dataset of (input, target) pairs or a pair of tensors, or a dataset of token ids
    (lsurf.data.tokens). `label` names it in errors."""
    if not is_tensor_pair(result) and tokens.is_token_dataset(result):
        result = tokens.from_token_dataset(result, f"data.dataset {label} (split {split!r})")
    if is_tensor_pair(result):
        inputs, targets = checked_tensors(label, split, result)
        chosen = configured_indices(data, len(targets), split)
        if chosen is not None:
            inputs, targets = inputs[chosen], targets[chosen]
        return _from_tensors(data, split, None, inputs, targets, device, channels_last)
    return _from_dataset(
        data, split, None, checked_dataset(label, split, result), device, channels_last
    )


def _cifar_split(
    data: DataConfig, split: str, device: torch.device, channels_last: bool
) -> SplitData:
    loaded = load_configured(data, split)
    classes = classes_of(data.dataset)
    return _from_tensors(data, split, classes, loaded.images, loaded.labels, device, channels_last)


# --- cached or streamed -------------------------------------------------------------------


def _from_tensors(
    data: DataConfig,
    split: str,
    num_classes: int | None,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    channels_last: bool,
) -> SplitData:
    """A split whose examples are already two tensors (CIFAR, a callable's tensor pair)."""
    nbytes = inputs.nbytes + targets.nbytes
    if nbytes <= data.cache_mb * MIB:
        inputs = inputs.to(device)
        inputs = inputs.contiguous(memory_format=_layout(inputs.dim(), inputs.dtype, channels_last))
        return CachedSplit(split, num_classes, inputs, targets.to(device).contiguous())
    # The DataLoader pins and copies host memory; a callable may have built its tensors on a GPU.
    examples = TensorDataset(inputs.cpu(), targets.cpu())
    return StreamedSplit(split, num_classes, examples, nbytes, device, channels_last, data.workers)


def _from_dataset(
    data: DataConfig,
    split: str,
    num_classes: int | None,
    dataset: Examples,
    device: torch.device,
    channels_last: bool,
) -> SplitData:
    """A split read example by example: collated once into the cache, or streamed."""
    chosen = configured_indices(data, len(dataset), split)
    if chosen is not None:
        dataset = dataset.restricted_to(chosen.tolist())
    nbytes = dataset.example_nbytes * len(dataset)
    if nbytes > data.cache_mb * MIB:
        return StreamedSplit(
            split, num_classes, dataset, nbytes, device, channels_last, data.workers
        )
    # Read once, through workers when there are any, straight into the device tensors.
    loader = DataLoader(
        dataset,
        batch_size=data.batch_size,
        shuffle=False,
        num_workers=data.workers,
        collate_fn=collate,
    )
    shape = (len(dataset), *dataset.input_shape)
    layout = _layout(len(shape), dataset.input_dtype, channels_last)
    inputs = torch.empty(shape, dtype=dataset.input_dtype, device=device, memory_format=layout)
    targets = torch.empty(
        (len(dataset), *dataset.target_shape), dtype=dataset.target_dtype, device=device
    )
    start = 0
    for batch in loader:
        batch_inputs, batch_targets = accepted(batch)
        stop = start + len(batch_targets)
        inputs[start:stop].copy_(batch_inputs)
        targets[start:stop].copy_(batch_targets)
        start = stop
    assert start == len(dataset), "the loader handed out every example once"
    return CachedSplit(split, num_classes, inputs, targets)


def _layout(dims: int, dtype: torch.dtype, channels_last: bool) -> torch.memory_format:
    """channels_last for 4-D floating tensors (image batches) when asked; plain otherwise."""
    if channels_last and dims == 4 and dtype.is_floating_point:
        return torch.channels_last
    return torch.contiguous_format
