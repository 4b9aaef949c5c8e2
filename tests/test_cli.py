"""The command line, run as a user runs it: ``python -m facekit …`` in a separate process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def run(*args: str, cwd, cache=None) -> subprocess.CompletedProcess:
    """``python -m facekit ARGS`` from ``cwd`` (not the project), with the landmark cache kept in tmp."""
    env = dict(os.environ, FACEKIT_CACHE=str(cache or cwd / "env-cache"))
    env.pop("FACEKIT_DATA", None)
    return subprocess.run([sys.executable, "-m", "facekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=300)


def _summary(stdout: str) -> dict:
    """The JSON summary ``index`` prints first."""
    return json.JSONDecoder().raw_decode(stdout.lstrip())[0]


def test_index_aihub_sample_to_csv(aihub_root, tmp_path):
    """Summary on stdout, each problem on stderr, and the whole index as a UTF-8 CSV."""
    out = tmp_path / "reports" / "index.csv"
    result = run("index", str(aihub_root), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = _summary(result.stdout)
    assert (info["members"], info["usable_photos"], info["people"], info["shared_people"]) == (1174, 1173, 135, 6)
    assert "Thumbs.db" in result.stderr and "not an image" in result.stderr
    table = pd.read_csv(out, encoding="utf-8-sig")
    assert len(table) == 1174
    assert table["name"].str.contains("_중립_").sum() == 524 + 135  # the truncated and blank members included
    assert f"wrote {out}" in result.stdout


def test_index_demo(tmp_path):
    """``index demo`` summarises the built-in synthetic source (120 people × 2 emotions × 8)."""
    result = run("index", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = _summary(result.stdout)
    assert info["members"] == info["usable_photos"] == 120 * 2 * 8
    assert info["people"] == 120 and info["shared_people"] > 0


def test_wrong_path_exits_2_and_names_it(tmp_path):
    """A missing DATA path: exit status 2 and a one-line error naming it, no traceback."""
    missing = tmp_path / "no" / "such" / "AIHub"
    for command in ("index", "extract"):
        result = run(command, str(missing), cwd=tmp_path)
        assert result.returncode == 2
        assert str(missing) in result.stderr and "error:" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_label_map_exits_2(tmp_path):
    """A malformed --label-map is a usage error (exit 2), not a crash."""
    result = run("index", str(tmp_path), "--pattern", r"(?P<person>\w+)_(?P<label>\w+)", "--label-map", "NE",
                 cwd=tmp_path)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr


@pytest.fixture(scope="module")
def jaffe_extract(jaffe_root, tmp_path_factory):
    """``extract`` on JAFFE, 2 photos per emotion (14), twice, into the same cache."""
    cwd = tmp_path_factory.mktemp("cli")
    cache, out = cwd / "cache", cwd / "out"
    args = ("extract", str(jaffe_root), "--per-zip", "2", "--workers", "1", "--cache", str(cache), "--out", str(out))
    first = run(*args, cwd=cwd)
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    landmarks = np.load(out / "landmarks.npy")
    second = run(*args, cwd=cwd)
    return first, second, files, landmarks, cache, out


def test_extract_writes_table_and_landmarks(jaffe_extract):
    """14 JAFFE photos (the cap applies per emotion in a folder): table.csv and landmarks.npy (14, 478, 3)."""
    first, _, files, landmarks, cache, out = jaffe_extract
    assert first.returncode == 0, first.stderr
    assert landmarks.shape == (14, 478, 3) and landmarks.dtype == np.float32
    # keep_default_na=False: JAFFE has a person called "NA", which pandas would read as missing
    table = pd.read_csv(out / "table.csv", encoding="utf-8-sig", keep_default_na=False)
    assert len(table) == 14 and (table["status"] == "ok").all()
    assert (table.groupby("emotion").size() == 2).all() and table["emotion"].nunique() == 7
    assert (table[["width", "height"]] == 256).all().all()
    assert (table.groupby("emotion")["person"].nunique() == 2).all()  # the cap spreads over people
    assert np.isfinite(landmarks).all() and landmarks[..., :2].max() > 1  # pixel units
    assert any(p.suffix == ".npz" for p in files) and all(str(p).startswith(str(cache)) for p in files)
    assert '"ok": 14' in first.stdout


def test_second_extract_is_all_cached(jaffe_extract):
    """The rerun writes nothing to the cache (every photo was found there) and gives the same arrays."""
    first, second, files, landmarks, cache, out = jaffe_extract
    assert second.returncode == 0, second.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == files
    assert np.array_equal(np.load(out / "landmarks.npy"), landmarks)
    assert '"ok": 14' in second.stdout
    assert "FaceMesh" in first.stderr and "FaceMesh" not in second.stderr  # no progress bar: nothing to do
