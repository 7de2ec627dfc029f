"""The Hessian analysis file of `lsurf hessian`: top eigenvalues, trace, density, per layer.

numpy and h5py only: `lsurf info` and the spectrum figure read it without torch.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import lsurf
from lsurf.errors import OutputError
from lsurf.files.hdf5 import attributes_of, create_atomically, open_file, stored_config

# `lsurf hessian` writes one file per analysis of θ*, told apart from surface and direction
# files by its attribute `lsurf_file`. Datasets (float64 unless said):
#   top_eigenvalues (k,) descending, top_residuals (k,) ‖Hv − λv‖ / |λ|max of each Ritz pair;
#   trace, trace_standard_error: scalars (Hutchinson), trace_probes (m,) each probe's vᵀHv;
#   density_nodes, density_weights (runs, steps): the stochastic Lanczos quadrature (a run
#   that ended early is padded with nodes of weight 0);
#   density_grid, density_curve (G,): the density smoothed by a Gaussian of width
#   `density_sigma` (an attribute), integrating to 1;
#   layer_names (L,) str, layer_max_eigenvalues (L,), layer_residuals (L,),
#   layer_products (L,) int64: λmax of each parameter tensor's diagonal block (absent when
#   hessian.per_layer is false).
# Attributes: lsurf_file, format_version, lsurf_version, created, config, checkpoint_sha256,
# split, params, parameters, examples, batch_size, ranks, top_converged, trace_samples,
# density_sigma, and the products spent per stage: top_products, trace_products,
# density_products, layer_products_total, products.
HESSIAN_FILE = "hessian"
HESSIAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HessianAnalysis:
    """The results of `lsurf hessian` at θ* (numpy only: `info` and plots read it without torch)."""

    top_eigenvalues: np.ndarray  # (k,) descending
    top_residuals: np.ndarray  # (k,)
    top_converged: bool
    trace: float
    trace_standard_error: float
    trace_probes: np.ndarray  # (m,) each Rademacher probe's vᵀHv; the trace is their mean
    density_nodes: np.ndarray  # (runs, steps) Ritz values of each quadrature run
    density_weights: np.ndarray  # (runs, steps) their weights; each run's sum to 1
    density_grid: np.ndarray  # (G,)
    density_curve: np.ndarray  # (G,)
    density_sigma: float
    layer_names: tuple[str, ...]  # () when not computed
    layer_max_eigenvalues: np.ndarray  # (L,)
    layer_residuals: np.ndarray  # (L,)
    layer_products: np.ndarray  # (L,) int64
    products: dict[str, int]  # Hessian-vector products per stage: top, trace, density, layers

    @property
    def trace_samples(self) -> int:
        return len(self.trace_probes)

    def density_range(self) -> tuple[float, float]:
        """The smallest and largest Ritz value of the quadrature (padding left out)."""
        nodes = self.density_nodes[(self.density_weights > 0) & np.isfinite(self.density_nodes)]
        if nodes.size == 0:
            return float("nan"), float("nan")
        return float(nodes.min()), float(nodes.max())


@dataclass(frozen=True)
class HessianFile:
    path: Path
    analysis: HessianAnalysis
    attributes: dict[str, Any]

    @cached_property
    def config(self) -> dict[str, Any]:
        """The config of the analysis, parsed once."""
        return stored_config(self.attributes)


_HESSIAN_ARRAYS = (
    "top_eigenvalues",
    "top_residuals",
    "trace_probes",
    "density_nodes",
    "density_weights",
    "density_grid",
    "density_curve",
    "layer_max_eigenvalues",
    "layer_residuals",
)
_STAGE_PRODUCTS = {  # stage → attribute holding its products
    "top": "top_products",
    "trace": "trace_products",
    "density": "density_products",
    "layers": "layer_products_total",
}


def write_hessian_file(path: Path, analysis: HessianAnalysis, attributes: dict[str, Any]) -> None:
    """Create (or atomically replace) the Hessian analysis file at `path`.

    `attributes` says what was analysed (config, checkpoint_sha256, split, params, ...); the
    file's kind, format, version, creation time and the products are added here.
    """
    reserved = {"lsurf_file", "format_version", "lsurf_version", "created", "products"}
    assert not reserved & set(attributes), "these attributes are written here"

    def build(h5file: h5py.File) -> None:
        for name in _HESSIAN_ARRAYS:
            h5file.create_dataset(name, data=np.asarray(getattr(analysis, name), np.float64))
        h5file.create_dataset("trace", data=np.float64(analysis.trace))
        h5file.create_dataset(
            "trace_standard_error", data=np.float64(analysis.trace_standard_error)
        )
        if analysis.layer_names:
            names = np.array(analysis.layer_names, dtype=h5py.string_dtype())
            h5file.create_dataset("layer_names", data=names)
            h5file.create_dataset("layer_products", data=analysis.layer_products.astype(np.int64))
        h5file.attrs["lsurf_file"] = HESSIAN_FILE
        h5file.attrs["format_version"] = HESSIAN_FORMAT_VERSION
        h5file.attrs["lsurf_version"] = lsurf.__version__
        h5file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        h5file.attrs["top_converged"] = bool(analysis.top_converged)
        h5file.attrs["trace_samples"] = int(analysis.trace_samples)
        h5file.attrs["density_sigma"] = float(analysis.density_sigma)
        for stage, name in _STAGE_PRODUCTS.items():
            h5file.attrs[name] = int(analysis.products.get(stage, 0))
        h5file.attrs["products"] = int(sum(analysis.products.values()))
        for key, value in attributes.items():
            h5file.attrs[key] = value

    create_atomically(path, build)


def is_hessian_file(path: Path) -> bool:
    """Whether `path` is an existing HDF5 file written by `lsurf hessian` (False otherwise,
    so that callers fall through to their own messages for missing or other files)."""
    if not Path(path).is_file():
        return False
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            return str(h5file.attrs.get("lsurf_file", "")) == HESSIAN_FILE
    except OSError:
        return False


def read_hessian_file(path: Path) -> HessianFile:
    """Load what `write_hessian_file` wrote."""
    with open_file(path, "r", "hessian file", locking=False) as h5file:
        if str(h5file.attrs.get("lsurf_file", "")) != HESSIAN_FILE:
            raise OutputError(f"{path} is not a Hessian analysis file of `lsurf hessian`")
        missing = [name for name in (*_HESSIAN_ARRAYS, "trace") if name not in h5file]
        if missing:
            raise OutputError(
                f"hessian file {path} is damaged: it lacks {', '.join(missing)}; rerun "
                "lsurf hessian with --force"
            )
        attributes = attributes_of(h5file)
        layers = "layer_names" in h5file
        analysis = HessianAnalysis(
            top_eigenvalues=h5file["top_eigenvalues"][()],
            top_residuals=h5file["top_residuals"][()],
            top_converged=bool(attributes.get("top_converged", False)),
            trace=float(h5file["trace"][()]),
            trace_standard_error=float(h5file["trace_standard_error"][()]),
            trace_probes=h5file["trace_probes"][()],
            density_nodes=h5file["density_nodes"][()],
            density_weights=h5file["density_weights"][()],
            density_grid=h5file["density_grid"][()],
            density_curve=h5file["density_curve"][()],
            density_sigma=float(attributes.get("density_sigma", 0.0)),
            layer_names=tuple(
                name.decode() if isinstance(name, bytes) else str(name)
                for name in (h5file["layer_names"][()] if layers else ())
            ),
            layer_max_eigenvalues=h5file["layer_max_eigenvalues"][()],
            layer_residuals=h5file["layer_residuals"][()],
            layer_products=h5file["layer_products"][()] if layers else np.zeros(0, np.int64),
            products={
                stage: int(attributes.get(name, 0)) for stage, name in _STAGE_PRODUCTS.items()
            },
        )
        return HessianFile(Path(path), analysis, attributes)
