"""Benchmarks: every stage against FaceMesh alone and against the original design.

    python -m facekit bench [--quick] [--out reports/bench.json]

Every speed figure is paired with a reference measured in the same run, in
alternating passes (the order reversed every other pass), so that other load on
the machine hits both alike; the ratios are what to compare across machines.

1. **Per frame** (640×480 frames of a real face, :func:`facekit.live.demo_frames`):
   the kit's per-frame path (:func:`facekit.live.benchmark`: decode → FaceMesh →
   normalise → model → smoothing) against FaceMesh alone in tracking mode (the
   path's own, called as a researcher calls it: ``mesh.process`` on the decoded
   frame), against the FaceMesh graph alone (the lower reference: the same graph
   driven as the kit drives it, on a read-only frame, nothing parsed), and in static
   mode (what the original server ran on every frame),
   the model alone at batch 1, and the latency per stage; the path on JPEG frames
   (what the live panel's browser sends from a page served over a network), on the
   camera's YUV 4:2:0 planes (I420, what it sends from a localhost page, the default
   ``frame_format="auto"``: a colour conversion instead of a decode) and on packed RGB
   frames (``frame_format="rgb"``: nothing to decode).
2. **Extraction from ZIPs**: an AI Hub-layout ZIP tree of smartphone-size JPEGs
   (3024×4032 and 4032×3024, a third stored EXIF-rotated) made here from the
   bundled astronaut photo's variants and, where present, real photos of
   ``../shared/datasets/aihub_sample``.  Photos per second of
   :func:`facekit.extract.extract` (fresh cache) against FaceMesh alone on the
   same photos already decoded as the kit decodes them, and on the same photos
   decoded at full size (passed read-only, as the kit passes frames), against the original system's extraction (full
   decode by OpenCV and a new FaceMesh for every photo), with reduced-size decoding
   off, and with 1 and 2 worker processes (started before the clock, as on a long
   run).  Each photo's label carries a face box, as AI Hub's do (here the box
   around the face's landmarks on the source photo, no margin).  The kit decodes these
   JPEGs with OpenCV's libjpeg-turbo at ½ scale, or at ¼ where the labelled face stays
   at least 256 px across (:func:`facekit.extract.jpeg_scale`; ``scales`` counts
   them).  A variant with ``draft_long_side=1000`` shows what a ¼-scale decode of
   every photo would give (not the default); the decode
   alone (the photos' bytes already in memory) is the floor under any extraction
   rate: one process does at most one decode and one FaceMesh per photo.
3. **Training**: one epoch over 100,000 samples (:func:`facekit.train.time_epoch`,
   data kept on the device) against the original design's loop (a ``DataLoader``
   over a ``TensorDataset``) with the same model and batch size, both on one
   thread; and the kit's epoch at torch's default thread count (what training
   gets: the kit sets none) against one thread, on fewer samples (on a shared
   machine the default threads can be many times slower); on CUDA too where present.
4. **Memory**: peak resident memory of a subprocess (and its workers) while
   extracting N and 10×N distinct photos, then again while extracting them from the
   caches those runs filled, and while training on 100,000 samples; the landmark
   cache's bytes per photo.
5. **Inference server**: :func:`facekit.server.load_test` on 640×480 frames against
   the same decode and FaceMesh in this process, where the server and its packages
   are installed (otherwise "skipped" with the reason).
6. **Browser**: the live panel of notebook 05 in JupyterLab and headless Chromium
   whose fake camera plays the demo face at 640×480 and 30 frames/s
   (:func:`facekit.browser.browser_fps`): frames per second acknowledged by the
   kernel with the panel's default frame format (YUV from this loopback page) and
   with JPEG frames, in alternating passes in the same page, with the panel's round
   trip, the kernel's handler, the browser's capture and the kernel's stage
   breakdown, against the demo's 15 frames/s; "skipped" with the reason where
   Chromium, ffmpeg or playwright are missing (``./kit test`` installs them).

``--quick`` (about 1½ minutes here) runs the same code on fewer frames, photos and
training samples; its training memory is then for those samples, not 100,000.

:func:`run` returns the report (also written as JSON); :func:`format_table` prints it.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .paths import PROJECT_ROOT, check_writable, reports_dir, shared_datasets


@dataclass(frozen=True)
class BenchSettings:
    """How much work each section does.  ``passes`` / ``frame_passes``: alternating passes of every
    extraction / per-frame variant.  Per-frame passes are short (``frames`` frames each), so that a burst
    of other load rarely covers one variant and not its reference."""

    frames: int = 20
    frame_passes: int = 15
    passes: int = 2
    photos: int = 32
    unique_photos: int = 16
    memory_scale: int = 10
    train_samples: int = 100_000
    thread_samples: int = 5_000
    train_passes: int = 2
    browser_passes: int = 2
    browser_seconds: float = 10.0
    server_requests: int = 200
    server_concurrency: int = 8


FULL = BenchSettings()
QUICK = BenchSettings(frames=20, frame_passes=6, passes=2, photos=8, unique_photos=8, train_samples=1_000,
                      thread_samples=500, browser_passes=1, browser_seconds=4.0,
                      server_requests=24, server_concurrency=4)

#: Targets: (name, ratio key, "<=" or ">=", limit).  Each ratio is measured against its reference in the same run.
TARGETS = [
    ("per-frame path ≤ 1.15× FaceMesh alone (tracking); YUV frames, the browser's default from a localhost page",
     "per_frame_yuv_vs_facemesh_tracking", "<=", 1.15),
    ("the same, JPEG frames (the browser's default over a network)", "per_frame_vs_facemesh_tracking", "<=", 1.15),
    ("the same, RGB frames (frame_format='rgb')", "per_frame_rgb_vs_facemesh_tracking", "<=", 1.15),
    ("extraction ≥ 0.8× the FaceMesh-alone rate", "extraction_vs_facemesh_alone", ">=", 0.8),
    ("extraction ≥ 3× the original approach", "extraction_vs_original", ">=", 3.0),
    ("extraction memory at 10× the photos ≤ 1.2× its peak", "extraction_memory_10x", "<=", 1.2),
    ("the same, every photo found in the landmark cache (a repeated or resumed run)",
     "extraction_memory_10x_cached", "<=", 1.2),
    ("training on 100,000 samples within 3 GB", "training_memory_vs_3gb", "<=", 1.0),
    ("2 workers ≥ 1.7× one", "extraction_2_vs_1_workers", ">=", 1.7),
    ("browser path ≥ 15 frames/s at 640×480, the panel's default (YUV from a localhost page); ratio to 15",
     "browser_default_fps_vs_15", ">=", 1.0),
    ("the same, JPEG frames (the default over a network)", "browser_jpeg_fps_vs_15", ">=", 1.0),
]
#: The browser section's formats: the panel's default ("auto": YUV from the bench's loopback page) and JPEG.
BROWSER_FORMATS = ("auto", "jpeg")

#: Pixels as stored for an upright photo carrying this EXIF orientation (a viewer turns them back).
_STORED = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
_EMOTIONS = ("중립", "불안")
#: ``ExtractSettings.remeasure`` of the extraction variant that measures each photo several times.
REMEASURE = 8

#: A draft threshold under a quarter of 4,032 px: such phone photos then decode at ¼ scale (1008 px) instead of ½
QUARTER_DRAFT = 1000


def _median(values) -> float:
    return float(statistics.median(values))


def _round(value: float, digits: int = 3) -> float:
    return float(round(value, digits))


# ----------------------------------------------------------------------------- the machine

def machine() -> dict:
    """Date, CPU model, cores, memory, load and versions: what a figure needs to be read."""
    from importlib.metadata import PackageNotFoundError, version

    import psutil
    import torch

    from .extract import default_workers

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for name in ("facekit", "torch", "mediapipe", "numpy", "pillow", "opencv-contrib-python", "dask", "distributed"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    commit = None
    with contextlib.suppress(OSError):  # no git: a copy of the kit outside its repository
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True).stdout.strip() or None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "usable_cores": default_workers(),
            "memory_gb": _round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [_round(v, 2) for v in os.getloadavg()], "git_commit": commit,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "versions": versions}


# ----------------------------------------------------------------------------- 1. per frame

def bench_per_frame(settings: BenchSettings, checkpoint: Path) -> dict:
    """The per-frame path, FaceMesh alone (tracking and static) and the model alone at batch 1, in milliseconds.

    Each pass runs :func:`facekit.live.benchmark` once (FaceMesh alone in tracking
    mode, the FaceMesh graph alone, then the whole path, on the same frames), then static-mode FaceMesh
    alone and the model alone on one normalised face.  Times are medians over the
    passes of each pass's median; ratios are medians over the passes of each
    pass's own ratio, so a burst of other load that hits one pass does not decide them.
    """
    from .checkpoint import load
    from .extract import face_mesh, find_faces, to_pixels
    from .live import LiveSettings, benchmark, decode_frame, demo_frames, encode_jpeg

    predictor = load(checkpoint)
    live = LiveSettings()
    frames = [encode_jpeg(f) for f in demo_frames(settings.frames)]
    rgbs = [decode_frame(f) for f in frames]
    static = face_mesh(True, live.max_faces, live.min_detection_confidence)
    faces = find_faces(rgbs[0], static)
    if not faces:
        raise RuntimeError("FaceMesh found no face in the demo frame; the mediapipe install looks broken")
    h, w = rgbs[0].shape[:2]
    shape = predictor.normalize(to_pixels(faces[0], w, h)[None], w, h)
    for rgb in rgbs[:5]:
        static.process(rgb)
    static_ms, model_ms = [], []
    by_format: dict[str, list[dict]] = {"jpeg": [], "yuv": [], "rgb": []}
    for k in range(settings.frame_passes):
        # jpeg: the frames as the browser sends them over a network (decoded in the path); yuv: the camera's
        # I420 planes, as it sends them from a localhost page (converted in the path); rgb: packed pixels
        # (frame_format="rgb", nothing to decode).  The order turns every pass.
        order = ("jpeg", "yuv", "rgb")[k % 3:] + ("jpeg", "yuv", "rgb")[:k % 3]
        for fmt in (order if k % 2 == 0 else order[::-1]):
            by_format[fmt].append(benchmark(predictor, frames, repeats=1, settings=live, frame_format=fmt))
        times = []
        for rgb in rgbs:
            t0 = time.perf_counter()
            static.process(rgb)
            times.append((time.perf_counter() - t0) * 1000)
        static_ms.append(_median(times))
        times = []
        for _ in range(len(frames)):  # called exactly as the path calls it
            t0 = time.perf_counter()
            predictor.predict_shapes(shape)
            times.append((time.perf_counter() - t0) * 1000)
        model_ms.append(_median(times))
    def vs_graph(parts: list[float], refs: list) -> float | None:  # None: this mediapipe has no direct route
        return None if None in refs else _round(_median(p / t for p, t in zip(parts, refs)))

    def variant(fmt: str, what: str) -> dict:  # the path on one frame format, with its own references
        rs = by_format[fmt]
        f_tracking, f_path = [r["facemesh_alone_ms"] for r in rs], [r["pipeline_ms"] for r in rs]
        f_graph = [r["facemesh_graph_ms"] for r in rs]
        return {"frame_format": what,
                "facemesh_tracking_ms": _round(_median(f_tracking)), "path_ms": _round(_median(f_path)),
                "facemesh_graph_ms": None if None in f_graph else _round(_median(f_graph)),
                "stages_ms": {s: _round(_median(r["stages_ms"][s] for r in rs)) for s in rs[0]["stages_ms"]},
                "kernel_fps": _round(1000 / _median(f_path), 1),
                # each ratio: the median over passes of the pass's own ratio (a variant and its reference, adjacent)
                "ratio_path_vs_tracking": _round(_median(p / t for p, t in zip(f_path, f_tracking))),
                "ratio_path_vs_graph": vs_graph(f_path, f_graph),
                # the kit's own time per frame: what the path adds to FaceMesh alone (median over passes); it
                # does not move in step with FaceMesh's time (0.62 ms at 3.2 ms, 0.85 ms at 5.1 ms), so the ratio
                # moves from day to day
                "own_ms": _round(_median(p - t for p, t in zip(f_path, f_tracking))),
                "per_pass_ms": {"facemesh_tracking": f_tracking, "facemesh_graph": f_graph, "path": f_path}}

    runs = by_format["jpeg"]
    tracking = [r["facemesh_alone_ms"] for r in runs]
    path = [r["pipeline_ms"] for r in runs]
    jpeg = variant("jpeg", "jpeg (quality 80, as the browser sends them over a network)")
    jpeg["per_pass_ms"]["facemesh_static"] = [_round(v) for v in static_ms]
    return {"frames": len(frames), "passes": settings.frame_passes, "size": runs[0]["size"],
            "faces_found_per_pass": runs[0]["faces_found"], "checkpoint": str(checkpoint), **jpeg,
            "facemesh_static_ms": _round(_median(static_ms)), "model_alone_ms": _round(_median(model_ms)),
            "yuv": variant("yuv", "yuv (I420 planes, BT.601 limited range, as the browser sends a camera's frames "
                                  "from a localhost page, the default frame_format='auto')"),
            "rgb": variant("rgb", "rgb (packed pixels, as the browser sends them with frame_format='rgb')"),
            "ratio_path_vs_static": _round(_median(p / t for p, t in zip(path, static_ms))),
            "ratio_model_vs_tracking": _round(_median(m / t for m, t in zip(model_ms, tracking))),
            "ratio_static_vs_tracking": _round(_median(a / t for a, t in zip(static_ms, tracking)))}


# ----------------------------------------------------------------------------- 2. extraction

def _background(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like background (scikit-image's coffee photo, enlarged), (H, W, 3) uint8, and a field of
    sensor-like noise (H, W, 3) int16 added over the whole finished photo (so the JPEGs are as large as a phone's)."""
    from skimage import data

    base = np.asarray(Image.fromarray(data.coffee()).resize(size, Image.BILINEAR))
    return base, rng.normal(0, 5, base.shape).astype(np.int16)


def face_sources(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` upright RGB photos of real faces: the bundled astronaut photo's variants
    (:func:`facekit.demo.photo_variants`) alternating with photos of ``../shared/datasets/aihub_sample``
    where present.  Returns (origin, (H, W, 3) uint8) pairs."""
    from . import demo
    from .extract import decode, read_bytes

    astronaut = [(f"astronaut, {k}", v) for k, v in demo.photo_variants(demo.portrait()).items()]
    shared: list[tuple[str, np.ndarray]] = []
    root = shared_datasets() / "aihub_sample"
    if root.is_dir():
        from .index import index_aihub
        from .sample import sample

        chosen = sample(index_aihub(root), per_container=1, seed=seed)
        for row in chosen.head(n).itertuples():
            shared.append((f"aihub_sample, {row.emotion}", decode(read_bytes(row.container, row.member))[0]))
    mixed = [p for pair in zip(astronaut, shared) for p in pair]
    mixed += astronaut[len(shared):] + shared[len(astronaut):]
    return mixed[:n]


def _smartphone_jpeg(rgb: np.ndarray, background: dict, orientation: int, quality: int = 90,
                     face_box=None) -> tuple[bytes, tuple | None]:
    """``rgb`` enlarged onto a 12-megapixel canvas (portrait or landscape like the photo) and stored
    as a JPEG with EXIF ``orientation`` (the pixels turned so that a viewer shows them upright).
    Returns the JPEG and ``face_box`` (x0, y0, x1, y1 on ``rgb``) moved onto the upright canvas (or None)."""
    portrait = rgb.shape[0] >= rgb.shape[1]
    base, noise = background[portrait]
    canvas = base.copy()
    ch, cw = canvas.shape[:2]
    scale = min(0.9 * cw / rgb.shape[1], 0.9 * ch / rgb.shape[0])
    face = Image.fromarray(rgb).resize((int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)), Image.BICUBIC)
    x, y = (cw - face.size[0]) // 2, (ch - face.size[1]) // 3
    canvas[y:y + face.size[1], x:x + face.size[0]] = np.asarray(face)
    box = None if face_box is None else tuple(float(v * scale + o) for v, o in zip(face_box, (x, y, x, y)))
    im = Image.fromarray(np.clip(canvas + noise, 0, 255).astype(np.uint8))
    if _STORED[orientation] is not None:
        im = im.transpose(_STORED[orientation])
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue(), box


def build_photo_zips(root: Path, n_photos: int, n_unique: int, seed: int = 0) -> dict:
    """An AI Hub-layout tree under ``root`` (Training and Validation, 중립 and 불안 image ZIPs with
    their label ZIPs) holding ``n_photos`` smartphone-size JPEGs made from ``n_unique`` source photos.

    Every third photo is stored EXIF-rotated (orientations 6, 8, 3 in turn).  Each label
    record's three annotators give the same face box, in upright pixels: the box around
    FaceMesh's landmarks on the source photo, moved onto the canvas (none where no face is
    found there).  Returns ``{"root", "zips", "photos", "encodings", "boxes", "members", ...}``:
    ``members`` lists (zip path, member name, index into ``encodings``) in writing order;
    ``boxes[i]`` is encoding i's box (x0, y0, x1, y1) or None.
    """
    from .extract import PhotoError, landmarks_from_rgb

    rng = np.random.default_rng(seed)
    background = {True: _background((3024, 4032), rng), False: _background((4032, 3024), rng)}
    sources = face_sources(n_unique, seed)
    encodings, origins, boxes = [], [], []
    for i, (origin, rgb) in enumerate(sources):
        orientation = (1, 1, (6, 8, 3)[(i // 3) % 3])[i % 3]
        try:
            lm = landmarks_from_rgb(rgb)
            face_box = (*lm[:, :2].min(0), *lm[:, :2].max(0))
        except PhotoError:
            face_box = None
        data, box = _smartphone_jpeg(rgb, background, orientation, face_box=face_box)
        encodings.append(data)
        boxes.append(box)
        origins.append(f"{origin}, EXIF {orientation}")
    return write_photo_tree(root, n_photos, encodings, boxes, origins)


def write_photo_tree(root: Path, n_photos: int, encodings: list[bytes], boxes: list, origins: list[str]) -> dict:
    """The ZIPs and labels of :func:`build_photo_zips` for ``n_photos`` distinct members made from the given
    encodings (member i holds encoding i mod their count); another tree from the same photos costs no encoding."""
    layout = [("Training", "TRAIN", "_01"), ("Validation", "VALID", "")]
    zips = {(split, emotion, tag): root / split / f"[원천]EMOIMG_{emotion}_{tag}{part}.zip"
            for split, tag, part in layout for emotion in _EMOTIONS}
    members: list[tuple[Path, str, int]] = []
    records: dict[tuple, list] = {k: [] for k in zips}
    for i in range(n_photos):
        key = list(zips)[i % len(zips)]
        person = hashlib.sha256(f"bench-person-{i % 24}".encode()).hexdigest()
        name = f"{person}_여_30_{key[1]}_실내_20260101{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-001-{i % 1000:03d}.jpg"
        members.append((zips[key], name, i % len(encodings)))
        box = boxes[i % len(encodings)]
        labelled = {} if box is None else {"boxes": dict(zip(("minX", "minY", "maxX", "maxY"), box))}
        records[key].append({"filename": name, **{f"annot_{a}": {"faceExp": key[1], **labelled} for a in "ABC"}})
    for key, path in zips.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for zip_path, name, enc in members:
                if zip_path == path:
                    zf.writestr(name, encodings[enc])
        split, emotion, tag = key
        with zipfile.ZipFile(path.with_name(f"[라벨]EMOIMG_{emotion}_{tag}.zip"), "w") as zf:
            zf.writestr(f"img_emotion_{split.lower()}_data({emotion}).json", json.dumps(records[key], ensure_ascii=False))
    sizes = [len(e) for e in encodings]
    return {"root": root, "zips": list(zips.values()), "photos": n_photos, "unique_photos": len(encodings),
            "encodings": encodings, "boxes": boxes, "members": members, "origins": origins,
            "jpeg_mb_median": _round(_median(sizes) / 2**20, 2), "sizes": "3024×4032 and 4032×3024",
            "exif_rotated": sum(1 for _z, _n, e in members if not origins[e].endswith("EXIF 1"))}


def original_extract(zips: list[Path]) -> int:
    """The original system's extraction (dynovember05/Emotion_ML, ``data_loader.py``): each photo decoded
    at full size by OpenCV and run through a FaceMesh graph built for that photo alone.  Returns faces found."""
    import cv2
    import mediapipe as mp

    from .extract import quiet_mediapipe

    found = 0
    # Each new graph writes MediaPipe's start-up lines (two a photo): held back, not timed any differently.
    with quiet_mediapipe():
        for path in zips:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    image = cv2.imdecode(np.frombuffer(zf.read(info), np.uint8), cv2.IMREAD_COLOR)
                    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=0.5) as mesh:
                        result = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                    if result.multi_face_landmarks:
                        found += 1
                        np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
    return found


def _warm_worker(parent: int) -> None:
    """Pool initializer: import and build the worker's FaceMesh before the clock starts; exit if ``parent`` dies
    (as extraction's workers do)."""
    from .extract import ExtractSettings, _exit_with_parent, face_mesh

    _exit_with_parent(parent)
    s = ExtractSettings()
    face_mesh(True, s.max_faces, s.min_detection_confidence)


def _start_pool(n: int):
    """A spawned process pool of ``n`` workers, each with its FaceMesh built; returns (pool, seconds to start)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_worker,
                               initargs=(os.getpid(),))
    wait([pool.submit(time.sleep, 0.3) for _ in range(2 * n)])  # more tasks than workers: every worker starts
    return pool, time.perf_counter() - t0


def bench_extraction(settings: BenchSettings, tree: dict, scratch: Path) -> dict:
    """Photos per second of every extraction variant on the same ZIP tree, in alternating passes."""
    from .extract import ExtractSettings, decode, extract, face_mesh
    from .index import index_aihub

    index = index_aihub(tree["root"])
    n = len(index)
    kit, no_draft = ExtractSettings(), ExtractSettings(draft_long_side=None)
    quarter = ExtractSettings(draft_long_side=QUARTER_DRAFT)
    remeasured = ExtractSettings(remeasure=REMEASURE)
    mesh = face_mesh(True, kit.max_faces, kit.min_detection_confidence)
    decoded = [decode(e, kit.draft_long_side, b, kit.min_face_side)[0] for e, b in zip(tree["encodings"], tree["boxes"])]
    scale = [round(max(Image.open(io.BytesIO(e)).size) / max(d.shape[:2])) for e, d in zip(tree["encodings"], decoded)]
    scales = {f"1/{k}": v for k, v in sorted(collections.Counter(scale[enc] for _z, _m, enc in tree["members"]).items())}
    photos = [decoded[enc] for _z, _m, enc in tree["members"]]
    # The other reading of "FaceMesh alone on the same photos already decoded": the photos at their
    # full size, whatever the kit's decode settings. Read-only, so MediaPipe takes them without copying: a
    # writeable 12 MP array costs a 36 MB copy per call (about 20 ms here), which would flatter the kit.
    full_size = [decode(e, None)[0] for e in tree["encodings"]]
    for rgb in full_size:
        rgb.flags.writeable = False
    photos_full = [full_size[enc] for _z, _m, enc in tree["members"]]
    pools = {k: _start_pool(k) for k in (1, 2)}
    found: dict[str, int] = {}
    runs = itertools.count()

    def run_extract(s: ExtractSettings, **kwargs) -> int:
        table, _ = extract(index, s, cache=scratch / f"cache-{next(runs)}", progress=False, **kwargs)
        return int((table["status"] == "ok").sum())

    def facemesh_alone() -> int:
        return sum(bool(mesh.process(rgb).multi_face_landmarks) for rgb in photos)

    def facemesh_alone_full_size() -> int:
        return sum(bool(mesh.process(rgb).multi_face_landmarks) for rgb in photos_full)

    member_bytes = [(tree["encodings"][enc], tree["boxes"][enc]) for _z, _m, enc in tree["members"]]

    def decode_alone() -> int:
        return sum(decode(data, kit.draft_long_side, box, kit.min_face_side)[0].size > 0 for data, box in member_bytes)

    variants: dict[str, Callable[[], int]] = {
        "facemesh_alone": facemesh_alone,
        "facemesh_alone_full_size": facemesh_alone_full_size,
        "decode_alone": decode_alone,
        "kit": lambda: run_extract(kit, workers=1),
        "kit_full_decode": lambda: run_extract(no_draft, workers=1),
        "kit_draft_1000": lambda: run_extract(quarter, workers=1),
        f"kit_remeasure_{REMEASURE}": lambda: run_extract(remeasured, workers=1),
        "original": lambda: original_extract(tree["zips"]),
        "kit_1_worker_process": lambda: run_extract(kit, executor=pools[1][0]),
        "kit_2_worker_processes": lambda: run_extract(kit, executor=pools[2][0]),
    }
    for warm_up in ("kit", "kit_1_worker_process", "kit_2_worker_processes"):  # imports, FaceMesh, page cache
        variants[warm_up]()
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for p in range(settings.passes):
            for name in (variants if p % 2 == 0 else reversed(variants)):
                t0 = time.perf_counter()
                found[name] = variants[name]()
                seconds[name].append(time.perf_counter() - t0)
    finally:
        for pool, _ in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
    rate = {k: _round(n / _median(v), 2) for k, v in seconds.items()}
    # One process decodes, then runs FaceMesh: it cannot beat 1 / (decode time + FaceMesh time).
    ceiling = 1 / (1 / rate["decode_alone"] + 1 / rate["facemesh_alone"])
    return {"photos": n, "passes": settings.passes, "unique_photos": tree["unique_photos"],
            "sizes": tree["sizes"], "exif_rotated": tree["exif_rotated"], "jpeg_mb_median": tree["jpeg_mb_median"],
            "sources": tree["origins"], "photos_per_second": rate, "faces_found": found,
            "decoded_size_kit": "x".join(map(str, decoded[0].shape[1::-1])), "decode_scales_kit": scales,
            "decode_alone_ms": _round(1000 / rate["decode_alone"], 1),
            "facemesh_alone_ms": _round(1000 / rate["facemesh_alone"], 1),
            "facemesh_alone_full_size_ms": _round(1000 / rate["facemesh_alone_full_size"], 1),
            "ceiling_photos_per_second": _round(ceiling, 2),
            "pool_start_seconds": {f"{k}_worker{'s' if k > 1 else ''}": _round(v[1], 2) for k, v in pools.items()},
            "note": "facemesh_alone: static-mode FaceMesh on the photos already decoded as the kit decodes them; "
                    "facemesh_alone_full_size: the same on the photos decoded at full size, passed read-only "
                    "(MediaPipe copies a writeable array first, about 20 ms for 12 MP); "
                    "decode_alone: facekit.extract.decode on each photo's bytes already in memory (OpenCV's "
                    "libjpeg-turbo at the kit's scales, decode_scales_kit: 1/2, or 1/4 where the labelled face box "
                    "stays >= 256 px across; turned upright; faces_found counts photos decoded); "
                    "ceiling: 1 / (decode time + FaceMesh time), the most one process can do that decodes and "
                    "then runs FaceMesh; "
                    "kit: in this process, a fresh cache each run, ExtractSettings() with the labels' face boxes; "
                    "kit_full_decode: draft_long_side=None (full-size "
                    "OpenCV decode); kit_draft_1000: "
                    f"ExtractSettings(draft_long_side={QUARTER_DRAFT}), which decodes every 4032-px photo at 1/4 "
                    "scale, whatever its face's size (not the default); "
                    f"kit_remeasure_{REMEASURE}: ExtractSettings(remeasure={REMEASURE}), FaceMesh run {REMEASURE} "
                    "times a photo, shifted, and averaged (not the default); original: full OpenCV decode and a new FaceMesh per photo; "
                    "worker pools started (and their FaceMesh built) before the clock"}


def extraction_alone(quick: bool = False, passes: int | None = None) -> dict:
    """The extraction section alone, on the photos :func:`run` makes (``passes`` overrides the settings'), with
    its main ratios under ``"ratios"``; about 40 s at the full settings here::

        python -c "from facekit import bench; r = bench.extraction_alone(passes=6); print(r['ratios'])"
    """
    import dataclasses

    settings = QUICK if quick else FULL
    if passes:
        settings = dataclasses.replace(settings, passes=passes)
    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as tmp:
        scratch = Path(tmp)
        tree = build_photo_zips(scratch / "aihub", settings.photos, settings.unique_photos)
        report = bench_extraction(settings, tree, scratch)
    rate = report["photos_per_second"]
    report["ratios"] = {"kit_vs_original": _round(rate["kit"] / rate["original"]),
                        "kit_vs_facemesh_alone": _round(rate["kit"] / rate["facemesh_alone"]),
                        "kit_vs_facemesh_alone_full_size": _round(rate["kit"] / rate["facemesh_alone_full_size"]),
                        "ceiling_vs_facemesh_alone": _round(report["ceiling_photos_per_second"]
                                                            / rate["facemesh_alone"]),
                        "kit_vs_ceiling": _round(rate["kit"] / report["ceiling_photos_per_second"])}
    report["load_average_end"] = [_round(v, 2) for v in os.getloadavg()]
    return report


# ----------------------------------------------------------------------------- 3. training

def training_rows(n_people: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Model-ready rows (N, 1434) float32 and labels from the synthetic demo data, through the kit's own
    preparation (training cost depends on the shapes only, not on the values)."""
    from .crossval import prepare
    from .synthetic import make_dataset

    data = prepare(*make_dataset(n_people, 4, seed=seed))
    return data.X, data.y


def dataloader_epoch(x: np.ndarray, y: np.ndarray, n_samples: int, device: str = "cpu") -> float:
    """Seconds for one epoch the way the original system trained: a ``DataLoader`` (shuffle) over a
    ``TensorDataset`` in host memory, each batch moved to the device; same model, batch size, loss,
    optimiser, schedule and noise as :func:`facekit.train.fit`."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from .model import ModelConfig, ResNetMLP
    from .train import TrainConfig

    cfg = TrainConfig()
    reps = math.ceil(n_samples / len(x))
    xs = torch.as_tensor(np.tile(np.asarray(x, np.float32), (reps, 1))[:n_samples])
    ys = torch.as_tensor(np.tile(np.asarray(y, np.int64), reps)[:n_samples])
    torch.manual_seed(cfg.seed)
    model = ResNetMLP(ModelConfig(n_features=xs.shape[1], n_classes=int(ys.max()) + 1)).to(device)
    model.set_standardization(xs.to(device))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(TensorDataset(xs, ys), batch_size=cfg.batch_size, shuffle=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=len(loader), pct_start=0.1)
    model.train()
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        xb = xb + torch.randn_like(xb) * cfg.noise_sigma
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        float(loss.detach())
    return time.perf_counter() - t0


def _alternate(variants: dict[str, Callable[[], float]], passes: int, n: int) -> dict:
    """Run every variant ``passes`` times, the order reversed every other pass; median seconds per epoch of ``n``."""
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for p in range(passes):
        for name in (variants if p % 2 == 0 else reversed(variants)):
            seconds[name].append(variants[name]())
    return {name: {"seconds_per_epoch": _round(_median(v), 2), "samples_per_second": round(n / _median(v)),
                   "seconds_per_100k_samples": _round(_median(v) * 100_000 / n, 2)} for name, v in seconds.items()}


def bench_training(settings: BenchSettings) -> dict:
    """Seconds per epoch and samples per second, each pair in alternating passes.

    ``cpu``: the kit's epoch (:func:`facekit.train.time_epoch`) against the original
    design's ``DataLoader`` loop over ``train_samples``, both on one thread.
    ``threads``: the kit's epoch at torch's default thread count (what training gets:
    the kit sets none) against one thread, over ``thread_samples`` (an epoch's cost is
    linear in its samples).  Where the machine is shared, the default threads wait for
    each other's time slices and can be many times slower than one, so the long
    pair runs on one thread.  ``cuda``: the kit against the loop, where present.
    """
    import torch

    from .train import time_epoch, torch_threads

    x, y = training_rows()
    n, small = settings.train_samples, settings.thread_samples
    default = torch.get_num_threads()

    def kit(samples: int, device: str = "cpu") -> float:
        return time_epoch(x, y, n_samples=samples, device=device)["seconds_per_epoch"]

    def one_thread(fn: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            with torch_threads(1):
                return fn()
        return run

    out: dict = {"samples": n, "batch_size": 64, "passes": settings.train_passes, "default_threads": default,
                 "cpu": {"threads": 1, **_alternate({"kit": one_thread(lambda: kit(n)),
                                                     "original_dataloader": one_thread(lambda: dataloader_epoch(x, y, n))},
                                                    settings.train_passes, n)},
                 "threads": {"samples": small, **_alternate({"kit_default_threads": lambda: kit(small),
                                                             "kit_1_thread": one_thread(lambda: kit(small))},
                                                            settings.train_passes, small)}}
    if torch.cuda.is_available():
        out["cuda"] = _alternate({"kit": lambda: kit(n, "cuda"),
                                  "original_dataloader": lambda: dataloader_epoch(x, y, n, "cuda")},
                                 settings.train_passes, n)
    else:
        out["cuda"] = {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    return out


# ----------------------------------------------------------------------------- 4. memory

_CHILD = "import json, sys; from facekit.bench import _child; print(json.dumps(_child(json.loads(sys.argv[1]))))"


def _child(job: dict) -> dict:
    """Runs in a fresh interpreter for one memory measurement (see :func:`peak_memory`)."""
    t0 = time.perf_counter()
    if job["kind"] == "extract":
        import pandas as pd

        from .extract import default_workers, extract
        from .index import index_aihub

        photos = index_aihub(job["root"])
        index = pd.concat([photos] * job["repeat"], ignore_index=True)
        table, _ = extract(index, cache=job["cache"], progress=False)
        cache_bytes = sum(f.stat().st_size for f in Path(job["cache"]).rglob("*") if f.is_file())
        out = {"photos": len(index), "ok": int((table["status"] == "ok").sum()), "workers": default_workers(),
               "from_cache": int(table["from_cache"].sum()),
               "cache_bytes_per_photo": round(cache_bytes / len(photos))}  # repeated rows share one cache entry
    else:
        import torch

        from .train import time_epoch

        torch.set_num_threads(1)  # the peak does not depend on it; the time would, on a busy machine
        x, y = training_rows()
        out = time_epoch(x, y, n_samples=job["samples"])
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def peak_memory(job: dict) -> dict:
    """Run ``job`` in a subprocess; its result plus ``peak_rss_mb``, the largest sum of resident memory of
    the subprocess and all its children (worker processes), sampled every 20 ms with psutil."""
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(job)], stdout=out, stderr=err,
                                cwd=PROJECT_ROOT, text=True)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            total = 0
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            peak = max(peak, total)
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"the benchmark subprocess for {job['kind']} failed (exit {proc.returncode}):\n"
                               f"{err.read()[-3000:]}")
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = round(peak / 2**20, 1)
    return result


def bench_memory(settings: BenchSettings, tree: dict, scratch: Path) -> dict:
    """Peak memory extracting N and 10×N distinct photos, each first into a fresh cache and then again from
    that cache (every photo found there: what a resumed or repeated run does), and training on
    ``train_samples``."""
    scale = settings.memory_scale
    large_tree = write_photo_tree(scratch / f"aihub-{scale}n", tree["photos"] * scale, tree["encodings"],
                                  tree["boxes"], tree["origins"])
    rows = {}
    for key, root in (("n", tree["root"]), (f"{scale}n", large_tree["root"])):
        job = {"kind": "extract", "root": str(root), "repeat": 1, "cache": str(scratch / f"cache-memory-{key}")}
        rows[key] = peak_memory(job)
        rows[f"{key}_cached"] = peak_memory(job)
        if rows[f"{key}_cached"]["from_cache"] != rows[key]["photos"]:
            raise RuntimeError(f"the second extraction of {key} found {rows[f'{key}_cached']['from_cache']} of "
                               f"{rows[key]['photos']} photos in the cache; its memory row would not measure reading it")
    shutil.rmtree(large_tree["root"], ignore_errors=True)
    train = peak_memory({"kind": "train", "samples": settings.train_samples})
    return {"extraction": rows, "training": {"samples": settings.train_samples, **train},
            "cache_bytes_per_photo": rows["n"]["cache_bytes_per_photo"],
            "note": f"N and {scale}×N distinct ZIP members (the same photos' bytes under other names), each "
                    "extracted into a fresh cache, then again with every photo found in that cache (_cached); "
                    "peak = sum over the process and its workers"}


# ----------------------------------------------------------------------------- 5. inference server

def _static_path_rate(frames: list[bytes], n: int) -> float:
    """Frames per second of decode + static-mode FaceMesh in this process, one thread: the server's work
    for one request without HTTP."""
    from .extract import ExtractSettings, face_mesh
    from .live import decode_frame

    s = ExtractSettings()
    mesh = face_mesh(True, s.max_faces, s.min_detection_confidence)
    t0 = time.perf_counter()
    for i in range(n):
        mesh.process(decode_frame(frames[i % len(frames)]))
    return n / (time.perf_counter() - t0)


def bench_server(settings: BenchSettings, checkpoint: Path) -> dict:
    """Load test of the inference server (:func:`facekit.server.load_test` on 640×480 frames of the demo
    face) against one thread doing the same decode and static-mode FaceMesh in this process (measured
    just before and just after); ``{"skipped": reason}`` where the server cannot run."""
    from .live import demo_frames, encode_jpeg

    try:
        from .server import ServerSetupError, load_test, require_extra, running_server
    except ImportError as exc:
        return {"skipped": f"facekit.server is not available ({exc})"}
    try:
        require_extra()
    except ServerSetupError as exc:
        return {"skipped": str(exc)}
    frames = [encode_jpeg(f) for f in demo_frames(8)]
    n = settings.server_requests
    with running_server(checkpoint) as url:
        load_test(url, frames, n_requests=2 * settings.server_concurrency, concurrency=settings.server_concurrency)
        before = _static_path_rate(frames, n // 2)
        result = load_test(url, frames, n_requests=n, concurrency=settings.server_concurrency)
        after = _static_path_rate(frames, n // 2)
    result["in_process_one_thread_per_s"] = _round((before + after) / 2, 1)
    result["frame_size"] = "640x480"
    return result


def bench_browser(settings: BenchSettings, checkpoint: Path, scratch: Path) -> dict:
    """Frames per second of the live panel in a real browser (:func:`facekit.browser.browser_fps`);
    ``{"skipped": reason}`` where Chromium, ffmpeg or playwright are missing, ``{"failed": error}`` where
    the run broke (the other sections' figures are kept)."""
    from .browser import browser_fps, missing_tools

    missing = missing_tools()
    if missing:
        return {"skipped": f"{', '.join(missing)} not installed; ./kit test installs them"}
    folder = scratch / "browser"
    folder.mkdir()
    try:
        return browser_fps(folder, checkpoint, BROWSER_FORMATS, passes=settings.browser_passes,
                           seconds=settings.browser_seconds)
    except Exception as exc:  # noqa: BLE001 - a broken browser run must not lose the other sections
        return {"failed": f"{type(exc).__name__}: {exc}"[:2000]}


# ----------------------------------------------------------------------------- report

def ratios(report: dict) -> dict[str, float]:
    """Every ratio of a report, each against its reference measured in the same run."""
    pf, ex, mem = report["per_frame"], report["extraction"]["photos_per_second"], report["memory"]
    tr = report["training"]["cpu"]
    out = {
        "per_frame_vs_facemesh_tracking": pf["ratio_path_vs_tracking"],
        "per_frame_vs_facemesh_static": pf["ratio_path_vs_static"],
        "per_frame_yuv_vs_facemesh_tracking": pf["yuv"]["ratio_path_vs_tracking"],
        "per_frame_rgb_vs_facemesh_tracking": pf["rgb"]["ratio_path_vs_tracking"],
        "per_frame_vs_facemesh_graph": pf.get("ratio_path_vs_graph"),
        "per_frame_yuv_vs_facemesh_graph": pf["yuv"].get("ratio_path_vs_graph"),
        "per_frame_rgb_vs_facemesh_graph": pf["rgb"].get("ratio_path_vs_graph"),
        "facemesh_static_vs_tracking": pf["ratio_static_vs_tracking"],
        "model_alone_vs_facemesh_tracking": pf["ratio_model_vs_tracking"],
        "extraction_vs_facemesh_alone": ex["kit"] / ex["facemesh_alone"],
        "extraction_vs_facemesh_alone_full_size": ex["kit"] / ex["facemesh_alone_full_size"],
        "extraction_vs_original": ex["kit"] / ex["original"],
        "extraction_decode_alone_vs_facemesh_alone": ex["decode_alone"] / ex["facemesh_alone"],
        "extraction_ceiling_vs_facemesh_alone": report["extraction"]["ceiling_photos_per_second"] / ex["facemesh_alone"],
        "extraction_full_decode_vs_draft": ex["kit_full_decode"] / ex["kit"],
        "extraction_draft_1000_vs_draft": ex["kit_draft_1000"] / ex["kit"],
        "extraction_draft_1000_vs_original": ex["kit_draft_1000"] / ex["original"],
        f"extraction_remeasure_{REMEASURE}_vs_kit": ex[f"kit_remeasure_{REMEASURE}"] / ex["kit"],
        "extraction_2_vs_1_workers": ex["kit_2_worker_processes"] / ex["kit_1_worker_process"],
        "training_vs_original_dataloader": tr["kit"]["samples_per_second"] / tr["original_dataloader"]["samples_per_second"],
        "extraction_memory_10x": (mem["extraction"][f"{report['settings']['memory_scale']}n"]["peak_rss_mb"]
                                  / mem["extraction"]["n"]["peak_rss_mb"]),
        "extraction_memory_10x_cached": (mem["extraction"][f"{report['settings']['memory_scale']}n_cached"]["peak_rss_mb"]
                                         / mem["extraction"]["n_cached"]["peak_rss_mb"]),
        "training_memory_vs_3gb": mem["training"]["peak_rss_mb"] / 3072,
    }
    th = report["training"]["threads"]
    out["training_default_threads_vs_1_thread"] = (th["kit_default_threads"]["samples_per_second"]
                                                   / th["kit_1_thread"]["samples_per_second"])
    if "requests_per_s" in report["server"]:
        out["server_vs_in_process_one_thread"] = (report["server"]["requests_per_s"]
                                                  / report["server"]["in_process_one_thread_per_s"])
    fmts = report.get("browser", {}).get("formats", {})
    for key, fmt in (("browser_default_fps_vs_15", "auto"), ("browser_jpeg_fps_vs_15", "jpeg")):
        if (fmts.get(fmt) or {}).get("fps"):
            out[key] = fmts[fmt]["fps"] / 15
    if "kit" in report["training"]["cuda"]:
        cuda = report["training"]["cuda"]
        out["training_cuda_vs_original_dataloader"] = (cuda["kit"]["samples_per_second"]
                                                       / cuda["original_dataloader"]["samples_per_second"])
    return {k: _round(v) for k, v in out.items() if v is not None}  # None: a reference this install cannot measure


def targets(report: dict) -> list[dict]:
    """Each target with the measured ratio and whether it is met."""
    r = report["ratios"]
    rows = []
    for name, key, op, limit in TARGETS:
        value = r.get(key)
        if value is None:  # a section this machine could not run (the browser's)
            browser = report.get("browser", {})
            why = browser.get("skipped") or browser.get("failed") or "not measured"
            rows.append({"target": name, "ratio": key, "measured": None, "limit": f"{op} {limit:g}", "met": None,
                         "note": f"not measured: {why}"})
            continue
        met = value <= limit if op == "<=" else value >= limit
        rows.append({"target": name, "ratio": key, "measured": value, "limit": f"{op} {limit:g}", "met": bool(met)})
        if key == "training_memory_vs_3gb" and report["memory"]["training"]["samples"] < 100_000:
            rows[-1]["note"] = f"measured on {report['memory']['training']['samples']:,} samples (--quick)"
    return rows


def format_table(report: dict) -> str:
    """The report as Markdown: the figures with their same-run references, the stages and the targets."""
    pf, ex, tr, mem = report["per_frame"], report["extraction"], report["training"], report["memory"]
    rate, r, th = ex["photos_per_second"], report["ratios"], tr["threads"]
    n = ex["photos"]
    scales = ", ".join(f"{k} ×{v}" for k, v in ex.get("decode_scales_kit", {}).items())
    scale = report["settings"]["memory_scale"]
    rows = [
        ("per frame: kit path on YUV frames, the browser's default from a localhost page (convert → FaceMesh → "
         "normalise → model → smoothing)", f"{pf['yuv']['path_ms']:.2f} ms",
         f"FaceMesh alone, tracking {pf['yuv']['facemesh_tracking_ms']:.2f} ms",
         r["per_frame_yuv_vs_facemesh_tracking"]),
        ("per frame: kit path on JPEG frames, the browser's default over a network (decode → FaceMesh → ...)",
         f"{pf['path_ms']:.2f} ms",
         f"FaceMesh alone, tracking {pf['facemesh_tracking_ms']:.2f} ms", r["per_frame_vs_facemesh_tracking"]),
        ("per frame: kit path on RGB frames (the same, nothing to decode)", f"{pf['rgb']['path_ms']:.2f} ms",
         f"FaceMesh alone, tracking {pf['rgb']['facemesh_tracking_ms']:.2f} ms",
         r["per_frame_rgb_vs_facemesh_tracking"]),
    ]
    if "per_frame_vs_facemesh_graph" in r:
        graph = "FaceMesh graph alone, tracking (read-only frame, nothing parsed)"
        rows += [
            ("per frame: kit path on YUV frames", f"{pf['yuv']['path_ms']:.2f} ms",
             f"{graph} {pf['yuv']['facemesh_graph_ms']:.2f} ms", r["per_frame_yuv_vs_facemesh_graph"]),
            ("per frame: kit path on JPEG frames", f"{pf['path_ms']:.2f} ms",
             f"{graph} {pf['facemesh_graph_ms']:.2f} ms", r["per_frame_vs_facemesh_graph"]),
            ("per frame: kit path on RGB frames", f"{pf['rgb']['path_ms']:.2f} ms",
             f"{graph} {pf['rgb']['facemesh_graph_ms']:.2f} ms", r["per_frame_rgb_vs_facemesh_graph"]),
        ]
    rows += [
        ("per frame: kit path on JPEG frames", f"{pf['path_ms']:.2f} ms",
         f"FaceMesh alone, static mode (the original server's) {pf['facemesh_static_ms']:.2f} ms",
         r["per_frame_vs_facemesh_static"]),
        ("per frame: model alone, batch 1", f"{pf['model_alone_ms']:.3f} ms",
         f"FaceMesh alone, tracking {pf['facemesh_tracking_ms']:.2f} ms", r["model_alone_vs_facemesh_tracking"]),
        (f"extraction: kit, 1 process ({n} photos, 12 MP)", f"{rate['kit']:.1f} photos/s",
         f"FaceMesh alone on decoded photos {rate['facemesh_alone']:.1f}/s", r["extraction_vs_facemesh_alone"]),
        ("extraction: kit, 1 process", f"{rate['kit']:.1f} photos/s",
         f"FaceMesh alone on the photos decoded at full size {rate['facemesh_alone_full_size']:.1f}/s "
         f"({ex['facemesh_alone_full_size_ms']:.1f} ms)", r["extraction_vs_facemesh_alone_full_size"]),
        ("extraction: kit, 1 process", f"{rate['kit']:.1f} photos/s",
         f"original (full decode, new FaceMesh per photo) {rate['original']:.1f}/s", r["extraction_vs_original"]),
        (f"extraction: decode alone (bytes in memory → upright RGB at the kit's scales, {scales}; the floor)",
         f"{rate['decode_alone']:.1f} photos/s ({ex['decode_alone_ms']:.1f} ms)",
         f"FaceMesh alone on decoded photos {rate['facemesh_alone']:.1f}/s ({ex['facemesh_alone_ms']:.1f} ms)",
         r["extraction_decode_alone_vs_facemesh_alone"]),
        ("extraction: ceiling for one process, 1 / (decode + FaceMesh)",
         f"{ex['ceiling_photos_per_second']:.1f} photos/s",
         f"FaceMesh alone on decoded photos {rate['facemesh_alone']:.1f}/s", r["extraction_ceiling_vs_facemesh_alone"]),
        ("extraction: kit, full-size decode (draft_long_side=None)", f"{rate['kit_full_decode']:.1f} photos/s",
         f"kit, default scales {rate['kit']:.1f}/s", r["extraction_full_decode_vs_draft"]),
        (f"extraction: kit, draft_long_side={QUARTER_DRAFT} (every photo at ¼ scale; not the default)",
         f"{rate['kit_draft_1000']:.1f} photos/s", f"kit, default scales {rate['kit']:.1f}/s",
         r["extraction_draft_1000_vs_draft"]),
        (f"extraction: kit, remeasure={REMEASURE} (FaceMesh {REMEASURE} times a photo, averaged; not the default)",
         f"{rate[f'kit_remeasure_{REMEASURE}']:.1f} photos/s", f"kit, one measurement {rate['kit']:.1f}/s",
         r[f"extraction_remeasure_{REMEASURE}_vs_kit"]),
        ("extraction: kit, 2 worker processes", f"{rate['kit_2_worker_processes']:.1f} photos/s",
         f"1 worker process {rate['kit_1_worker_process']:.1f}/s", r["extraction_2_vs_1_workers"]),
        (f"training: one epoch, {tr['samples']:,} samples, 1 thread, CPU",
         f"{tr['cpu']['kit']['seconds_per_epoch']:.2f} s ({tr['cpu']['kit']['samples_per_second']:,} samples/s)",
         f"original DataLoader loop {tr['cpu']['original_dataloader']['seconds_per_epoch']:.2f} s",
         r["training_vs_original_dataloader"]),
        (f"training: {th['samples']:,} samples on {tr['default_threads']} threads (torch's default)",
         f"{th['kit_default_threads']['samples_per_second']:,} samples/s",
         f"the same on 1 thread {th['kit_1_thread']['samples_per_second']:,} samples/s",
         r["training_default_threads_vs_1_thread"]),
    ]
    if "training_cuda_vs_original_dataloader" in r:
        c = tr["cuda"]
        rows.append(("training: one epoch, CUDA", f"{c['kit']['seconds_per_epoch']:.2f} s",
                     f"original DataLoader loop {c['original_dataloader']['seconds_per_epoch']:.2f} s",
                     r["training_cuda_vs_original_dataloader"]))
    rows += [
        (f"memory: extracting {scale}×N = {mem['extraction'][f'{scale}n']['photos']} photos",
         f"{mem['extraction'][f'{scale}n']['peak_rss_mb']:.0f} MB",
         f"N = {mem['extraction']['n']['photos']} photos {mem['extraction']['n']['peak_rss_mb']:.0f} MB",
         r["extraction_memory_10x"]),
        (f"memory: the same again, all {mem['extraction'][f'{scale}n_cached']['from_cache']} photos from the cache",
         f"{mem['extraction'][f'{scale}n_cached']['peak_rss_mb']:.0f} MB",
         f"N = {mem['extraction']['n_cached']['from_cache']} photos from the cache "
         f"{mem['extraction']['n_cached']['peak_rss_mb']:.0f} MB", r["extraction_memory_10x_cached"]),
        (f"memory: training on {mem['training']['samples']:,} samples", f"{mem['training']['peak_rss_mb']:.0f} MB",
         "3 GB", r["training_memory_vs_3gb"]),
    ]
    lines = ["| measured | value | reference, same run | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d:.2f}× |" for a, b, c, d in rows]
    stages = " · ".join(f"{k} {v:.2f}" for k, v in pf["stages_ms"].items())
    limit = next(lim for _name, key, _op, lim in TARGETS if key == "per_frame_yuv_vs_facemesh_tracking")
    yuv_stages = " · ".join(f"{k} {v:.2f}" for k, v in pf["yuv"]["stages_ms"].items())
    rgb_stages = " · ".join(f"{k} {v:.2f}" for k, v in pf["rgb"]["stages_ms"].items())
    lines += ["", f"Per-frame stages (median ms), YUV frames: {yuv_stages}; kernel at most "
                  f"{pf['yuv']['kernel_fps']:.0f} frames/s. JPEG frames: {stages}; at most {pf['kernel_fps']:.0f} "
                  f"frames/s. RGB frames: {rgb_stages}; at most {pf['rgb']['kernel_fps']:.0f} frames/s.",
              f"The kit's own time per frame (the path minus FaceMesh alone, median over passes): YUV "
              f"{pf['yuv']['own_ms']:.2f} ms, JPEG {pf['own_ms']:.2f} ms, RGB {pf['rgb']['own_ms']:.2f} ms; the "
              f"≤ {limit:g}× target leaves {limit - 1:g} × FaceMesh = "
              f"{(limit - 1) * pf['yuv']['facemesh_tracking_ms']:.2f} ms at this run's FaceMesh "
              f"({pf['yuv']['facemesh_tracking_ms']:.2f} ms on the YUV frames' passes).",
              f"Landmark cache: {mem['cache_bytes_per_photo']:,} bytes per photo. Extraction worker pools took "
              + ", ".join(f"{v:.1f} s ({k.replace('_', ' ')})" for k, v in ex["pool_start_seconds"].items())
              + " to start (not in the rates)."]
    if "cuda" in tr and "skipped" in tr["cuda"]:
        lines.append(f"Training on CUDA: skipped ({tr['cuda']['skipped']}).")
    sv = report["server"]
    if "skipped" in sv:
        lines.append(f"Inference server load test: skipped ({sv['skipped']}).")
    else:
        lines.append(f"Inference server load test (`/predict/image`, {sv['frame_size']} JPEGs, {sv['requests']} requests, "
                     f"{sv['concurrency']} clients): {sv['requests_per_s']:.1f} requests/s, p50 {sv['p50_ms']:.0f} ms, "
                     f"p95 {sv['p95_ms']:.0f} ms, {sv['errors']} errors; the same decode + static FaceMesh in this "
                     f"process on one thread: {sv['in_process_one_thread_per_s']:.1f}/s "
                     f"({r['server_vs_in_process_one_thread']:.2f}×).")
    br = report.get("browser", {})
    if "formats" in br:
        parts = []
        for fmt, b in br["formats"].items():
            name = "the panel's default" if fmt == "auto" else f"{fmt!r}"
            parts.append(f"{name}, travelled as {'/'.join(b['travelled_as'])}: {b['fps']} frames/s "
                         f"(passes: {', '.join(str(p['fps']) for p in b['passes'])}), round trip {b['round_trip_ms']} ms, "
                         f"kernel handler {b['kernel_handler_ms']} ms ("
                         + " · ".join(f"{k} {v:.2f}" for k, v in b["kernel_stages_ms"].items())
                         + f"), browser capture {b['browser_capture_ms']} ms")
        lat = " · ".join(f"{k} {v:.2f}" for k, v in (br.get("kernel_latency_ms") or {}).items())
        lines.append(f"Browser (notebook 05 in JupyterLab and headless Chromium, fake camera {br['size']} at "
                     f"{br['camera_fps']} frames/s, {br['passes']} passes of {br['seconds_per_pass']:g} s per format): "
                     + "; ".join(parts) + f". Kernel stages over the whole run, both formats (median ms): {lat}.")
    elif br:
        lines.append(f"Browser: {'skipped (' + br['skipped'] if 'skipped' in br else 'FAILED (' + br['failed']}).")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {'—' if t['measured'] is None else format(t['measured'], '.2f') + '×'} | "
              f"{'—' if t['met'] is None else 'yes' if t['met'] else '**no**'}"
              f"{' (' + t['note'] + ')' if 'note' in t else ''} |" for t in report["targets"]]
    m = report["machine"]
    lines += ["", f"{m['date']}, {m['cpu']}, {m['cores']} cores, load average {m['load_average']} at the start, "
                  f"{report['load_average_end']} at the end; mode {report['mode']}."]
    return "\n".join(lines)


def run(quick: bool = False, out: Path | str | None = None, checkpoint: Path | str | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Run every section and write the report to ``out`` (default ``reports/bench.json``); returns it."""
    settings = QUICK if quick else FULL
    checkpoint = Path(checkpoint) if checkpoint else PROJECT_ROOT / "weights" / "demo_binary.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; pass --checkpoint with a facekit "
                                "checkpoint (the shipped weights/demo_binary.pt is the default)")
    out = check_writable(Path(out) if out else reports_dir() / "bench.json")  # now, not after minutes of work
    t_start = time.perf_counter()
    report: dict = {"mode": "quick" if quick else "full", "settings": asdict(settings), "machine": machine(),
                    "section_seconds": {}}

    def section(name: str, message: str, fn: Callable[[], dict]) -> None:
        log(message)
        t0 = time.perf_counter()
        report[name] = fn()
        report["section_seconds"][name] = _round(time.perf_counter() - t0, 1)

    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as tmp:
        scratch = Path(tmp)
        section("per_frame", "1/6 per frame: FaceMesh alone (tracking, static), its graph alone, the kit's path, "
                "the model alone …",
                lambda: bench_per_frame(settings, checkpoint))
        log(f"2/6 extraction: building {settings.photos} smartphone-size photos in AI Hub ZIPs …")
        tree = build_photo_zips(scratch / "aihub", settings.photos, settings.unique_photos)
        section("extraction", "    timing FaceMesh alone, the decode alone, the kit (½, full and ¼ scale, 1 and 2 workers), "
                "the original …",
                lambda: bench_extraction(settings, tree, scratch))
        section("training", f"3/6 training: one epoch over {settings.train_samples:,} samples, kit and original loop …",
                lambda: bench_training(settings))
        section("memory", "4/6 memory: extraction at N and 10×N photos, training (one subprocess each) …",
                lambda: bench_memory(settings, tree, scratch))
        section("server", "5/6 inference server load test …", lambda: bench_server(settings, checkpoint))
        section("browser", "6/6 browser: notebook 05's panel in JupyterLab and headless Chromium, YUV and JPEG "
                "frames …", lambda: bench_browser(settings, checkpoint, scratch))
    report["load_average_end"] = [_round(v, 2) for v in os.getloadavg()]
    report["seconds"] = _round(time.perf_counter() - t_start, 1)
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    report["out"] = str(out)
    return report
