"""notebooks/interpolation.ipynb runs top to bottom on the tiny demo's checkpoints."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import HANG_GUARD_S

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_interpolation_notebook_runs_on_tiny_checkpoints(tiny_demo, monkeypatch):
    monkeypatch.setenv("GENSIS_ENCODER", str(tiny_demo / "stage1"))
    monkeypatch.setenv("GENSIS_DIFFUSION", str(tiny_demo / "stage2"))
    monkeypatch.setenv("GENSIS_TILES", str(tiny_demo / "tiling"))
    monkeypatch.setenv("GENSIS_STEPS", "3")
    notebook = nbformat.read(NOTEBOOKS / "interpolation.ipynb", as_version=4)
    NotebookClient(notebook, timeout=HANG_GUARD_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}, env=dict(os.environ)).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 2                                   # the strip and the cosine plot
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "Spearman(alpha, cosine to tile 1)" in text and "tile 1:" in text
