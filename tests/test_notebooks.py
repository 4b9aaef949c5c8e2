"""nbval runs every notebook in smoke mode (FACEKIT_SMOKE=1, the same code path with
small numbers): once on the built-in demo data and once on the AI Hub-layout sample
in ../shared/datasets (skipped where that folder is absent).

Each run is a separate ``pytest --nbval-lax`` process so that the data setting
(an environment variable the notebooks read in their first cell) differs per run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facekit.paths import PROJECT_ROOT, shared_datasets

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
DATASETS = {"demo": None, "aihub_sample": "aihub_sample"}


@pytest.mark.parametrize("data", list(DATASETS))
def test_notebooks_run_in_order(data: str, tmp_path: Path):
    """All notebooks, in order, in one nbval session: 04 evaluates the checkpoint 03 saved."""
    env = {k: v for k, v in os.environ.items() if k != "FACEKIT_DATA"}
    if DATASETS[data]:
        root = shared_datasets() / DATASETS[data]
        if not root.is_dir():
            pytest.skip(f"{root} is absent (set FACEKIT_SHARED_DATA to the shared datasets)")
        env["FACEKIT_DATA"] = str(root)
    env.update(FACEKIT_SMOKE="1", FACEKIT_CACHE=str(tmp_path / "cache"), FACEKIT_REPORTS=str(tmp_path / "reports"),
               FACEKIT_WEIGHTS=str(tmp_path / "weights"), MPLBACKEND="agg")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
         "-p", "no:cacheprovider", "-v", "-o", "addopts=", *map(str, NOTEBOOKS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400)
    tail = (proc.stdout + proc.stderr)[-8000:]
    assert proc.returncode == 0, f"notebooks on {data} failed:\n{tail}"
    for nb in NOTEBOOKS:
        assert nb.stem in proc.stdout, f"{nb.name} did not run:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
    # notebook 03 saves the plain checkpoint and its personal-neutral twin, which notebook 05's Calibrate loads
    assert (tmp_path / "weights" / "model_binary.pt").is_file()
    assert (tmp_path / "weights" / "model_binary_personal.pt").is_file()
    if any(nb.name.startswith("04") for nb in NOTEBOOKS):
        metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
        assert metrics["task"] == "binary" and metrics["label_policy"] == "uploader"
        assert {"split", "counts", "test", "comparison"} <= set(metrics)
        # the baselines beside the model, on the same split: coordinates and the expression measures alike
        assert {"majority class", "logistic regression", "logistic regression, expression measures",
                "ResNet MLP, expression measures", "no skip connections"} <= set(metrics["comparison"])
        # the variants' rows were kept while they trained, and dropped once metrics.json held them
        assert not (tmp_path / "reports" / "comparison.partial").exists()
        assert not (tmp_path / "reports" / "protocols.partial").exists()
        # every test photo's row, from the same predictions as the metrics
        from facekit.crossval import read_predictions

        photos = read_predictions(tmp_path / "reports" / "test_predictions.csv")
        labelled = photos[photos["label"].notna()]
        assert len(labelled) == metrics["test"]["n"] and labelled["member"].notna().all()
        assert labelled["correct"].mean() == pytest.approx(metrics["test"]["accuracy"])
        assert (photos["label"].isna().sum() == metrics["test"].get("n_other_test", 0))


def test_notebooks_are_committed_clean():
    """Outputs stripped, and a parameters-tagged first code cell with the smoke switch."""
    import nbformat

    assert [nb.name[:2] for nb in NOTEBOOKS][:4] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell not tagged"
        assert "FACEKIT_SMOKE" in code[0].source and "FACEKIT_DATA" in code[0].source
