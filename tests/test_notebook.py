"""examples/notebook.ipynb: committed without outputs, and executed in a real Jupyter kernel
(the checkout's lsurf on its path) it shows the surface's repr, a PNG figure and a plotly
figure, with no error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"


def test_the_committed_notebook_has_no_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code, "the example has code to run"
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_the_notebook_runs_and_shows_the_surface_and_its_figures(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    kernelspec = pytest.importorskip("ipykernel.kernelspec")
    # A kernel spec of this interpreter in a scratch folder, found first: the kernel is this
    # venv's python whatever kernels the machine has, and it imports the checkout's lsurf.
    kernelspec.install(prefix=str(tmp_path), kernel_name="python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    inherited = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *inherited]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": tmp_path}}
    )
    client.execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    # The surface and the matplotlib figure are the cells' results; plotly displays itself.
    results = [
        output for output in outputs if output.output_type in ("execute_result", "display_data")
    ]
    assert len(results) == 3  # the surface, the matplotlib figure, the plotly figure
    text = results[0].data["text/plain"]
    assert "grid     x=-1:1:7  y=-1:1:7  (7x7 points)" in text
    assert "done     49/49 points (100.0%), complete" in text
    assert results[0].data["text/html"].startswith("<pre>surface  ")
    assert results[1].data["image/png"], "the contour figure is shown as a PNG"
    assert "application/vnd.plotly.v1+json" in results[2].data
    plotted = results[2].data["application/vnd.plotly.v1+json"]["data"][0]
    assert plotted["type"] == "surface" and plotted["z"]["shape"] == "7, 7"
    assert list(tmp_path.glob("*.png")) == []  # figures shown, not written
