"""The tutorial notebook runs end to end (h5ad → dataset → cohort → fine-tuned model → predictions on new
cells → signaling network) on a small setting, and its figures are produced inline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path, data_dir):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "the tutorial needs exactly one cell tagged 'parameters'"
    out = tmp_path / "tutorial"
    params[0].source = (f"DATA = {str(data_dir)!r}\nOUT = {str(out)!r}\nCELLS_PER_METACELL = 10\nEPOCHS = 4\n")
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 4  # dataset summary, training curve + confusion, UMAPs, signaling network

    results = json.loads((out / "tutorial_results.json").read_text())
    assert results["n_metacells"] > 50
    # stimulated vs control is an easy contrast: the unseen cells must be called far above the majority class
    assert results["new_cells_accuracy"] > max(0.8, results["new_cells_majority"] + 0.2)
    assert results["test_macro_f1"] > 0.8
    network = set(results["network_genes"])
    assert len(network) >= 5 and network & {"ISG15", "MX1", "IFIT1", "IFIT3", "OAS1", "RSAD2", "CXCL10", "IFI6"}
    for f in ("dataset/build_info.json", "model/config.json", "signaling/summary.json",
              "signaling/evidence_network/signaling_network.html"):
        assert (out / f).exists(), f
