"""Direction files in the reference code's layout (tomgoldstein/loss-landscape), for tests.

`write_reference_directions` writes what net_plotter.setup_direction writes through
h5_util.write_list: a group per direction, one dataset per tensor named by its position, in
`net.parameters()` order (--dir_type weights) or `net.state_dict()` order (--dir_type
states), with no names and no attributes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn


def reference_entries(model: nn.Module, space: str) -> list[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs the reference's list stands for, in its order."""
    if space == "states":
        return list(model.state_dict().items())
    return [(name, parameter.detach()) for name, parameter in model.named_parameters()]


def write_reference_directions(
    path: Path,
    model: nn.Module,
    x: dict[str, torch.Tensor],
    y: dict[str, torch.Tensor] | None,
    space: str = "weights",
) -> Path:
    """Write d1 (and d2), keyed by state_dict key, as the reference would have.

    Integer state entries (BN's num_batches_tracked) hold what the reference's randn of a
    0-dim shape becomes under ignore=biasbn: a 0-dim float32 zero, unless `x`/`y` give one.
    """
    with h5py.File(path, "w") as h5file:
        for group_name, direction in (("xdirection", x), ("ydirection", y)):
            if direction is None:
                continue
            group = h5file.create_group(group_name)
            for index, (name, tensor) in enumerate(reference_entries(model, space)):
                if name in direction:
                    data = direction[name].detach().cpu().numpy()
                else:
                    assert not tensor.is_floating_point(), f"no direction for {name}"
                    data = np.zeros(tuple(tensor.shape), dtype=np.float32)
                group.create_dataset(str(index), data=data)
    return path
