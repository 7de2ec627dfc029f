"""Token sequences for language models: files of token ids, and token-id datasets, as
(input ids, target ids) tensor pairs that the `causal_lm` loss takes.

Owns `data.dataset: tokens` and the conversion of token-id examples handed to the Python API
or returned by a dataset callable:

- ``ROOT/<split>.npy``: a 2-D integer array (N, T), one fixed-length sequence per row;
- ``ROOT/<split>.bin``: a flat array of token ids as nanoGPT writes it (``data.kwargs.dtype``,
  uint16 by default), cut into ``data.kwargs.sequence_length`` ids per sequence (a last,
  shorter rest is left out). The test split may also be ``val.bin`` (nanoGPT's name).
- ``data.kwargs.pad_id``: the id that pads a sequence shorter than T. Padding is trailing (a
  row's first pad id starts its padding, which must run to its end): under causal attention
  no real token sees a later pad, so the model is called with the ids alone and its logits at
  real positions are those it gives with an attention mask.
- a map-style dataset whose items are token-id tensors (T,), or dicts with ``input_ids`` and
  an optional trailing ``attention_mask`` (1 real, 0 padding), read once into tensors.

The targets are the ids with every padded position set to `lsurf.losses.IGNORED`, so the
loss counts real next tokens only. Inputs: the data config (or a dataset) and a split name.
Outputs: (inputs int64 (N, T), targets int64 (N, T)); mistakes raise a one-line `DataError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsurf.config import DataConfig
from lsurf.errors import DataError
from lsurf.losses import IGNORED

KWARGS = ("sequence_length", "dtype", "pad_id")
BIN_DTYPES = ("uint16", "uint32", "int32", "int64")
# nanoGPT names its held-out file val.bin; lsurf's split is test.
_ALIASES = {"test": ("test", "val")}


def token_split(data: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ROOT/<split>.npy or .bin as (input ids, target ids), both int64 (N, T)."""
    unknown = sorted(set(data.kwargs) - set(KWARGS))
    if unknown:
        raise DataError(
            f"data.kwargs {', '.join(unknown)} not known to data.dataset tokens; valid keys: "
            f"{', '.join(KWARGS)}"
        )
    if data.root is None:
        raise DataError("data.root is not set; point it at the folder holding train.npy/test.npy")
    root = Path(data.root)
    names = _ALIASES.get(split, (split,))
    for name in names:
        if (root / f"{name}.npy").is_file():
            ids = _from_npy(root / f"{name}.npy")
            break
        if (root / f"{name}.bin").is_file():
            ids = _from_bin(root / f"{name}.bin", data.kwargs)
            break
    else:
        wanted = " or ".join(f"{root}/{name}.npy|.bin" for name in names)
        raise DataError(f"tokens split {split!r} not found: expected {wanted}")
    return with_targets(ids, data.kwargs.get("pad_id"), f"{root}/{split}")


def _from_npy(path: Path) -> torch.Tensor:
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; data.dataset tokens "
            "needs a 2-D integer array (sequences, tokens) of token ids"
        )
    return torch.from_numpy(array.astype(np.int64))


def _from_bin(path: Path, kwargs: Mapping[str, Any]) -> torch.Tensor:
    dtype = kwargs.get("dtype", "uint16")
    if dtype not in BIN_DTYPES:
        raise DataError(f"data.kwargs.dtype is {dtype!r}; use one of {', '.join(BIN_DTYPES)}")
    length = kwargs.get("sequence_length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise DataError(
            f"{path} is a flat .bin file: set data.kwargs.sequence_length (an integer of 2 or "
            f"more, the tokens per sequence); got {length!r}"
        )
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise DataError(
            f"{path} has {size} bytes, not a whole number of {dtype} ids; check data.kwargs.dtype"
        )
    flat = np.fromfile(path, dtype=dtype)
    sequences = len(flat) // length
    if sequences == 0:
        raise DataError(f"{path} has {len(flat)} ids, fewer than one sequence of {length}")
    return torch.from_numpy(flat[: sequences * length].astype(np.int64).reshape(sequences, length))


def with_targets(
    ids: torch.Tensor, pad_id: int | None, label: str, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, targets): the targets are the ids with padded positions (`pad_id`, or `mask` 0)
    set to IGNORED; padding must be trailing in every row."""
    if len(ids) == 0 or ids.shape[1] < 2:
        raise DataError(f"{label}: {tuple(ids.shape)} ids; need sequences of at least 2 tokens")
    if int(ids.min()) < 0:
        raise DataError(f"{label}: token id {int(ids.min())} is negative; ids start at 0")
    padded = torch.zeros_like(ids, dtype=torch.bool) if mask is None else mask == 0
    if pad_id is not None:
        padded |= ids == pad_id
    # Trailing: once a row is padded it stays padded (a running maximum never drops).
    trailing = torch.cummax(padded.to(torch.int8), dim=1).values.bool()
    if bool((trailing != padded).any()):
        row = int((trailing != padded).any(dim=1).nonzero()[0])
        raise DataError(
            f"{label}: sequence {row} has a real token after padding; pad only at the end of "
            "a sequence (right padding), and pick a pad_id no real token uses"
        )
    return ids, ids.masked_fill(padded, IGNORED)


def is_token_dataset(result: object) -> bool:
    """Whether a dataset's first item is token ids: a 1-D integer tensor or a dict of them."""
    if not (hasattr(result, "__len__") and hasattr(result, "__getitem__")):
        return False
    if isinstance(result, str | bytes | Mapping | torch.Tensor):
        return False
    try:
        if len(result) == 0:
            return False
        first = result[0]
    except Exception:  # noqa: BLE001 - not indexable like a dataset: the pair path reports it
        return False
    if isinstance(first, Mapping):
        return "input_ids" in first
    return isinstance(first, torch.Tensor) and first.dim() == 1 and not first.is_floating_point()


def from_token_dataset(result: Any, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of a token-id dataset, read once, as (ids, targets) (N, T)."""
    rows: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for index in range(len(result)):
        item = result[index]
        ids = item["input_ids"] if isinstance(item, Mapping) else item
        mask = item.get("attention_mask") if isinstance(item, Mapping) else None
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
            raise DataError(
                f"{label}: item {index} is not a 1-D integer tensor of token ids; every item "
                "must be ids (T,) or a dict with input_ids (T,) and attention_mask (T,)"
            )
        if rows and ids.shape != rows[0].shape:
            raise DataError(
                f"{label}: item {index} has {len(ids)} tokens but item 0 has {len(rows[0])}; "
                "pad every sequence to one length (trailing pad, attention_mask 0)"
            )
        rows.append(ids.long())
        masks.append(torch.ones_like(ids) if mask is None else torch.as_tensor(mask))
    return with_targets(torch.stack(rows), None, label, torch.stack(masks))
