"""lsurf's files, one module per format, and what reads them back (no torch here).

- `hdf5`: opening with one-line errors, atomic creation, the stored config;
- `surface`: the surface file of a sweep, read back as `Surface`, written by `SurfaceWriter`;
- `directions`: the direction file; `hessian`: the analysis of `lsurf hessian`;
- `weights`: weight statistics; `trajectory`: a training path projected on a plane;
- `reference`: surface files of the reference code, read as lsurf's;
- `curvature`, `labels`: what a surface's columns and stored config mean (derived columns,
  solver settings, the words on a figure);
- `info` (`lsurf info`) and `compare` (`lsurf compare`).
"""

__all__ = [
    "compare",
    "curvature",
    "directions",
    "hdf5",
    "hessian",
    "info",
    "labels",
    "reference",
    "surface",
    "trajectory",
    "weights",
]
