"""The notebooks under notebooks/: committed without outputs, and each runs top to bottom in quick mode.

Quick mode (``BRAINSEG_NOTEBOOK_QUICK=1``) is the ``--quick`` setting of ``python -m training``; the
notebooks then write only below the temporary folder (``TMPDIR``) and the session's dataset cache
(``BRAINSEG_CACHE_DIR``, set by conftest.py). A cell that raises fails the test (nbclient's CellExecutionError).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_data.ipynb", "02_train_multiclass.ipynb", "03_train_ensemble.ipynb", "04_evaluate.ipynb"]
CELL_TIMEOUT_S = 600


def test_the_four_notebooks_are_there() -> None:
    assert [path.name for path in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for n, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {n} holds outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name}: cell {n} has an execution count; clear it before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_in_quick_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("BRAINSEG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temporary run folders and figures land here
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")  # the python3 kernel of this interpreter's environment
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, when a cell fails
    kernel_prefix = "".join(output.get("text", "") for output in notebook.cells[-1].outputs).strip()
    assert kernel_prefix == sys.prefix, f"the kernel ran the Python of {kernel_prefix}, not this environment's ({sys.prefix})"
