"""Stage 3, extract: decode (EXIF, draft mode), FaceMesh, pixel units, statuses, cache and resume.

The face is real: scikit-image's public-domain astronaut photo (``facekit.demo.portrait()``),
saved by the tests as JPEGs of every kind the kit must handle.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import jpeg_bytes, on_canvas, write_zip
from PIL import Image

import facekit.extract as ex
from facekit.extract import ExtractSettings, decode, extract, failures, landmarks_from_bytes
from facekit.index import index_aihub
from facekit.normalize import centroid_size
from facekit.sample import sample
from facekit.sources import FolderSpec, index_folder, index_preset

W, H = 640, 480  # the upright fixture photo: landscape, so a 90° EXIF turn swaps the stored size
PATTERN = r"^(?P<person>[a-z]+)_(?P<label>[a-z]+)_(?P<variant>\w+)\.jpg$"
EXPECTED = {
    "astro_neutral_upright.jpg": "ok",
    "astro_neutral_exif6.jpg": "ok",
    "astro_neutral_exif8.jpg": "ok",
    "astro_neutral_exif3.jpg": "ok",
    "astro_neutral_truncated.jpg": "unreadable",
    "astro_neutral_noise.jpg": "not_image",
    "astro_neutral_blank.jpg": "no_face",
    "astro_neutral_twofaces.jpg": "multiple_faces",
    "README.jpg": "skipped",  # off the folder pattern: the index gives it a problem
}
# Landmarks of the same face decoded another way (stored EXIF-rotated, or draft-decoded at
# reduced size) must agree in x/y within these fractions of the face's size (its centroid
# size): (mean, max) point distance.  FaceMesh itself moves by up to ~3 % (max) when the
# same face is JPEG-compressed in another orientation; measured means are 0.2–1.5 %.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.02, 0.05


@pytest.fixture(scope="module")
def upright(portrait) -> np.ndarray:
    return on_canvas(portrait, (W, H), at=(100, 0))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, portrait, upright):
    folder = tmp_path_factory.mktemp("photos")
    good = jpeg_bytes(upright)
    files = {
        "astro_neutral_upright.jpg": good,
        "astro_neutral_exif6.jpg": jpeg_bytes(upright, orientation=6),
        "astro_neutral_exif8.jpg": jpeg_bytes(upright, orientation=8),
        "astro_neutral_exif3.jpg": jpeg_bytes(upright, orientation=3),
        "astro_neutral_truncated.jpg": good[: len(good) // 3],
        "astro_neutral_noise.jpg": np.random.default_rng(0).bytes(20_000),
        "astro_neutral_blank.jpg": jpeg_bytes(np.full((H, W, 3), 128, np.uint8)),
        "astro_neutral_twofaces.jpg": jpeg_bytes(np.concatenate([portrait, portrait], axis=1)),
        "README.jpg": good,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def folder_index(photo_dir) -> pd.DataFrame:
    return index_folder(photo_dir, FolderSpec(PATTERN))


@pytest.fixture(scope="module")
def extracted(folder_index, tmp_path_factory):
    """One in-process run over the fixture folder: (table, landmarks, {member: row})."""
    table, lm = extract(folder_index, workers=1, cache=tmp_path_factory.mktemp("cache"), progress=False)
    return table, lm, {m: i for i, m in enumerate(table["member"])}


def _counting(monkeypatch, name: str = "landmarks_from_bytes") -> list:
    """Record every call of ``facekit.extract.<name>`` made in this process."""
    calls: list = []
    real = getattr(ex, name)

    def wrapper(*args, **kwargs):
        calls.append(args[:2] if name == "_extract_chunk" else 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, name, wrapper)
    return calls


def assert_same_face(landmarks: np.ndarray, reference: np.ndarray, what: str = "") -> None:
    """x/y point distances within MEAN_TOLERANCE / MAX_TOLERANCE of the reference face's size."""
    size = float(centroid_size(reference))
    d = np.linalg.norm(landmarks[:, :2] - reference[:, :2], axis=1) / size
    assert d.mean() < MEAN_TOLERANCE and d.max() < MAX_TOLERANCE, f"{what}: mean {d.mean():.3f}, max {d.max():.3f}"


# ----------------------------------------------------------------------------- statuses

def test_statuses(extracted):
    """Good photos give landmarks; each kind of bad photo gets its own status."""
    table, _, row = extracted
    assert {m: table.loc[row[m], "status"] for m in EXPECTED} == EXPECTED
    assert set(table["status"]) <= set(ex.STATUSES)


def test_every_photo_without_landmarks_says_why(extracted):
    """Non-ok rows: a non-empty reason, NaN landmarks, size 0; ok rows: no reason, finite landmarks."""
    table, lm, row = extracted
    bad = table["status"] != "ok"
    assert table.loc[bad, "reason"].str.len().gt(0).all()
    assert (table.loc[~bad, "reason"] == "").all()
    assert np.isnan(lm[bad.to_numpy()]).all() and np.isfinite(lm[~bad.to_numpy()]).all()
    assert (table.loc[bad, ["width", "height"]] == 0).all().all()
    assert table.loc[row["README.jpg"], "reason"] == "path does not match the pattern"
    assert "truncated" in table.loc[row["astro_neutral_truncated.jpg"], "reason"]
    assert "2 faces" in table.loc[row["astro_neutral_twofaces.jpg"], "reason"]
    assert failures(table)["name"].tolist() == table.loc[bad, "name"].tolist()


def test_table_keeps_the_index_rows_and_order(folder_index, extracted):
    """One row and one (478, 3) float32 landmark block per index row, in the index's order."""
    table, lm, _ = extracted
    assert lm.shape == (len(folder_index), 478, 3) and lm.dtype == np.float32
    assert table["member"].tolist() == folder_index["member"].tolist()


# ----------------------------------------------------------------------------- geometry

def test_landmarks_are_pixels_of_the_upright_photo(extracted):
    """x in [0, W], y in [0, H] of the full-size upright photo; not MediaPipe's [0, 1] units."""
    table, lm, _ = extracted
    ok = (table["status"] == "ok").to_numpy()
    assert (table.loc[ok, ["width", "height"]].to_numpy() == [W, H]).all()
    face = lm[ok]
    assert (face[..., 0] >= 0).all() and (face[..., 0] <= W).all()
    assert (face[..., 1] >= 0).all() and (face[..., 1] <= H).all()
    assert not ((face[..., :2] >= 0) & (face[..., :2] <= 1)).all()
    assert (np.ptp(face[..., 1], axis=1) > 0.4 * H).all()  # a face hundreds of pixels tall


def test_exif_orientation_is_applied(extracted):
    """The same photo stored rotated with EXIF Orientation 6, 8 and 3 gives the upright landmarks."""
    table, lm, row = extracted
    reference = lm[row["astro_neutral_upright.jpg"]]
    size = float(centroid_size(reference))
    for orientation in (6, 8, 3):
        rotated = lm[row[f"astro_neutral_exif{orientation}.jpg"]]
        assert_same_face(rotated, reference, f"EXIF {orientation}")
        assert np.abs(rotated[:, 2] - reference[:, 2]).mean() < MEAN_TOLERANCE * size  # z: same units


def test_landmarks_from_bytes_matches_extract(extracted, photo_dir):
    """The single-photo function (used by the live demo) gives what the batch run gave."""
    table, lm, row = extracted
    single, w, h = landmarks_from_bytes((photo_dir / "astro_neutral_exif6.jpg").read_bytes())
    assert (w, h) == (W, H)
    np.testing.assert_allclose(single, lm[row["astro_neutral_exif6.jpg"]], atol=1e-3)


def test_draft_decoding_of_a_large_jpeg(portrait):
    """A 3000×2250 photo decodes at 1/2 scale in draft mode, and its landmarks match the full-size
    decode within the stated tolerances, also when stored rotated (EXIF 6)."""
    face = np.asarray(Image.fromarray(portrait).resize((1500, 1500), Image.LANCZOS))
    big = on_canvas(face, (3000, 2250), at=(800, 400))
    data, rotated = jpeg_bytes(big), jpeg_bytes(big, orientation=6)
    rgb, w, h = decode(data, draft_long_side=1024)
    assert rgb.shape == (1125, 1500, 3) and (w, h) == (3000, 2250)
    assert decode(data, draft_long_side=None)[0].shape == (2250, 3000, 3)
    assert Image.open(io.BytesIO(rotated)).size == (2250, 3000)  # stored turned, upright after EXIF
    rgb, w, h = decode(rotated, draft_long_side=1024)
    assert rgb.shape == (1125, 1500, 3) and (w, h) == (3000, 2250)

    full, *_ = landmarks_from_bytes(data, ExtractSettings(draft_long_side=None))
    draft, w, h = landmarks_from_bytes(data, ExtractSettings(draft_long_side=1024))
    assert (w, h) == (3000, 2250)
    assert_same_face(draft, full, "draft")
    # stored turned, EXIF 6: draft-decoded at the stored size, then turned upright and scaled back to full size
    upright_of_rotated, w, h = landmarks_from_bytes(rotated, ExtractSettings(draft_long_side=1024))
    assert (w, h) == (3000, 2250)
    assert_same_face(upright_of_rotated, full, "draft, EXIF 6")


def test_a_large_labelled_face_is_decoded_coarser(portrait):
    """With a labelled face box whose shorter side stays ≥ min_face_side px at 1/4 scale, a 3000×2250 photo is
    decoded at 1/4 instead of 1/2, and its landmarks match the full-size decode's; a degenerate box, no box,
    or min_face_side=None leave the scale as draft_long_side alone sets it."""
    face = np.asarray(Image.fromarray(portrait).resize((2200, 2200), Image.LANCZOS))
    data = jpeg_bytes(on_canvas(face, (3000, 2250), at=(400, 25)))
    full, *_ = landmarks_from_bytes(data, ExtractSettings(draft_long_side=None))
    box = (*full[:, :2].min(0), *full[:, :2].max(0))
    side = min(box[2] - box[0], box[3] - box[1])
    assert side >= 4 * ExtractSettings().min_face_side  # large enough for 1/4 at the default
    assert decode(data, 1024, box, 256)[0].shape == (563, 750, 3)  # 1/4 (rounded up, as libjpeg does)
    half = (1125, 1500, 3)
    for other in (None, (0, 0, 3000, 10), (np.nan, 0, 2000, 2000), (-10, -10, 4000, 4000)):
        assert decode(data, 1024, other, 256)[0].shape == half, other
    assert decode(data, 1024, box, None)[0].shape == half
    assert decode(data, None, box, 256)[0].shape == (2250, 3000, 3)  # no draft: full size, whatever the box
    coarse, w, h = landmarks_from_bytes(data, ExtractSettings(), box)
    assert (w, h) == (3000, 2250)
    assert_same_face(coarse, full, "1/4 scale, labelled box")
    assert ExtractSettings(min_face_side=None).key() != ExtractSettings().key()


# ----------------------------------------------------------------------------- cache

def test_reading_the_cache_holds_one_copy_of_a_part(tmp_path):
    """A cache part of n photos is read into memory once, not once per photo (which made a cache-hit run
    of 1,173 photos peak at 841 MB, and would need n² landmark arrays for a 5,000-photo ZIP)."""
    import tracemalloc

    n = 150
    rng = np.random.default_rng(0)
    results = [(f"m{i}.jpg", "ok", "", rng.random((ex.N_LANDMARKS, 3), dtype=np.float32), 4032, 3024, True)
               for i in range(n)]
    results[7] = ("m7.jpg", "no_face", "no face found", None, 0, 0, True)
    ex._save_part(tmp_path, [f"key{i}" for i in range(n)], results)
    part_bytes = n * ex.N_LANDMARKS * 3 * 4
    tracemalloc.start()
    try:
        entries = ex._load_cache(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * part_bytes, f"{peak / 2**20:.1f} MB to read a part of {part_bytes / 2**20:.2f} MB"
    assert len(entries) == n
    status, reason, lm, w, h = entries["key3"]
    assert (status, reason, w, h) == ("ok", "", 4032, 3024)
    np.testing.assert_array_equal(lm, results[3][3])
    assert entries["key7"][:2] == ("no_face", "no face found") and np.isnan(entries["key7"][2]).all()


def test_second_run_does_no_facemesh_work(folder_index, extracted, tmp_path, monkeypatch):
    """A rerun reads every photo from the cache (no decoding, no FaceMesh) and returns the same arrays."""
    calls = _counting(monkeypatch)
    first, lm1 = extract(folder_index, workers=1, cache=tmp_path, progress=False)
    assert len(calls) == folder_index["problem"].isna().sum() == 8
    second, lm2 = extract(folder_index, workers=1, cache=tmp_path, progress=False)
    assert len(calls) == 8
    pd.testing.assert_frame_equal(first.drop(columns="from_cache"), second.drop(columns="from_cache"))
    usable = folder_index["problem"].isna().to_numpy()
    assert not first["from_cache"].any() and second["from_cache"].to_numpy().tolist() == usable.tolist()
    assert np.array_equal(lm1, lm2, equal_nan=True)
    # and the cached run equals a run in another cache (FaceMesh in static mode is deterministic)
    np.testing.assert_allclose(lm2, extracted[1], atol=1e-3)


def test_interrupted_run_resumes(folder_index, extracted, tmp_path, monkeypatch):
    """Ctrl-C after the first chunk: the rerun does only the photos that were not finished."""
    real = ex._extract_chunk
    seen: list[list[str]] = []

    def interrupted(container, members, *args, **kwargs):
        if seen:
            raise KeyboardInterrupt
        seen.append(list(members))
        return real(container, members, *args, **kwargs)

    monkeypatch.setattr(ex, "_extract_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(folder_index, workers=1, chunk_size=3, cache=tmp_path, progress=False)
    assert len(seen) == 1 and len(seen[0]) == 3

    monkeypatch.setattr(ex, "_extract_chunk", real)
    calls = _counting(monkeypatch, "_extract_chunk")
    table, lm = extract(folder_index, workers=1, chunk_size=3, cache=tmp_path, progress=False)
    redone = [m for _container, members in calls for m in members]
    usable = folder_index.loc[folder_index["problem"].isna(), "member"]
    assert sorted(redone) == sorted(set(usable) - set(seen[0]))
    pd.testing.assert_series_equal(table["status"], extracted[0]["status"])
    np.testing.assert_allclose(lm, extracted[1], atol=1e-3)


def test_pool_workers_exit_when_the_command_is_killed(aihub_root, tmp_path):
    """SIGKILL to ``python -m facekit extract`` (the out-of-memory killer, ``kill -9``) gives it no chance to
    stop its worker processes: they notice that their parent is gone and exit, instead of lingering."""
    import signal
    import subprocess
    import sys
    import time

    def workers(parent: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                    found.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        return found

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "facekit", "extract", str(aihub_root), "--per-zip", "0",
                             "--workers", "2", "--cache", str(tmp_path / "cache")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pids: list[int] = []
    try:
        deadline = time.time() + 120
        while len(pids) < 2 and proc.poll() is None and time.time() < deadline:
            pids = workers(proc.pid)
            time.sleep(0.1)
        assert len(pids) == 2 and proc.poll() is None, "the two workers did not start"
        time.sleep(1)  # they are working
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as the kernel's OOM killer does
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while any(map(running, pids)) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(map(running, pids)), "worker processes outlived the killed command"
    finally:
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_changed_photo_is_redone(photo_dir, tmp_path, monkeypatch):
    """The cache is keyed by content (size and mtime for folders): an edited photo is redone, alone."""
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("astro_neutral_upright.jpg", "astro_neutral_blank.jpg"):
        (folder / name).write_bytes((photo_dir / name).read_bytes())
    spec = FolderSpec(PATTERN)
    table, _ = extract(index_folder(folder, spec), workers=1, cache=tmp_path / "cache", progress=False)
    assert table["status"].tolist() == ["no_face", "ok"]  # sorted by name

    (folder / "astro_neutral_blank.jpg").write_bytes((photo_dir / "astro_neutral_exif8.jpg").read_bytes())
    calls = _counting(monkeypatch)
    table, _ = extract(index_folder(folder, spec), workers=1, cache=tmp_path / "cache", progress=False)
    assert len(calls) == 1
    assert table["status"].tolist() == ["ok", "ok"]


def test_an_error_that_is_not_the_photos_is_reported_and_tried_again(photo_dir, tmp_path, monkeypatch):
    """A failure other than a bad photo (here FaceMesh's graph failing once) is reported on the photo's row, and
    not kept in the cache: the next run extracts the photo again instead of serving the failure for good."""
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "astro_neutral_upright.jpg").write_bytes((photo_dir / "astro_neutral_upright.jpg").read_bytes())
    real = ex.landmarks_from_bytes

    def failing(*args, **kwargs):
        raise RuntimeError("Graph has errors: Packet timestamp mismatch")

    monkeypatch.setattr(ex, "landmarks_from_bytes", failing)
    index = index_folder(folder, FolderSpec(PATTERN))
    table, _ = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert table["status"].tolist() == ["unreadable"]
    assert "Packet timestamp mismatch" in table["reason"][0] and "tries this photo again" in table["reason"][0]
    monkeypatch.setattr(ex, "landmarks_from_bytes", real)
    calls = _counting(monkeypatch)
    table, lm = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert len(calls) == 1 and table["status"].tolist() == ["ok"] and not table["from_cache"][0]
    assert np.isfinite(lm[0]).all()


def test_a_folder_copied_without_its_times_is_found_by_content(photo_dir, tmp_path, monkeypatch):
    """A copy that does not keep mtimes (cp without -p, a download, a new disk) misses the size-and-mtime
    key: each photo is then found by its own CRC, nothing is extracted again, and the next run hits directly.
    A photo whose bytes changed (same name, same size) is still redone."""
    import os
    import shutil

    names = ("astro_neutral_upright.jpg", "astro_neutral_exif6.jpg", "astro_neutral_blank.jpg",
             "astro_neutral_noise.jpg")
    original = tmp_path / "first" / "photos"
    original.mkdir(parents=True)
    for name in names:
        (original / name).write_bytes((photo_dir / name).read_bytes())
    spec, cache = FolderSpec(PATTERN), tmp_path / "cache"
    first, lm_first = extract(index_folder(original, spec), workers=1, cache=cache, progress=False)
    assert not first["from_cache"].any() and sorted(first["status"]) == ["no_face", "not_image", "ok", "ok"]
    aliases: dict = {}
    entries = ex._load_cache(ex._cache_folder(str(original), ExtractSettings(), cache), aliases)
    assert len(entries) == len(aliases) == len(names)  # each photo stored once, its CRC key beside it

    copy = tmp_path / "second" / "photos"  # the same folder name: the same cache, as for a moved dataset
    shutil.copytree(original, copy, copy_function=shutil.copyfile)  # new mtimes
    for i, name in enumerate(names):
        os.utime(copy / name, ns=(10**18 + i, 10**18 + i))  # surely unlike the originals
    index = index_folder(copy, spec)
    assert (index["mtime_ns"].to_numpy() != first["mtime_ns"].to_numpy()).all()
    chunks = _counting(monkeypatch, "_extract_chunk")
    crcs = _counting(monkeypatch, "_file_crc")
    again, lm_again = extract(index, workers=1, cache=cache, progress=False)
    assert chunks == [] and len(crcs) == len(names)  # found by content, nothing extracted
    assert again["from_cache"].all()
    assert again["status"].tolist() == first["status"].tolist() and again["reason"].tolist() == first["reason"].tolist()
    np.testing.assert_array_equal(lm_again, lm_first)
    entries = ex._load_cache(ex._cache_folder(str(copy), ExtractSettings(), cache), aliases)
    assert sorted(entries) == sorted(ex._content_keys(index)) and len(aliases) == len(names)  # moved, not copied

    crcs.clear()
    third, _ = extract(index_folder(copy, spec), workers=1, cache=cache, progress=False)
    assert third["from_cache"].all() and crcs == [] and chunks == []  # today's mtimes are keys now

    edited = bytearray((copy / "astro_neutral_upright.jpg").read_bytes())
    edited[len(edited) // 2] ^= 0xFF  # same name, same size, other content
    (copy / "astro_neutral_upright.jpg").write_bytes(bytes(edited))
    os.utime(copy / "astro_neutral_upright.jpg", ns=(2 * 10**18, 2 * 10**18))
    fourth, _ = extract(index_folder(copy, spec), workers=1, cache=cache, progress=False)
    assert [m for c in chunks for m in c[1]] == ["astro_neutral_upright.jpg"]
    assert fourth.set_index("member")["from_cache"].to_dict() == {
        "astro_neutral_blank.jpg": True, "astro_neutral_exif6.jpg": True, "astro_neutral_noise.jpg": True,
        "astro_neutral_upright.jpg": False}

    # a photo new to the folder has no name-and-size twin under a CRC key: it is extracted, not hashed first
    (copy / "astro_anxious_new.jpg").write_bytes((photo_dir / "astro_neutral_upright.jpg").read_bytes())
    chunks.clear(), crcs.clear()
    fifth, _ = extract(index_folder(copy, spec), workers=1, cache=cache, progress=False)
    assert [m for c in chunks for m in c[1]] == ["astro_anxious_new.jpg"] and crcs == []
    assert fifth.set_index("member")["from_cache"].sum() == len(names)


def test_changed_setting_uses_another_cache(folder_index, tmp_path, monkeypatch):
    """Every ExtractSettings field is part of the cache key: draft_long_side=None is a fresh run."""
    extract(folder_index, workers=1, cache=tmp_path, progress=False)
    calls = _counting(monkeypatch)
    full = ExtractSettings(draft_long_side=None)
    assert full.key() != ExtractSettings().key()
    extract(folder_index, full, workers=1, cache=tmp_path, progress=False)
    assert len(calls) == 8
    assert len(list((tmp_path / "landmarks").iterdir())) == 2
    extract(folder_index, full, workers=1, cache=tmp_path, progress=False)
    assert len(calls) == 8


# ----------------------------------------------------------------------------- executors

def test_thread_pool_executor_gives_the_same_landmarks(folder_index, extracted, tmp_path):
    """Any concurrent.futures executor can run the work; threads must not share one FaceMesh."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        table, lm = extract(folder_index, executor=pool, chunk_size=1, cache=tmp_path, progress=False)
    pd.testing.assert_series_equal(table["status"], extracted[0]["status"])
    np.testing.assert_allclose(lm, extracted[1], atol=1e-3)


def test_process_pool_gives_the_same_landmarks(folder_index, extracted, tmp_path, monkeypatch):
    """workers=2 runs the chunks in spawned processes (FaceMesh in this process is never called)."""
    def not_here(*args, **kwargs):
        raise AssertionError("FaceMesh ran in the parent process")

    monkeypatch.setattr(ex, "landmarks_from_bytes", not_here)
    table, lm = extract(folder_index, workers=2, chunk_size=2, cache=tmp_path, progress=False)
    pd.testing.assert_series_equal(table["status"], extracted[0]["status"])
    np.testing.assert_allclose(lm, extracted[1], atol=1e-3)


# ----------------------------------------------------------------------------- AI Hub ZIPs

def _aihub_name(person: str, emotion: str, n: int, ext: str = ".jpg") -> str:
    return f"{person * 32}_여_20_{emotion}_교통&이동수단(엘리베이터 포함)_2021020216550{n}-001-00{n}{ext}"


@pytest.fixture
def zip_root(tmp_path, portrait, upright):
    """A tiny AI Hub root: the portrait upright (.jpg), EXIF-rotated (.jpeg), and two-face photos
    whose labelled box points at the right-hand face, or at neither."""
    two = np.concatenate([portrait, portrait], axis=1)
    names = [_aihub_name("a1", "중립", 1), _aihub_name("b2", "중립", 2, ".jpeg"),
             _aihub_name("c3", "중립", 3), _aihub_name("d4", "중립", 4)]
    write_zip(tmp_path / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip",
              dict(zip(names, [jpeg_bytes(upright), jpeg_bytes(upright, 8), jpeg_bytes(two), jpeg_bytes(two)])))
    boxes = [(100, 0, 580, 480), (100, 0, 580, 480), (560, 40, 900, 460), (0, 0, 30, 30)]
    corners = ("minX", "minY", "maxX", "maxY")
    records = [{"filename": n, "annot_A": {"faceExp": "중립", "boxes": dict(zip(corners, b))}}
               for n, b in zip(names, boxes)]
    write_zip(tmp_path / "Training" / "[라벨]EMOIMG_중립_TRAIN.zip",
              {"img_emotion_training_data(중립).json": json.dumps(records, ensure_ascii=False).encode("utf-8")})
    return tmp_path, names


def test_extract_from_aihub_zips(zip_root, extracted, tmp_path):
    """Members with CP949 names are read straight from the ZIP; the labelled box picks one of two faces."""
    root, names = zip_root
    index = index_aihub(root)
    table, lm = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    status = dict(zip(table["name"], table["status"]))
    assert [status[n] for n in names] == ["ok", "ok", "ok", "multiple_faces"]
    assert "none matches the labelled face box" in table.set_index("name").loc[names[3], "reason"]
    by_name = {n: lm[i] for i, n in enumerate(table["name"])}
    assert_same_face(by_name[names[1]], extracted[1][extracted[2]["astro_neutral_upright.jpg"]], "ZIP, EXIF 8")
    right_face = by_name[names[2]]
    assert right_face[:, 0].min() > 480  # the face in the right-hand copy of the portrait
    assert table.set_index("name").loc[names[2], ["width", "height"]].tolist() == [960, 480]


def test_missing_zip_is_named(zip_root, tmp_path):
    """A ZIP moved after indexing stops the run with an error that names it."""
    root, _ = zip_root
    index = index_aihub(root)
    images = root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip"
    images.rename(root / "moved.zip")
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert str(images) in str(err.value)


def test_zip_broken_after_indexing_is_reported_per_photo(zip_root, tmp_path):
    """A ZIP cut off after the index was made: its photos are unreadable, with the reason, and the run ends."""
    root, names = zip_root
    index = index_aihub(root)
    images = root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip"
    images.write_bytes(images.read_bytes()[:1000])
    table, lm = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert (table["status"] == "unreadable").all() and np.isnan(lm).all()
    assert table["reason"].str.contains("cannot open").all()


def test_container_failure_is_retried_once_the_zip_is_restored(zip_root, tmp_path):
    """A ZIP that could not be read (cut-off copy, network drive) is retried on the next run."""
    root, names = zip_root
    index = index_aihub(root)
    images = root / "Training" / "[원천]EMOIMG_중립_TRAIN_01.zip"
    good = images.read_bytes()
    images.write_bytes(good[:1000])
    extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    images.write_bytes(good)
    table, _ = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert (table["status"] != "unreadable").all()


# ----------------------------------------------------------------------------- real data

def test_real_jaffe_faces_are_found(jaffe_root, tmp_path):
    """FaceMesh finds one face in (nearly) every JAFFE photo: small grey 256×256 TIFFs."""
    table, lm = extract(index_preset("jaffe", jaffe_root), workers=1, cache=tmp_path, progress=False)
    ok = table["status"] == "ok"
    assert ok.mean() >= 0.95
    assert (table.loc[ok, ["width", "height"]] == 256).all().all()
    assert (lm[ok.to_numpy(), :, :2] >= 0).all() and (lm[ok.to_numpy(), :, :2] <= 256).all()


def _orientation(zf: zipfile.ZipFile, member: str) -> int:
    return Image.open(io.BytesIO(zf.read(member))).getexif().get(0x0112, 1)


def test_real_aihub_zip_with_bad_members(aihub_root, tmp_path):
    """중립_TRAIN_01: truncated → unreadable, Thumbs.db → skipped, blank → no_face; real faces, half of
    them stored EXIF-rotated, land inside the annotators' upright face box."""
    index = index_aihub(aihub_root)
    zipped = index[index["container"].str.endswith("[원천]EMOIMG_중립_TRAIN_01.zip")]
    bad = zipped[zipped["name"].str.startswith(("ffff", "eeee")) | (zipped["name"] == "Thumbs.db")]
    assert len(bad) == 3
    good = sample(zipped.drop(bad.index), per_container=80, seed=0)
    with zipfile.ZipFile(zipped["container"].iloc[0]) as zf:
        turned = good["member"].map(lambda m: _orientation(zf, m)) != 1
    assert turned.sum() >= 8 and (~turned).sum() >= 9
    chosen = pd.concat([bad, good[turned].head(8), good[~turned].head(9)])
    table, lm = extract(chosen, workers=1, cache=tmp_path, progress=False)

    status = dict(zip(table["name"], table["status"]))
    assert status["Thumbs.db"] == "skipped"
    assert next(s for n, s in status.items() if n.startswith("ffff")) == "unreadable"
    assert next(s for n, s in status.items() if n.startswith("eeee")) == "no_face"
    real = table.iloc[3:]
    assert (real["status"] == "ok").sum() >= 15
    for i in np.flatnonzero(table["status"] == "ok"):
        row, nose = table.iloc[i], lm[i, 1]
        x0, y0, x1, y1 = row[["box_x0", "box_y0", "box_x1", "box_y1"]].astype(float)
        margin = 0.1 * (x1 - x0)
        assert x0 - margin <= nose[0] <= x1 + margin and y0 - margin <= nose[1] <= y1 + margin, row["name"]
        assert 0 <= nose[0] <= row["width"] and 0 <= nose[1] <= row["height"]
    assert (table.iloc[3:11]["status"] == "ok").sum() >= 6  # the EXIF-rotated ones
    assert os.listdir(tmp_path / "landmarks")  # the cache went where we asked


def test_landmark_array_reads_the_wire_format_exactly(portrait):
    """The fast protobuf read gives FaceMesh's numbers bit for bit, and unusual lists take the slow route."""
    from mediapipe.framework.formats import landmark_pb2

    from facekit.extract import face_mesh, landmark_array

    face = face_mesh(True, 1).process(portrait).multi_face_landmarks[0]
    expected = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
    got = landmark_array(face)
    assert got.shape == (478, 3) and got.dtype == np.float32
    assert np.array_equal(got, expected)
    odd = landmark_pb2.NormalizedLandmarkList()
    for i in range(3):
        point = odd.landmark.add()
        point.x, point.y, point.z = 0.1 * i, 0.5, -1.0
    odd.landmark[1].visibility = 0.9  # a 20-byte record among 17-byte ones
    np.testing.assert_array_equal(landmark_array(odd), np.float32([[0, 0.5, -1], [0.1, 0.5, -1], [0.2, 0.5, -1]]))
    assert landmark_array(landmark_pb2.NormalizedLandmarkList()).shape == (0, 3)


# ----------------------------------------------------------------------------- find_faces: the graph read directly

def _real_photos(portrait) -> list[tuple[str, np.ndarray]]:
    """RGB photos with 1, 2 and no faces, plus JAFFE and AI Hub sample photos where ../shared/datasets has them."""
    from facekit.paths import shared_datasets

    photos = [("astronaut", portrait), ("two astronauts", np.concatenate([portrait, portrait[:, ::-1]], axis=1)),
              ("empty room", np.full((480, 640, 3), 96, np.uint8))]
    root = shared_datasets()
    for path in sorted((root / "jaffe").glob("*.tiff"))[:3]:
        photos.append((path.name, decode(path.read_bytes())[0]))
    for container in sorted((root / "aihub_sample").glob("*/*원천*.zip"))[:1]:
        with zipfile.ZipFile(container) as zf:
            for info in [i for i in zf.infolist() if i.filename.lower().endswith(".jpg")][:3]:
                photos.append((info.filename, decode(zf.read(info), ExtractSettings().draft_long_side)[0]))
    return photos


def _layouts(rgb: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The same pixels as a writeable array, a read-only one and a non-contiguous view into a larger one."""
    writeable = np.array(rgb)
    read_only = np.array(rgb)
    read_only.flags.writeable = False
    canvas = np.zeros((rgb.shape[0] + 4, rgb.shape[1] + 6, 3), np.uint8)
    canvas[2:-2, 3:-3] = rgb
    return [("writeable", writeable), ("read-only", read_only), ("non-contiguous", canvas[2:-2, 3:-3])]


def _public_route(rgb: np.ndarray, mesh) -> list[np.ndarray]:
    """What a researcher gets: mesh.process on a writeable copy, every landmark read as an attribute."""
    result = mesh.process(np.array(rgb))
    return [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            for face in result.multi_face_landmarks or []]


@pytest.mark.parametrize("static", [True, False], ids=["static", "tracking"])
def test_find_faces_gives_mesh_process_landmarks_bit_for_bit(portrait, static):
    """The graph driven directly (read-only view, serialised bytes read by NumPy) = mesh.process, in static and
    tracking mode, for 0, 1 and 2 faces, for every array layout; the caller's array is left as it was.  Halfway,
    both meshes are reset and called once through the public route: the timeline they share stays valid."""
    import mediapipe as mp

    def new_mesh():
        return mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=2, refine_landmarks=True,
                                               min_detection_confidence=0.5, min_tracking_confidence=0.5)

    photos = _real_photos(portrait)
    reference, kit = new_mesh(), new_mesh()
    try:
        assert ex.graph_route(kit)
        counts = {}
        for k, (name, rgb) in enumerate(photos):
            if k == len(photos) // 2:
                for mesh in (reference, kit):
                    mesh.reset()
                    mesh.process(np.array(rgb))
            for layout, frame in _layouts(rgb):
                before = (frame.flags.writeable, frame.flags.c_contiguous, frame.copy())
                expected, got = _public_route(rgb, reference), ex.find_faces(frame, kit)
                assert len(got) == len(expected), (name, layout)
                for a, b in zip(got, expected):
                    assert a.shape == (478, 3) and a.dtype == np.float32
                    assert np.array_equal(a, b), (name, layout)
                assert (frame.flags.writeable, frame.flags.c_contiguous) == before[:2], (name, layout)
                assert np.array_equal(frame, before[2])
                counts[name] = len(got)
        assert counts["astronaut"] == 1 and counts["two astronauts"] == 2 and counts["empty room"] == 0
    finally:
        reference.close()
        kit.close()


class _PublicOnly:
    """A real FaceMesh seen through its public API only, as a mediapipe without 0.10.21's internals shows it."""

    def __init__(self, mesh):
        self.process = mesh.process


def test_find_faces_falls_back_to_the_public_route_with_one_warning(portrait, monkeypatch):
    import warnings

    import mediapipe as mp

    monkeypatch.setattr(ex, "_PUBLIC_ROUTE_WARNED", False)
    direct = ex.face_mesh(True, 2)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=2, refine_landmarks=True)
    try:
        public = _PublicOnly(mesh)
        with pytest.warns(RuntimeWarning, match="0.10.21"):
            assert not ex.graph_route(public)
        for name, rgb in _real_photos(portrait)[:4]:
            for layout, frame in _layouts(rgb):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # said once, not per frame
                    got = ex.find_faces(frame, public)
                expected = ex.find_faces(frame, direct)
                assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected)), \
                    (name, layout)
                assert frame.flags.writeable == (layout != "read-only")
    finally:
        mesh.close()


def test_find_faces_refuses_what_facemesh_cannot_read(portrait):
    mesh = ex.face_mesh(True, 2)
    for bad in (portrait[:, :, 0], np.dstack([portrait, portrait[:, :, :1]]), portrait.astype(np.float32)):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) and dtype uint8"):
            ex.find_faces(bad, mesh)


def test_serialised_faces_take_the_attribute_route_when_the_layout_differs():
    """Bytes without the exact 17-byte records (visibility set) are parsed by protobuf, with the same numbers."""
    from mediapipe.framework.formats import landmark_pb2

    face = landmark_pb2.NormalizedLandmarkList()
    for i in range(3):
        point = face.landmark.add()
        point.x, point.y, point.z = 0.1 * i, 0.5, -1.0
    face.landmark[2].visibility = 0.9
    raw = face.SerializeToString()
    assert ex._wire_array(raw) is None
    np.testing.assert_array_equal(ex._serialized_array(raw), np.float32([[0, 0.5, -1], [0.1, 0.5, -1], [0.2, 0.5, -1]]))
    face.landmark[2].ClearField("visibility")
    np.testing.assert_array_equal(ex._wire_array(face.SerializeToString()), ex._serialized_array(raw))


def test_a_fresh_worker_keeps_freed_photo_memory(tmp_path):
    """A fresh process (as every extraction worker is) decoding EXIF-rotated phone photos keeps the freed
    9 MB buffers for the next photo instead of faulting them in again page by page (facekit.extract.tune_allocator)."""
    import platform
    import subprocess
    import sys
    import textwrap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator settings are glibc's")
    rng = np.random.default_rng(0)
    stored = np.linspace(0, 255, 4032, dtype=np.float32)[None, :, None] + rng.normal(0, 8, (3024, 1, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait: decoding turns it, a second full-size buffer
    Image.fromarray(np.clip(stored, 0, 255).astype(np.uint8)).save(tmp_path / "phone.jpg", quality=90,
                                                                   exif=exif.tobytes())
    code = textwrap.dedent("""
        import resource, sys
        from facekit.extract import ExtractSettings, _extract_chunk, tune_allocator
        faults, statuses = [], set()
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            out = _extract_chunk(sys.argv[1], ["phone.jpg"], ExtractSettings())
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            statuses.add(out[0][1])
        print("RESULT", tune_allocator(), *statuses, *faults)
    """)
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tuned, status, *faults = next(line for line in run.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    assert tuned == "True" and status == "no_face"
    pages = 2016 * 1512 * 3 // 4096  # one decoded buffer at ½ scale: about 2,200 pages
    assert max(map(int, faults[2:])) < pages // 10, faults  # without the settings: ~2,400–2,900 per photo


def test_a_zip_is_opened_once_for_its_chunks(tmp_path, portrait, monkeypatch):
    """Consecutive chunks of one ZIP reuse its open ZipFile (opening reads the whole central directory);
    a ZIP rewritten since is opened afresh, and an in-process run leaves no ZIP open."""
    photo = jpeg_bytes(on_canvas(portrait, (640, 480), at=(80, 0)))
    path = tmp_path / "photos.zip"
    write_zip(path, {f"p{i}.jpg": photo for i in range(4)})
    opened = []
    real = zipfile.ZipFile

    class Counting(real):
        def __init__(self, file, mode="r", *args, **kwargs):
            if mode == "r":
                opened.append(str(file))
            super().__init__(file, mode, *args, **kwargs)

    monkeypatch.setattr(ex.zipfile, "ZipFile", Counting)
    first = ex._extract_chunk(str(path), ["p0.jpg", "p1.jpg"], ExtractSettings())
    second = ex._extract_chunk(str(path), ["p2.jpg", "p3.jpg"], ExtractSettings())
    assert [r[1] for r in first + second] == ["ok"] * 4 and len(opened) == 1
    np.testing.assert_array_equal(first[0][3], second[1][3])
    write_zip(path, {"p0.jpg": photo, "other.jpg": photo})  # rewritten: new size and time
    os.utime(path, ns=(1, 1))
    assert ex._extract_chunk(str(path), ["other.jpg"], ExtractSettings())[0][1] == "ok" and len(opened) == 2
    assert ex._extract_chunk(str(path), ["missing.jpg"], ExtractSettings())[0][1] == "unreadable"
    ex._close_archive()
    index = pd.DataFrame({"source": "folder", "split": "Training", "container": str(path), "member": ["p0.jpg"],
                          "name": ["p0.jpg"], "person": ["a"], "emotion": ["중립"], "problem": [None],
                          "crc": [zipfile.ZipFile(path).getinfo("p0.jpg").CRC], "bytes": [len(photo)]})
    table, _ = extract(index, workers=1, cache=tmp_path / "cache", progress=False)
    assert table["status"].tolist() == ["ok"] and getattr(ex._LOCAL, "archive", None) is None


def test_a_box_that_overstates_the_face_does_not_cost_it_resolution(portrait):
    """A labelled box far larger than the face would decode the photo at 1/8, the face a few dozen pixels
    across: the landmarks then come from the draft_long_side decode alone, as without the box."""
    face = np.asarray(Image.fromarray(portrait).resize((900, 900), Image.LANCZOS))
    data = jpeg_bytes(on_canvas(face, (4032, 3024), at=(1500, 1000)))
    wrong = (0.0, 0.0, 3024.0, 3024.0)  # passes as a box (not degenerate, inside the photo) but is not the face
    assert decode(data, 1024, wrong, 256)[0].shape == (378, 504, 3)  # 1/8
    plain, *_ = landmarks_from_bytes(data, ExtractSettings(min_face_side=None), wrong)
    checked, w, h = landmarks_from_bytes(data, ExtractSettings(), wrong)
    assert (w, h) == (4032, 3024)
    np.testing.assert_array_equal(checked, plain)


# ----------------------------------------------------------------------------- measuring a photo several times

def test_remeasure_one_is_todays_landmarks_and_cache(upright):
    """``remeasure=1`` (the default) is one FaceMesh run, bit for bit, and keeps the cache key the field came after."""
    import hashlib
    from dataclasses import asdict
    from importlib.metadata import version

    once = ex.landmarks_from_rgb(upright)
    direct = ex.find_faces(upright, ex.face_mesh(True, 2, 0.5))
    assert len(direct) == 1
    np.testing.assert_array_equal(once, ex.to_pixels(direct[0], W, H))
    np.testing.assert_array_equal(once, ex.landmarks_from_rgb(upright, ExtractSettings(remeasure=1)))
    later = ("remeasure", "reframe", "reframe_seed")  # fields added after the caches of 2026-11-24
    before = {k: v for k, v in asdict(ExtractSettings()).items() if k not in later}
    old_key = hashlib.sha1(repr((sorted(before.items()), version("mediapipe"), ex.CACHE_VERSION)).encode()).hexdigest()[:12]
    assert ExtractSettings().key() == old_key
    assert ExtractSettings(remeasure=8).key() not in (old_key, ExtractSettings(remeasure=4).key())
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="remeasure"):
            ExtractSettings(remeasure=bad)


def test_remeasure_shifts_are_distinct_and_on_a_circle():
    for k, width in ((2, 100), (8, 130), (8, 5), (16, 400)):
        shifts = ex.remeasure_shifts(k, width)
        radius = max(1.0, ex.REMEASURE_RADIUS * width)
        assert len(shifts) == k - 1
        assert (0, 0) not in shifts
        assert all(abs(np.hypot(dx, dy) - radius) <= 0.75 for dx, dy in shifts)
    assert len(set(ex.remeasure_shifts(8, 130))) == 7
    np.testing.assert_allclose(np.mean(ex.remeasure_shifts(9, 400), axis=0), 0, atol=0.5)  # no net shift


def test_remeasured_copies_are_moved_back(upright):
    """With two measurements (the photo and one copy shifted right by r pixels) the mean lies on the face, not r/2
    pixels beside it: each copy's landmarks are moved back by its own shift."""
    once = ex.landmarks_from_rgb(upright)
    width = float(np.ptp(once[:, 0]))
    (dx, dy), = ex.remeasure_shifts(2, width)
    assert dx >= 8 and dy == 0
    twice = ex.landmarks_from_rgb(upright, ExtractSettings(remeasure=2))
    offset = (twice - once)[:, :2].mean(0)
    assert abs(offset[0]) < dx / 8 and abs(offset[1]) < dx / 8, (offset, dx)
    assert not np.array_equal(twice, once)  # the copy was measured: FaceMesh moves a little with the pixel grid


def test_remeasure_averages_away_measurement_noise(upright):
    """The reason for the setting, on a real face: the same photo shifted by 16 pixels moves one measurement's
    normalised landmarks by a noticeable amount; the mean of 8 moves by much less."""
    from facekit.normalize import flatten, normalize

    def shape(rgb, k):
        return flatten(normalize(ex.landmarks_from_rgb(rgb, ExtractSettings(remeasure=k))))

    shifted = np.ascontiguousarray(np.pad(upright, ((16, 0), (16, 0), (0, 0)), mode="edge")[:H, :W])
    one = np.linalg.norm(shape(upright, 1) - shape(shifted, 1))
    eight = np.linalg.norm(shape(upright, 8) - shape(shifted, 8))
    assert one > 0.05  # kit units over 1,434 coordinates (JAFFE: median 0.44 for a 16-px shift)
    assert eight < 0.7 * one, (one, eight)


# ----------------------------------------------------------------------------- re-framing (a robustness check)

def test_reframe_zero_is_todays_landmarks_and_cache(upright):
    """``reframe=0`` (the default) leaves the photo as it is, whatever the seed, and keeps the cache key."""
    once = ex.landmarks_from_rgb(upright)
    np.testing.assert_array_equal(once, ex.landmarks_from_rgb(upright, ExtractSettings(reframe=0, reframe_seed=7)))
    assert ExtractSettings(reframe=0, reframe_seed=7).key() == ExtractSettings().key()
    keys = {ExtractSettings(reframe=r, reframe_seed=s).key() for r, s in ((2, 0), (2, 1), (4, 1))}
    assert len(keys) == 3 and ExtractSettings().key() not in keys
    for name in ("reframe", "reframe_seed"):
        for bad in (-1, 1.5, True, "2"):
            with pytest.raises(ValueError, match=name):
                ExtractSettings(**{name: bad})


def test_reframe_offsets_are_seeded_by_the_seed_and_the_pixels(upright):
    offsets = [ex.reframe_offset(upright, 3, seed) for seed in range(60)]
    assert all(max(abs(dx), abs(dy)) <= 3 for dx, dy in offsets)
    assert len(set(offsets)) >= 20  # 49 possible offsets; the seeds draw many of them
    assert {dx for dx, _ in offsets} == set(range(-3, 4)) and {dy for _, dy in offsets} == set(range(-3, 4))
    assert offsets == [ex.reframe_offset(upright.copy(), 3, seed) for seed in range(60)]  # the same photo, any copy
    mirrored = np.ascontiguousarray(upright[:, ::-1])
    assert [ex.reframe_offset(mirrored, 3, seed) for seed in range(60)] != offsets  # another photo, other offsets


def test_reframed_landmarks_are_moved_back(upright):
    """The photo is measured shifted by its offset and the landmarks are moved back by it, in full-size pixels when
    the photo was decoded smaller (``size``)."""
    seed = next(s for s in range(200) if min(abs(v) for v in ex.reframe_offset(upright, 12, s)) >= 8)
    dx, dy = ex.reframe_offset(upright, 12, seed)
    settings = ExtractSettings(reframe=12, reframe_seed=seed)
    moved = ex.landmarks_from_rgb(upright, settings)
    by_hand = ex.landmarks_from_rgb(ex.shifted(upright, dx, dy)) - np.array([dx, dy, 0], np.float32)
    np.testing.assert_allclose(moved, by_hand, atol=1e-3)
    once = ex.landmarks_from_rgb(upright)
    offset = (moved - once)[:, :2].mean(0)
    assert np.all(np.abs(offset) < 2), (offset, dx, dy)  # on the face, not (dx, dy) beside it
    assert not np.array_equal(moved, once)  # FaceMesh measured the shifted pixels
    np.testing.assert_allclose(ex.landmarks_from_rgb(upright, settings, size=(2 * W, 2 * H)), 2 * moved, rtol=1e-5,
                               atol=1e-3)


def test_remeasure_in_extract_and_its_cache(folder_index, extracted, tmp_path, monkeypatch):
    """``extract`` with ``remeasure`` keeps every status, moves the landmarks by little, and caches apart."""
    table1, lm1, _ = extracted
    settings = ExtractSettings(remeasure=3)
    table3, lm3 = extract(folder_index, settings, workers=1, cache=tmp_path, progress=False)
    assert table3["status"].tolist() == table1["status"].tolist()
    ok = (table1["status"] == "ok").to_numpy()
    size = centroid_size(lm1[ok])
    moved = np.linalg.norm((lm3[ok] - lm1[ok])[:, :, :2], axis=2).mean(1) / size
    assert np.all(moved < MEAN_TOLERANCE) and np.all(moved > 0)
    calls = _counting(monkeypatch)
    again = extract(folder_index, settings, workers=1, cache=tmp_path, progress=False)[1]
    assert calls == [] and np.array_equal(again, lm3, equal_nan=True)


# ----------------------------------------------------------------------------- MediaPipe's start-up lines

_NOISY_RUN = r"""
import os, sys
import numpy as np
from facekit import demo, extract
face = demo.portrait()
if sys.argv[1] == "raw":  # MediaPipe as it comes: what the kit holds back must be what it writes
    import mediapipe as mp
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True)
    print(len(mesh.process(face).multi_face_landmarks or []))
    mesh.reset()
    print(len(mesh.process(face).multi_face_landmarks or []))
else:
    os.write(2, b"before the kit\n")
    print(len(extract.find_faces(face, extract.face_mesh(True))))
    tracking = extract.face_mesh(False)
    print(len(extract.find_faces(face, tracking)))
    extract.restart(tracking)
    print(len(extract.find_faces(face, tracking)))
    with extract.quiet_mediapipe():
        os.write(2, b"written inside the block\n")
    os.write(2, b"after the kit\n")
"""


@pytest.mark.parametrize("route", ["raw", "kit"])
def test_mediapipe_start_up_lines_are_held_back_by_the_kit(route):
    """A fresh process: MediaPipe itself writes each line the kit holds back (so the markers are real); the kit's
    FaceMesh, built, reset and finding faces, writes none of them, and every other line still reaches stderr."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _NOISY_RUN, route], capture_output=True, timeout=300,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert run.stdout.split() == ([b"1", b"1"] if route == "raw" else [b"1", b"1", b"1"])
    if route == "raw":
        for marker in ex.MEDIAPIPE_NOISE:
            assert marker in run.stderr, marker
    else:
        assert not any(marker in run.stderr for marker in ex.MEDIAPIPE_NOISE), run.stderr.decode(errors="replace")
        assert run.stderr.splitlines() == [b"before the kit", b"written inside the block", b"after the kit"]


def test_quiet_block_gives_back_every_other_line(capfd):
    """Lines from this thread, another thread and a nested block come back in order; the noise does not;
    file descriptor 2 is restored, also when the block raises."""
    import threading

    noise = (b"W0000 00:00:1796657936.186582    7942 inference_feedback_manager.cc:114] Feedback manager requires "
             b"a model with a single signature inference. Disabling support for feedback tensors.\n")
    before = os.fstat(2)
    with ex.quiet_mediapipe():
        os.write(2, b"one\n")
        os.write(2, noise)
        thread = threading.Thread(target=os.write, args=(2, b"two, from a thread\n"))
        thread.start()
        thread.join()
        with ex.quiet_mediapipe():
            os.write(2, b"three, nested\n" + ex.MEDIAPIPE_NOISE[0] + b"\n")
        os.write(2, b"four, no newline")
    assert capfd.readouterr().err == "one\ntwo, from a thread\nthree, nested\nfour, no newline"
    with pytest.raises(KeyError), ex.quiet_mediapipe():
        os.write(2, b"five\n")
        raise KeyError("inside")
    os.write(2, b"six\n")
    assert capfd.readouterr().err == "five\nsix\n"
    assert (os.fstat(2).st_ino, os.fstat(2).st_dev) == (before.st_ino, before.st_dev)


def test_quiet_block_lets_lines_through_without_a_temporary_folder(capfd, monkeypatch):
    """Where no temporary file can be made, the block holds nothing back and FaceMesh still starts."""
    import tempfile

    def refuse():
        raise OSError("read-only temporary folder")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with ex.quiet_mediapipe():
        os.write(2, b"passed straight through\n")
    assert capfd.readouterr().err == "passed straight through\n"
