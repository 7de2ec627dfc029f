"""The data a sweep evaluates on, from files on disk to split tensors on the device.

- `layouts`: the datasets' on-disk formats and normalization constants (no torch);
- `cifar`: CIFAR-10/100's python versions read into one normalized tensor per split;
- `readers`: datasets read example by example, every example checked (user Datasets,
  ImageFolder trees);
- `splits`: every dataset as `SplitData` on one device, cached whole or streamed;
- `synthetic`: generated stand-ins written in exactly the CIFAR file formats.
"""

__all__ = ["cifar", "layouts", "readers", "splits", "synthetic"]
