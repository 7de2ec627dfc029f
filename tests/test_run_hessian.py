"""`lsurf hessian`: the analysis of θ* against a dense Hessian, its file, report and figure,
bad input, and the same results from three MPI ranks.

The model is toylab's BlobNet with 8 hidden units (180 parameters with biases), small enough
for torch to build the whole Hessian of the same mean loss in float64 and diagonalize it.
"""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import lsurf
from lsurf.checkpoint import file_digest, save_checkpoint
from lsurf.cli import main
from lsurf.config import load_sweep_config
from lsurf.data.cifar import subset_indices
from lsurf.files.hessian import read_hessian_file
from lsurf.run.hessian import GRID_SIGMAS, SIGMA_FRACTION, density_grid
from lsurf.schema import to_yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

import toylab  # noqa: E402 - needs the fixtures folder on the path

HIDDEN, SIZE, SUBSET, BATCH = 8, 96, 80, 20  # 4 batches: uneven over 3 ranks
HESSIAN = {
    "params": "all",
    "top_k": 4,
    "tol": 1e-6,
    "trace_samples": 60,
    "density_runs": 2,
    "density_steps": 20,
    "seed": 3,
}


def write_config(folder: Path, checkpoint: Path, **hessian: object) -> Path:
    config = {
        "model": {
            "name": "toylab:BlobNet",
            "kwargs": {"hidden": HIDDEN},
            "checkpoint": str(checkpoint),
        },
        "data": {
            "dataset": "toylab:blobs",
            "kwargs": {"size": SIZE},
            "splits": ["train"],
            "batch_size": BATCH,
            "subset": SUBSET,
        },
        "grid": {"x": "-1:1:3"},  # a sweep config; `lsurf hessian` does not use the grid
        "output": str(folder / "surface.h5"),
        "hessian": HESSIAN | hessian,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model's products are dominated by thread hand-offs: one thread is 4x faster on
    a shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "blobnet.pt"
    save_checkpoint(path, toylab.BlobNet(hidden=HIDDEN).state_dict())
    return path


@pytest.fixture(scope="module")
def serial(tmp_path_factory, checkpoint) -> tuple[Path, str]:
    """One serial `lsurf hessian` run: the config and what it logged."""
    config = write_config(tmp_path_factory.mktemp("serial"), checkpoint)
    code, out, err = run_main("hessian", str(config))
    assert code == 0, err
    assert out == ""
    return config, err


@pytest.fixture(scope="module")
def dense(checkpoint) -> tuple[list[str], list[slice], np.ndarray]:
    """The Hessian of the same mean loss, built whole in float64: (names, blocks, H)."""
    model = toylab.BlobNet(hidden=HIDDEN).double().eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    theta = {name: tensor.detach() for name, tensor in model.named_parameters()}
    names = list(theta)
    chosen = subset_indices(SIZE, SUBSET, 0, "train")
    blobs = toylab.blobs("train", SIZE)
    inputs, labels = blobs.points[chosen].double(), blobs.labels[chosen]

    def mean_loss(*tensors: torch.Tensor) -> torch.Tensor:
        outputs = torch.func.functional_call(
            model, dict(zip(names, tensors, strict=True)), (inputs,)
        )
        return F.cross_entropy(outputs, labels, reduction="sum") / len(labels)

    parts = torch.autograd.functional.hessian(mean_loss, tuple(theta.values()))
    sizes = [tensor.numel() for tensor in theta.values()]
    rows = [
        torch.cat([parts[i][j].reshape(sizes[i], sizes[j]) for j in range(len(names))], dim=1)
        for i in range(len(names))
    ]
    matrix = torch.cat(rows, dim=0).numpy()
    offsets = np.cumsum([0, *sizes])
    blocks = [
        slice(int(start), int(stop)) for start, stop in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    return names, blocks, (matrix + matrix.T) / 2


def analysis_path(config: Path) -> Path:
    return config.parent / "surface.hessian.h5"


# ---------------------------------------------------------------------------- the math


def test_top_k_trace_layers_and_density_agree_with_the_dense_hessian(serial, dense):
    config, _ = serial
    names, blocks, matrix = dense
    found = read_hessian_file(analysis_path(config)).analysis
    exact = np.linalg.eigvalsh(matrix)[::-1]
    scale = abs(exact).max()

    k = HESSIAN["top_k"]
    assert found.top_converged
    np.testing.assert_allclose(found.top_eigenvalues, exact[:k], rtol=1e-4, atol=1e-4 * scale)
    assert found.top_residuals.shape == (k,) and found.top_residuals.max() <= HESSIAN["tol"]

    trace = float(np.trace(matrix))
    assert found.trace_samples == HESSIAN["trace_samples"]
    assert found.trace == pytest.approx(found.trace_probes.mean(), rel=1e-12)
    assert 0 < found.trace_standard_error < abs(trace)
    assert abs(found.trace - trace) <= 3 * found.trace_standard_error

    assert found.layer_names == tuple(names)
    for name, block, value in zip(names, blocks, found.layer_max_eigenvalues, strict=True):
        block_max = np.linalg.eigvalsh(matrix[block, block])[-1]
        assert value == pytest.approx(block_max, rel=1e-4, abs=1e-4 * scale), name

    # Each quadrature run is a distribution over [λmin, λmax], and the curve integrates to 1.
    assert found.density_nodes.shape == (2, 20)
    np.testing.assert_allclose(found.density_weights.sum(axis=1), 1.0, rtol=1e-10)
    low, high = found.density_range()
    assert exact[-1] - 1e-4 * scale <= low and high <= exact[0] + 1e-4 * scale
    assert np.trapezoid(found.density_curve, found.density_grid) == pytest.approx(1.0, abs=1e-3)
    assert found.density_sigma == pytest.approx(SIGMA_FRACTION * (high - low), rel=1e-6)


def test_the_density_grid_follows_the_span_of_the_spectrum():
    grid, sigma = density_grid(np.array([-1.0, 0.0, 2.0]), np.array([3.0, 2.5]))
    assert sigma == pytest.approx(0.04)  # 1% of the span from -1 to 3
    assert grid[0] == pytest.approx(-1 - GRID_SIGMAS * sigma)
    assert grid[-1] == pytest.approx(3 + GRID_SIGMAS * sigma)
    # A single eigenvalue (H = c·I) still gets a width: 1% of its size.
    grid, sigma = density_grid(np.array([5.0, 5.0]), np.array([5.0]))
    assert sigma == pytest.approx(0.05) and grid[0] < 5 < grid[-1]


# ---------------------------------------------------------------------------- file, log, info


def test_the_file_says_what_was_analysed_and_the_log_has_a_line_per_stage(serial, checkpoint):
    config, log = serial
    hessian = read_hessian_file(analysis_path(config))
    attributes = hessian.attributes
    assert attributes["lsurf_file"] == "hessian"
    assert attributes["format_version"] == 1
    assert attributes["lsurf_version"] == lsurf.__version__
    assert attributes["config"] == to_yaml(load_sweep_config(config))
    assert attributes["checkpoint_sha256"] == file_digest(checkpoint)
    assert (attributes["split"], attributes["params"], attributes["loss"]) == (
        "train",
        "all",
        "cross_entropy",
    )
    assert attributes["parameters"] == 8 * 8 + 8 + 8 * 8 + 8 + 8 * 4 + 4
    assert (attributes["examples"], attributes["batch_size"], attributes["ranks"]) == (80, 20, 1)
    assert attributes["created"].startswith("20")
    products = hessian.analysis.products
    assert products["trace"] == HESSIAN["trace_samples"] and products["density"] == 2 * 20
    assert attributes["products"] == sum(products.values())

    lines = log.splitlines()
    assert lines[0] == (
        "hessian of the mean loss on train at θ* (80 examples, 4 batches of 20): "
        "180 parameters (all)"
    )
    stages = ["top-4 eigenvalues: ", "trace: ", "density: ", "per-layer λmax: ", "hessian analysis"]
    assert [line.split(" ")[0] for line in lines[1:]] == [stage.split(" ")[0] for stage in stages]
    assert lines[1].endswith(f"{products['top']} products")
    assert lines[2].endswith(f"(Hutchinson, 60 probes), {products['trace']} products")
    figure = config.parent / "surface.hessian.png"
    assert lines[-1] == (
        f"hessian analysis written to {analysis_path(config)} and {figure} "
        f"({attributes['products']} products in all)"
    )
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_describes_the_analysis_and_plot_draws_it(serial, checkpoint, tmp_path):
    config, _ = serial
    path = analysis_path(config)
    code, out, _ = run_main("info", str(path))
    assert code == 0
    found = read_hessian_file(path).analysis
    top = ", ".join(f"{value:.6g}" for value in found.top_eigenvalues)
    lines = out.splitlines()
    assert lines[:6] == [
        f"hessian  {path}",
        f"model    toylab:BlobNet  checkpoint {checkpoint}",
        "data     toylab:blobs (train), 80 examples each  loss cross_entropy",
        "matrix   H of the mean loss on train (80 examples, batch size 20, eval mode) "
        "w.r.t. all: 180 parameters",
        f"top-4    {top}  (max residual {found.top_residuals.max():.1e}, "
        f"{found.products['top']} products, converged)",
        f"trace    {found.trace:.6g} ± {found.trace_standard_error:.2g}  (Hutchinson, "
        f"60 probes, {found.products['trace']} products)",
    ]
    assert lines[6].startswith("density  2 runs x 20 Lanczos steps, Ritz values in [")
    layers = found.products["layers"]
    assert lines[7] == f"layers   λmax of each tensor's block  ({layers} products)"
    assert lines[8] == (
        f"  body.0.weight  {found.layer_max_eigenvalues[0]:.6g}  "
        f"(residual {found.layer_residuals[0]:.1e})"
    )
    assert lines[-2] == f"products {sum(found.products.values())} Hessian-vector products"
    assert lines[-1].startswith(f"written by lsurf {lsurf.__version__} (hessian format 1)")

    code, out, _ = run_main("plot", str(path), "--out", str(tmp_path), "--format", "png,svg")
    assert code == 0
    assert out.splitlines() == [
        str(tmp_path / "surface.hessian.png"),
        str(tmp_path / "surface.hessian.svg"),
    ]
    assert (tmp_path / "surface.hessian.svg").read_text().lstrip().startswith("<?xml")
    code, _, err = run_main("plot", str(path), "--log")
    assert code == 2
    assert err == (
        "lsurf: error: --log shape surface figures; a Hessian analysis figure takes only "
        "--out and --format\n"
    )


# ---------------------------------------------------------------------------- bad input


def test_an_existing_file_is_refused_without_force(tmp_path, checkpoint):
    config = write_config(
        tmp_path,
        checkpoint,
        top_k=1,
        tol=1e-2,
        per_layer=False,
        trace_samples=3,
        density_runs=1,
        density_steps=5,
    )
    existing = analysis_path(config)
    existing.write_bytes(b"an earlier analysis")
    before = existing.stat().st_mtime_ns
    code, _, err = run_main("hessian", str(config))
    assert code == 2
    assert err == (
        f"lsurf: error: {existing} already exists; pass --force to replace it, or set "
        "hessian.output to another path\n"
    )
    assert existing.read_bytes() == b"an earlier analysis"
    assert existing.stat().st_mtime_ns == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["surface.hessian.h5", "sweep.yaml"]

    code, _, err = run_main("hessian", str(config), "--force")
    assert code == 0, err
    replaced = read_hessian_file(existing)
    assert replaced.analysis.layer_names == () and replaced.analysis.trace_samples == 3


def test_a_loss_without_a_second_derivative_is_one_line_and_nothing_is_written(
    tmp_path, checkpoint
):
    config = write_config(tmp_path, checkpoint)
    raw = yaml.safe_load(config.read_text())
    raw["evaluation"] = {"loss": "toylab.curvature:once_loss"}
    config.write_text(yaml.safe_dump(raw))
    code, out, err = run_main("hessian", str(config))
    assert code == 2 and out == ""
    assert err.startswith("lsurf: error: the Hessian needs a loss twice differentiable")
    assert "@once_differentiable" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep.yaml"]


# ---------------------------------------------------------------------------- MPI


def run_mpi(mpi, config: Path, ranks: int, *extra: str) -> subprocess.CompletedProcess:
    """`lsurf hessian` on `ranks` ranks through the mpi_run fixture `mpi`, toylab importable."""
    env = mpi.environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIXTURES), env.get("PYTHONPATH")]))
    return mpi(ranks, "-m", "lsurf", "hessian", config, *extra, env=env, timeout=240)


def test_three_ranks_give_the_serial_results_and_rank_0_alone_writes(
    mpi_run, serial, checkpoint, tmp_path
):
    config = write_config(tmp_path / "mpi", checkpoint)
    done = run_mpi(mpi_run, config, 3)
    assert done.returncode == 0, done.stderr
    parallel = read_hessian_file(analysis_path(config))
    reference = read_hessian_file(analysis_path(serial[0]))
    assert parallel.attributes["ranks"] == 3
    one, three = reference.analysis, parallel.analysis
    scale = abs(one.top_eigenvalues).max()
    # The ranks add their batches' products in another order than the serial run, so the
    # results agree to rounding, not bit for bit.
    np.testing.assert_allclose(three.top_eigenvalues, one.top_eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(three.trace_probes, one.trace_probes, rtol=1e-6, atol=1e-6 * scale)
    assert three.trace == pytest.approx(one.trace, rel=1e-6)
    assert three.trace_standard_error == pytest.approx(one.trace_standard_error, rel=1e-6)
    np.testing.assert_allclose(three.layer_max_eigenvalues, one.layer_max_eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(three.density_nodes, one.density_nodes, atol=1e-6 * scale)
    np.testing.assert_allclose(three.density_weights, one.density_weights, atol=1e-6)
    # Rank 0 alone logs and writes: each stage once, the file and figure once, no leftovers.
    lines = done.stderr.splitlines()
    assert lines[0].startswith("hessian of the mean loss on train at θ* (80 examples, 4 batches")
    assert "on 3 ranks" in lines[0]
    assert sum(line.startswith("trace: ") for line in lines) == 1
    assert sum(line.startswith("hessian analysis written to") for line in lines) == 1
    assert sorted(path.name for path in config.parent.iterdir()) == [
        "surface.hessian.h5",
        "surface.hessian.png",
        "sweep.yaml",
    ]


def test_a_rank_that_cannot_load_the_model_stops_every_rank_with_one_line(
    mpi_run, tmp_path, checkpoint
):
    config = write_config(tmp_path, checkpoint)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["name"] = "toylab.rankbound:RankNet"  # importable on every rank but rank 2
    config.write_text(yaml.safe_dump(raw))
    done = run_mpi(mpi_run, config, 3)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        "lsurf: error: rank 2: model.name: cannot import module 'toylab.rankbound' "
        "(ModuleNotFoundError: No module named 'toylab.rankbound' on this node); install it or "
        "add its folder to PYTHONPATH on every node"
    ]
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep.yaml"]


SUM_SCRIPT = """
import numpy as np
from lsurf.run.mpi import Group

group = Group()
total, count = group.sum(np.arange(4.0) * (group.rank + 1), float(group.rank + 1), step=7)
# Each rank's result, printed by rank 0 alone: the ranks' own prints interleave on stdout.
found = group.comm.gather((group.rank, total.tolist(), count), root=0)
if group.rank == 0:
    for rank, values, summed in found:
        print(rank, values, summed, flush=True)
"""
OUT_OF_STEP_SCRIPT = """
import numpy as np
from lsurf.run.mpi import Group

group = Group()
group.sum(np.zeros(1), 0.0, step=8 if group.rank == 1 else 9)  # rank 1 has parted ways
print("not reached", flush=True)
"""


def run_script(mpi, script: str) -> subprocess.CompletedProcess:
    return mpi(3, "-c", script, timeout=120)


def test_the_ranks_sum_to_the_same_values_and_a_rank_out_of_step_ends_the_job(
    mpi_run,
):
    done = run_script(mpi_run, SUM_SCRIPT)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        f"{rank} [0.0, 6.0, 12.0, 18.0] 6.0" for rank in range(3)
    ]
    done = run_script(mpi_run, OUT_OF_STEP_SCRIPT)
    assert done.returncode != 0 and "not reached" not in done.stdout
    assert "the ranks are out of step (rank 0 is at step 9, the mean step of all ranks is " in (
        done.stderr
    )


def test_the_batching_is_said_as_it_is():
    from lsurf.run.hessian import _batching

    assert _batching(1, 256, 128) == "1 batch"
    assert _batching(4, 20, 80) == "4 batches of 20"
    assert _batching(3, 32, 70) == "3 batches of 32 (the last of 6)"
