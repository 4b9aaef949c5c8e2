"""Extraction past one machine: a Dask distributed cluster's executor gives the landmarks of a local run.

``facekit.extract.extract(..., executor=client.get_executor())`` is the documented
way to run on a cluster (README, "Past one machine").  Here the cluster is a
``LocalCluster`` of two worker processes with one thread each; the photos are real
faces: the bundled astronaut photo's variants (some stored EXIF-rotated) in an AI
Hub-layout ZIP, and a sample of ``../shared/datasets/aihub_sample`` where present.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from builders import jpeg_bytes, write_zip

from facekit import demo
from facekit.extract import extract
from facekit.index import index_aihub
from facekit.sample import sample

distributed = pytest.importorskip("distributed", reason="the 'cluster' extra (dask distributed) is not installed")


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, on this machine."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def variants_index(tmp_path_factory):
    """An AI Hub root holding the astronaut photo's variants: size, position, aspect ratio, rotation;
    every third one stored EXIF-rotated."""
    root = tmp_path_factory.mktemp("aihub")
    photos = {}
    for i, rgb in enumerate(demo.photo_variants(demo.portrait()).values()):
        orientation = (1, 1, 6, 1, 1, 8, 1, 1, 3)[i % 9]
        name = f"{'ab' * 32}_여_30_중립_실내_202101021655{i:02d}-001-{i:03d}.jpg"
        photos[name] = jpeg_bytes(rgb, orientation=orientation)
    write_zip(root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip", photos)
    return index_aihub(root)


def _mesh_probe():
    """On a worker: (process id, FaceMesh instances this thread held before, id of its FaceMesh)."""
    import facekit.extract as ex

    before = len(ex._LOCAL.__dict__.get("meshes", {}))
    return os.getpid(), before, id(ex.face_mesh())


def _same_as_local(index: pd.DataFrame, client, tmp_path) -> pd.DataFrame:
    local, lm_local = extract(index, workers=1, cache=tmp_path / "local", progress=False)
    remote, lm_remote = extract(index, executor=client.get_executor(), chunk_size=2, cache=tmp_path / "dask",
                                progress=False)
    pd.testing.assert_series_equal(remote["status"], local["status"])
    pd.testing.assert_series_equal(remote["reason"], local["reason"])
    np.testing.assert_allclose(lm_remote, lm_local, atol=1e-3)  # NaN rows (no landmarks) compare equal
    return remote


def test_dask_matches_local_on_demo_variants(variants_index, client, tmp_path):
    """Same statuses and landmarks as a run in this process; the upright, shifted and padded faces are found."""
    table = _same_as_local(variants_index, client, tmp_path)
    assert (table["status"] == "ok").sum() >= 6


def test_each_worker_thread_keeps_one_facemesh(variants_index, client, tmp_path):
    """A worker thread builds its FaceMesh once and reuses it for every later task (Dask's worker threads live on)."""
    extract(variants_index, executor=client.get_executor(), chunk_size=1, cache=tmp_path, progress=False)
    executor = client.get_executor(pure=False)
    probes = [f.result() for f in [executor.submit(_mesh_probe) for _ in range(12)]]
    meshes: dict[int, set] = {}
    for pid, _before, mesh in probes:
        meshes.setdefault(pid, set()).add(mesh)
    assert all(len(ids) == 1 for ids in meshes.values()), f"a worker built more than one FaceMesh: {meshes}"
    held = [before for _pid, before, _mesh in probes]
    assert max(held) == 1  # one FaceMesh per thread, the extraction's own settings
    assert held.count(0) <= len(meshes)  # built at most once per worker: the first task on a thread without one


def test_dask_matches_local_on_aihub_sample(aihub_root, client, tmp_path):
    """Real photos in the real layout (CP949 names, EXIF-rotated, a truncated JPEG, faceless CK+ frames)."""
    index = index_aihub(aihub_root)
    chosen = sample(index, per_container=3, seed=0)
    bad = index[index["name"].str.startswith(("ffff", "eeee"))]  # the truncated and the blank photo
    table = _same_as_local(pd.concat([chosen, bad]), client, tmp_path)
    assert {"ok", "unreadable", "no_face"} <= set(table["status"])
