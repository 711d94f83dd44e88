"""The report notebooks in reports/ run top to bottom on a fresh install, offline
(nbclient, a real kernel), and draw their figures; zoo_complexity's table equals
`archlab analyze` for every row. Outputs are not committed: the notebooks are
executed in memory."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from archlab.cli.main import main

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def _run(name: str, tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("ARCHLAB_NB_OUT", str(tmp_path))
    monkeypatch.setenv("ARCHLAB_REPO", str(REPORTS.parent))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # a CI's MPLBACKEND=Agg draws nothing
    for var in ("ARCHLAB_STORAGE", "ARCHLAB_STUDY"):  # search_study makes its own study
        monkeypatch.delenv(var, raising=False)
    # a kernel of this very interpreter (not whatever "python3" kernel the machine has registered)
    spec = tmp_path / "jupyter" / "kernels" / "archlab-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                           "{connection_file}"], "display_name": "archlab tests",
                                                  "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(REPORTS / name, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} has committed outputs"
    NotebookClient(nb, timeout=600, kernel_name="archlab-test", resources={"metadata": {"path": str(REPORTS)}}).execute()
    return nb


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("name,images", [("zoo_complexity.ipynb", 1), ("receptive_fields.ipynb", 3),
                                         ("search_study.ipynb", 5)])
def test_notebook_runs_and_draws(name, images, tmp_path, monkeypatch):
    nb = _run(name, tmp_path, monkeypatch)
    assert _images(nb) >= images
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    if name == "zoo_complexity.ipynb":
        _table_equals_analyze(tmp_path / "zoo_complexity.csv")


def _table_equals_analyze(csv: Path) -> None:
    import contextlib
    import io

    table = pd.read_csv(csv)
    assert len(table) >= 25 and table["top1"].notna().sum() >= 25
    for _, row in table.iterrows():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["analyze", row["model"], "--format", "json"]) == 0
        totals = json.loads(out.getvalue())["totals"]
        for key in ("params", "macs", "peak_activation_bytes", "training_bytes"):
            assert row[key] == totals[key], (row["model"], key, row[key], totals[key])
        assert "x".join(map(str, totals["input_shape"])) == row["input"]
    assert os.path.getsize(csv) > 0
