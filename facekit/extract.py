"""Stage 3, **extract**: photos → FaceMesh landmarks in pixel units, cached.

- Photos are decoded straight from their ZIP (or folder), EXIF orientation is
  applied, and large JPEGs are decoded at reduced size (libjpeg's 1/2, 1/4, 1/8
  DCT scaling, through OpenCV; Pillow for everything else).
- One FaceMesh (478 points, ``refine_landmarks=True``) per process (per thread
  under a thread pool), reused for every photo it sees; any
  ``concurrent.futures.Executor`` can run the work (a process pool on all
  cores by default, or a Dask client's executor).
- Landmarks are stored in **pixel units of the full-size upright photo**
  (x·W, y·H, z·W), never MediaPipe's width/height-normalised coordinates, which
  would distort the same face differently at 4:3, 16:9 or 1:1.
- Results are cached per container (ZIP or folder) and settings, keyed by each
  member's content (ZIP CRC and size, or file size and mtime; a folder photo whose
  mtime changed, as in a copy that did not keep times, is recognised by its own
  CRC), written every few photos: a second run does no work and an interrupted run
  resumes.
- Every photo without landmarks keeps a ``status`` and a ``reason``; one bad
  member never stops a run.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import sys
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .index import BOX_COLUMNS
from .paths import cache_dir, check_writable

N_LANDMARKS = 478
NOSE_TIP = 1
STATUSES = ("ok", "no_face", "multiple_faces", "unreadable", "not_image", "skipped")
CACHE_VERSION = 3  # 3: JPEGs decoded by OpenCV (the same pixels as Pillow's, measured)


@dataclass(frozen=True)
class ExtractSettings:
    """What changes the landmarks; every field is part of the cache key.

    ``draft_long_side``: JPEGs are decoded (libjpeg's DCT scaling) at the coarsest
    of 1/2, 1/4, 1/8 scale whose long side stays at least this many pixels (FaceMesh
    itself works on a 192-px face crop, so this keeps faces far above what it sees);
    ``None`` decodes at full size.  ``min_face_side``: where the photo has a labelled
    face box (AI Hub's), the decode may be coarser still, as long as the box's
    shorter side stays at least this many pixels (:func:`jpeg_scale`); ``None``:
    boxes never change the scale.  ``max_faces=2`` lets a second face be noticed
    so group photos are reported instead of labelled with a random face.
    ``remeasure``: FaceMesh measures each decoded photo this many times, as it is and
    shifted by a few pixels, and the landmarks are averaged (:func:`remeasured`): a
    photo's landmarks move by about as much as two takes of one expression differ when
    it is merely shifted (TRAINING_DETAIL section 7 item 18); 1 (the default) measures once.
    ``reframe``/``reframe_seed``: a robustness check, not a way to extract: each decoded
    photo is first translated by its own whole-pixel offset, each axis drawn from
    −``reframe``…``reframe`` by a generator seeded with ``reframe_seed`` and the photo's
    pixels (:func:`reframe_offset`), and the landmarks are moved back; runs with several
    seeds show how much of a figure is FaceMesh's measurement (TRAINING_DETAIL section 7
    item 19).  0 (the default) leaves the photo as it is.
    """

    draft_long_side: int | None = 1024
    min_face_side: int | None = 256
    min_detection_confidence: float = 0.5
    max_faces: int = 2
    remeasure: int = 1
    reframe: int = 0
    reframe_seed: int = 0

    def __post_init__(self):
        if isinstance(self.remeasure, bool) or not isinstance(self.remeasure, int) or self.remeasure < 1:
            raise ValueError(f"remeasure must be a whole number of measurements >= 1, got {self.remeasure!r}")
        for name in ("reframe", "reframe_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")

    def key(self) -> str:
        from importlib.metadata import version

        fields = asdict(self)
        if fields["remeasure"] == 1:  # the field came later: one measurement keeps the caches made before it
            del fields["remeasure"]
        if fields["reframe"] == 0:  # likewise; without a shift the seed changes nothing
            del fields["reframe"], fields["reframe_seed"]
        text = repr((sorted(fields.items()), version("mediapipe"), CACHE_VERSION))
        return hashlib.sha1(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- decoding

class PhotoError(Exception):
    """A photo that cannot be used; ``status`` is one of :data:`STATUSES`."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


#: EXIF Orientation → the turn that shows the stored pixels upright (as ``PIL.ImageOps.exif_transpose``).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


#: A labelled box whose shorter side is under this many full-size pixels is taken as degenerate (AI Hub has some).
MIN_BOX_SIDE = 32


def jpeg_scale(size: tuple[int, int], draft_long_side: int | None, box=None, min_face_side: int | None = None) -> int:
    """The JPEG scale denominator (1, 2, 4 or 8) for a photo of ``size`` (width, height).

    Without a box: the coarsest of 8, 4, 2 whose long side stays ≥ ``draft_long_side``
    (1 for ``None``).  With a usable labelled face ``box`` (x0, y0, x1, y1 in full-size
    pixels: finite, its shorter side between :data:`MIN_BOX_SIDE` and the photo's
    shorter side) and ``min_face_side``: that, or coarser where the box's shorter side
    stays ≥ ``min_face_side`` pixels; never finer.  At 256 px the face is still
    larger than FaceMesh's own 192-px crop of it (measured: landmarks within 0.55 % of
    the face's size of a full-size decode's, as at 1/2 scale; TRAINING_DETAIL section 2).
    Only with ``draft_long_side`` set: ``None`` means full size, whatever the box.
    """
    if not draft_long_side:
        return 1
    scale = next((d for d in (8, 4, 2) if max(size) >= d * draft_long_side), 1)
    if box is not None and min_face_side:
        x0, y0, x1, y1 = (float(v) for v in box)
        side = min(x1 - x0, y1 - y0)
        if np.isfinite(side) and MIN_BOX_SIDE <= side <= min(size):
            scale = max(scale, next((d for d in (8, 4, 2) if side >= d * min_face_side), 1))
    return scale


def _upright_cv2(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W, 3) → upright, for an EXIF Orientation (one OpenCV pass; 7 takes two)."""
    import cv2

    if orientation == 2:
        return cv2.flip(rgb, 1)
    if orientation == 3:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(rgb, 0)
    if orientation == 5:
        return cv2.transpose(rgb)
    if orientation == 6:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(rgb), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return rgb


def _decode_jpeg_cv2(data: bytes, stored_size: tuple[int, int], scale: int, orientation: int) -> np.ndarray | None:
    """A colour JPEG → upright RGB (H, W, 3) uint8 at 1/``scale``, by OpenCV; None where Pillow must decide.

    OpenCV's libjpeg-turbo gives the same pixels as Pillow's (the same library and
    settings) in a third less time at 1/2 scale and less than half at full size,
    decoding straight to RGB.  It is told to ignore EXIF: the orientation applied is
    the one Pillow read, so both routes always agree.  A JPEG that does not end in
    its EOI marker (cut off, or with a trailer) goes to Pillow, which says whether
    it is truncated: libjpeg can fill a missing part grey with only a warning.
    """
    import cv2

    if not data[-256:].rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    flags = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[scale] | cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    w, h = stored_size
    if rgb is None or rgb.shape != (-(-h // scale), -(-w // scale), 3):
        return None
    return _upright_cv2(rgb, orientation)


def decode(data: bytes, draft_long_side: int | None = None, box=None,
           min_face_side: int | None = None) -> tuple[np.ndarray, int, int]:
    """Bytes → upright RGB array (H, W, 3) uint8, plus the full-size upright width and height.

    The array may be smaller than the full size (JPEG decoding at 1/2, 1/4 or 1/8
    scale, see :func:`jpeg_scale`, which the labelled face ``box``, in upright
    full-size pixels, may make coarser); landmarks found on it are mapped back to
    full-size pixels by :func:`to_pixels`.  Colour JPEGs are decoded by OpenCV
    (:func:`_decode_jpeg_cv2`); everything else (PNG, TIFF, grey or CMYK JPEGs,
    a truncated JPEG, anything OpenCV refuses) by Pillow, which says what is wrong.
    """
    if not data:
        raise PhotoError("not_image", "empty file (0 bytes): the copy or download was cut off; copy it again")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise PhotoError("not_image", "not an image (Pillow cannot identify the format)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad photo, not a crash
        raise PhotoError("unreadable", f"cannot open image: {exc}") from None
    try:
        orientation = img.getexif().get(0x0112, 1)
        width, height = img.size[::-1] if orientation in (5, 6, 7, 8) else img.size
        is_jpeg = img.format in ("JPEG", "MPO")  # MPO: a phone's JPEG with extra images after the first
        scale = jpeg_scale(img.size, draft_long_side, box, min_face_side) if is_jpeg else 1
        if is_jpeg and img.mode == "RGB":
            rgb = _decode_jpeg_cv2(data, img.size, scale, orientation)
            if rgb is not None:
                return rgb, width, height
        if scale > 1:
            img.draft("RGB", (max(1, img.size[0] // scale), max(1, img.size[1] // scale)))
        img.load()
        # Read the tag again: some loaders turn the photo upright themselves and drop it (Pillow's TIFF loader,
        # whose size is upright from the start), and turning it once more would lay the face on its side.
        orientation = img.getexif().get(0x0112, 1)
        if orientation in _UPRIGHT:
            img = img.transpose(_UPRIGHT[orientation])
        if scale == 1:
            width, height = img.size
        if img.mode != "RGB":
            img = img.convert("RGB")
        rgb = np.asarray(img)  # one copy; exif_transpose and convert("RGB") would each add another
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise PhotoError("unreadable", f"corrupt or truncated image: {exc}") from None
    return rgb, width, height


def to_pixels(normalised: np.ndarray, width: int, height: int) -> np.ndarray:
    """MediaPipe's normalised (x/W, y/H, z/W) → pixel units (x·W, y·H, z·W); (…, 478, 3) float32."""
    scale = np.array([width, height, width], dtype=np.float32)
    return (np.asarray(normalised, dtype=np.float32) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- FaceMesh

# One FaceMesh per thread and settings, built on first use.  Per thread, not per
# process: a FaceMesh graph is not thread-safe, and two threads sharing one (a
# ThreadPoolExecutor, a threaded Dask worker) silently get each other's landmarks
# and can leave the graph failing every later call ("Packet timestamp mismatch").
_LOCAL = threading.local()


# MediaPipe 0.10.21 writes start-up lines from C++ straight to the process's file descriptor 2: TFLite's
# "Created TensorFlow Lite XNNPACK delegate", absl's notice that it logs to stderr before InitializeLog, two
# "Feedback manager requires a model with a single signature" warnings each time a FaceMesh graph starts
# (built or reset), and "Using NORM_RECT without IMAGE_DIMENSIONS" at the first face a process sees.  No
# setting turns them off (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL are not read: absl, not glog, since
# mediapipe 0.10.x; mediapipe issues #5371, #5737), and in a notebook they show as a red box that reads like
# an error.  They are harmless (the projection warning concerns non-square regions; FaceMesh's face regions
# are square, and tests/test_normalize.py checks the landmarks on 4:3, 16:9 and square photos alike).
MEDIAPIPE_NOISE = (b"Created TensorFlow Lite XNNPACK delegate for CPU.",
                   b"All log messages before absl::InitializeLog() is called are written to STDERR",
                   b"inference_feedback_manager.cc:", b"landmark_projection_calculator.cc:")
_QUIET_LOCK = threading.RLock()  # fd 2 is the process's: one redirection at a time, nested calls pass through
_quiet_depth = 0
_FACE_SEEN = False  # whether this process has found a face yet (the projection warning comes with the first)


@contextlib.contextmanager
def quiet_mediapipe():
    """Hold back :data:`MEDIAPIPE_NOISE` lines written to file descriptor 2 inside the block.

    Everything else written there meanwhile (by any thread) is written back, in order, when
    the block ends, so no message is lost.  Meant for the moments MediaPipe starts a graph:
    :func:`face_mesh` and :func:`restart` use it.
    """
    global _quiet_depth
    with _QUIET_LOCK:
        if _quiet_depth:
            yield
            return
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            held = tempfile.TemporaryFile()
        except OSError:  # no writable temporary folder: let the lines through rather than fail
            yield
            return
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a windowless process): nothing to hold back
            held.close()
            yield
            return
        os.dup2(held.fileno(), 2)
        _quiet_depth = 1
        try:
            yield
        finally:
            _quiet_depth = 0
            for stream in (sys.stderr, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not any(marker in line for marker in MEDIAPIPE_NOISE)]
            held.close()
            if kept:
                os.write(2, b"".join(kept))


_BLANK = np.zeros((64, 64, 3), np.uint8)
_BLANK.flags.writeable = False  # as find_faces hands frames to the graph


def _settle(mesh) -> None:
    """Wait for a FaceMesh graph that has just started: its calculators open on MediaPipe's own threads after
    the constructor (or ``reset``) returns; a frame through the graph waits for them (a blank one finds nothing)."""
    _faces(_BLANK, mesh)


def face_mesh(static: bool = True, max_faces: int = 2, min_detection_confidence: float = 0.5):
    """This thread's FaceMesh for these settings (built once, then reused; MediaPipe's start-up lines held back)."""
    meshes = _LOCAL.__dict__.setdefault("meshes", {})
    key = (static, max_faces, min_detection_confidence)
    if key not in meshes:
        import mediapipe as mp

        with quiet_mediapipe():
            mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence, min_tracking_confidence=0.5)
            _settle(mesh)
        meshes[key] = mesh
    return meshes[key]


def restart(mesh) -> None:
    """``mesh.reset()`` (a tracking FaceMesh forgets the face it followed), its start-up lines held back."""
    with quiet_mediapipe():
        mesh.reset()
        _settle(mesh)


# One NormalizedLandmark as protobuf writes it inside a NormalizedLandmarkList: field 1 (length-delimited,
# 15 bytes) holding x, y, z as fields 1–3 (fixed32 floats, little-endian).  MediaPipe's FaceMesh sets no
# visibility or presence, so a face serialises to 478 records of 17 bytes each.
_LANDMARK_RECORD = np.dtype([("key", "u1"), ("size", "u1"), ("kx", "u1"), ("x", "<f4"), ("ky", "u1"), ("y", "<f4"),
                             ("kz", "u1"), ("z", "<f4")])
_LANDMARK_KEYS = {"key": 0x0A, "size": 15, "kx": 0x0D, "ky": 0x15, "kz": 0x1D}
_KEY_BYTES = tuple((_LANDMARK_RECORD.fields[k][1], bytes((v,))) for k, v in _LANDMARK_KEYS.items())  # (offset, byte)
_X_OFFSET = _LANDMARK_RECORD.fields["x"][1]
_XYZ_STRIDE = _LANDMARK_RECORD.fields["y"][1] - _X_OFFSET  # x → y → z are evenly spaced (a key byte between)


def _wire_array(raw: bytes) -> np.ndarray | None:
    """A serialised ``NormalizedLandmarkList`` → (n, 3) float32, or None unless every record has the layout above.

    Records with exactly these keys and sizes, back to back, can only be read one way, so the
    floats are protobuf's own.  The keys are checked with bytes slices and the floats copied out
    of one strided view: right after a FaceMesh call, with its caches cold, each NumPy call costs
    10–20 µs, and this takes 0.06 ms a face where a structured array's fields took 0.18.
    """
    size = _LANDMARK_RECORD.itemsize
    n, rest = divmod(len(raw), size)
    if not n or rest or any(raw[offset::size] != key * n for offset, key in _KEY_BYTES):
        return None
    return np.ndarray((n, 3), "<f4", raw, _X_OFFSET, (size, _XYZ_STRIDE)).astype(np.float32)


def _attribute_array(face) -> np.ndarray:
    return np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32).reshape(len(face.landmark), 3)


def landmark_array(face) -> np.ndarray:
    """A ``NormalizedLandmarkList`` → (n, 3) float32 (x, y, z).

    Reads the list's protobuf wire format in one NumPy call (0.01 ms) instead of
    1,434 Python attribute reads (0.2 ms per face); anything that does not have the
    exact record layout above (a field left unset, visibility present) takes the
    attribute route, so the result is always the same.
    """
    points = _wire_array(face.SerializeToString())
    return _attribute_array(face) if points is None else points


def _serialized_array(raw: bytes) -> np.ndarray:
    """One face as FaceMesh's graph serialised it → (n, 3) float32, by :func:`landmark_array`'s two routes."""
    points = _wire_array(raw)
    if points is None:
        from mediapipe.framework.formats import landmark_pb2

        points = _attribute_array(landmark_pb2.NormalizedLandmarkList.FromString(raw))
    return points


# find_faces drives FaceMesh's graph as SolutionBase.process does (the same input stream, packet type,
# timestamps and output stream), minus what costs time per frame and gives nothing here: a new namedtuple
# class per call, each face's protobuf parsed in Python and then serialised again to be read by NumPy
# (0.25 ms a 640×480 frame here, both routes on a read-only frame).  That reads private parts of
# mediapipe: SolutionBase's _graph, _graph_outputs, _simulated_timestamp and stream type tables, and the
# _packet_getter binding.  It is acceptable ONLY because mediapipe is pinned to 0.10.21 (pyproject.toml,
# requirements.lock, environment.yml); where any of them is missing, find_faces says so once and calls
# the public mesh.process instead, which gives the same landmarks.
_IMAGE_STREAM, _LANDMARK_STREAM = "image", "multi_face_landmarks"
_GRAPH_PARTS: tuple | None = None  # (create_image, SRGB, serialized proto list getter, PacketDataType), () if absent
_PUBLIC_ROUTE_WARNED = False


def _graph_parts() -> tuple:
    global _GRAPH_PARTS
    if _GRAPH_PARTS is None:
        try:
            from mediapipe.python import packet_creator
            from mediapipe.python._framework_bindings import _packet_getter
            from mediapipe.python._framework_bindings.image_frame import ImageFormat
            from mediapipe.python.solution_base import PacketDataType

            _GRAPH_PARTS = (packet_creator.create_image, ImageFormat.SRGB, _packet_getter._get_serialized_proto_list,
                            PacketDataType)
        except (ImportError, AttributeError):
            _GRAPH_PARTS = ()
    return _GRAPH_PARTS


def graph_route(mesh) -> bool:
    """Whether :func:`find_faces` can drive this FaceMesh's graph directly (mediapipe 0.10.21's layout).

    False also for a closed FaceMesh (its public ``process`` then says so).  The first time the
    layout is not there, a ``RuntimeWarning`` names the installed mediapipe.
    """
    global _PUBLIC_ROUTE_WARNED
    parts = _graph_parts()
    if parts and getattr(mesh, "_graph", None) is not None:
        types = parts[3]
        if (getattr(mesh, "_input_stream_type_info", None) == {_IMAGE_STREAM: types.IMAGE}
                and getattr(mesh, "_output_stream_type_info", None) == {_LANDMARK_STREAM: types.PROTO_LIST}
                and isinstance(getattr(mesh, "_graph_outputs", None), dict)
                and isinstance(getattr(mesh, "_simulated_timestamp", None), int)):
            return True
    elif parts and hasattr(mesh, "_graph"):
        return False  # closed: nothing to warn about
    if not _PUBLIC_ROUTE_WARNED:
        import warnings
        from importlib.metadata import version

        _PUBLIC_ROUTE_WARNED = True
        warnings.warn(f"mediapipe {version('mediapipe')} does not have the FaceMesh internals of 0.10.21, the "
                      "version facekit is pinned to: FaceMesh is called through its public process() instead "
                      "(same landmarks, about 0.25 ms slower per frame). Install the pinned version with "
                      "pip install mediapipe==0.10.21", RuntimeWarning, stacklevel=3)
    return False


def run_graph(frame: np.ndarray, mesh):
    """One frame through FaceMesh's graph, exactly as ``mesh.process`` sends it → the landmark packet, or None.

    ``frame``: (H, W, 3) uint8 RGB, C-contiguous and **read-only**: the graph then reads
    the caller's pixels where they are (a writeable array is copied first, 0.2 ms at
    640×480).  Nothing is parsed.  Only where :func:`graph_route` is true.
    """
    create_image, srgb = _graph_parts()[:2]
    mesh._graph_outputs.clear()
    # SolutionBase's own step (30 frames/s of simulated time), on its own counter: calls through either
    # route share one timeline, and mesh.reset() (a new run of the same graph) needs no timestamp reset.
    mesh._simulated_timestamp += 33333
    mesh._graph.add_packet_to_input_stream(
        stream=_IMAGE_STREAM, packet=create_image(frame, image_format=srgb).at(mesh._simulated_timestamp))
    mesh._graph.wait_until_idle()  # the graph is done with the frame before the caller gets it back
    return mesh._graph_outputs.get(_LANDMARK_STREAM)


def find_faces(rgb: np.ndarray, mesh) -> list[np.ndarray]:
    """All faces FaceMesh finds in an RGB frame (H, W, 3) uint8, each (478, 3) float32 in MediaPipe's normalised units.

    The same landmarks, bit for bit, as ``mesh.process(rgb)`` read point by point,
    in less time: the graph reads a read-only view of the pixels instead of a copy
    (a non-contiguous array is made contiguous first), and each face's serialised
    landmarks go straight to NumPy (:func:`run_graph`; the public ``mesh.process``
    where that route is missing, see :func:`graph_route`).  The caller's array and
    its flags are left as they were.
    """
    frame = np.asarray(rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"FaceMesh needs an RGB frame of shape (H, W, 3) and dtype uint8; got shape "
                         f"{frame.shape}, dtype {frame.dtype}")
    frame = np.ascontiguousarray(frame).view()
    frame.flags.writeable = False
    if not _FACE_SEEN:
        return _first_faces(frame, mesh)
    return _faces(frame, mesh)


def _faces(frame: np.ndarray, mesh) -> list[np.ndarray]:
    """:func:`find_faces` on a frame already checked, C-contiguous and read-only."""
    if graph_route(mesh):
        packet = run_graph(frame, mesh)
        if packet is None or packet.is_empty():  # an empty packet: no face in this frame
            return []
        return [_serialized_array(raw) for raw in _graph_parts()[2](packet)]
    result = mesh.process(frame)
    return [landmark_array(face) for face in result.multi_face_landmarks or []]


def _first_faces(frame: np.ndarray, mesh) -> list[np.ndarray]:
    """:func:`find_faces` until this process has found a face: MediaPipe warns once, at the first one.

    Each such frame pays for the block (0.16 ms here), a faceless live stream on every frame until a face shows."""
    global _FACE_SEEN
    with quiet_mediapipe():
        faces = _faces(frame, mesh)
    _FACE_SEEN = _FACE_SEEN or bool(faces)
    return faces


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def landmarks_from_rgb(rgb: np.ndarray, settings: ExtractSettings = ExtractSettings(),
                       size: tuple[int, int] | None = None, box=None) -> np.ndarray:
    """One upright RGB photo (H, W, 3) uint8 → (478, 3) float32 pixel-unit landmarks; raises :class:`PhotoError`.

    ``size`` is the full-size (width, height) when ``rgb`` was decoded smaller.
    ``box`` (x0, y0, x1, y1 in full-size upright pixels), the labelled face: when
    several faces are found, the one overlapping it most is used; without a box
    a photo with several faces is refused, since its label cannot say which it means.
    """
    mesh = face_mesh(True, settings.max_faces, settings.min_detection_confidence)
    rgb = np.ascontiguousarray(rgb)
    width, height = size or (rgb.shape[1], rgb.shape[0])
    if settings.reframe:
        dx, dy = reframe_offset(rgb, settings.reframe, settings.reframe_seed)
        if dx or dy:
            moved = landmarks_from_rgb(shifted(rgb, dx, dy), replace(settings, reframe=0), size, box)
            return moved - np.array([dx * width / rgb.shape[1], dy * height / rgb.shape[0], 0.0], np.float32)
    found = find_faces(rgb, mesh)
    if not found:
        raise PhotoError("no_face", "no face found")
    faces = [to_pixels(f, width, height) for f in found]
    best = 0
    if len(faces) > 1:
        if box is None or not np.all(np.isfinite(box)):
            raise PhotoError("multiple_faces", f"{len(faces)} faces found; the label cannot say which one it means")
        overlap = [_iou((*f[:, :2].min(0), *f[:, :2].max(0)), box) for f in faces]
        best = int(np.argmax(overlap))
        if overlap[best] < 0.3:
            raise PhotoError("multiple_faces", f"{len(faces)} faces found and none matches the labelled face box")
    if settings.remeasure > 1:
        return to_pixels(remeasured(rgb, found[best], mesh, settings.remeasure), width, height)
    return faces[best]


#: :func:`remeasured` shifts the photo to points on a circle of this radius, as a share of the face's width.
REMEASURE_RADIUS = 0.06


def remeasure_shifts(k: int, face_width: float) -> list[tuple[int, int]]:
    """The ``k`` − 1 whole-pixel shifts (dx, dy) of :func:`remeasured`: evenly spaced in angle on a circle of radius
    :data:`REMEASURE_RADIUS` × ``face_width`` pixels (at least 1 px, so no shift is (0, 0))."""
    radius = max(1.0, REMEASURE_RADIUS * float(face_width))
    angles = 2 * np.pi * np.arange(k - 1) / max(k - 1, 1)
    return [(int(round(radius * np.cos(a))), int(round(radius * np.sin(a)))) for a in angles]


def shifted(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``rgb`` translated by whole pixels (``dx`` right, ``dy`` down), the size kept, edge pixels repeated."""
    import cv2

    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_REPLICATE)


def reframe_offset(rgb: np.ndarray, reframe: int, seed: int) -> tuple[int, int]:
    """The whole-pixel offset (dx, dy) by which ``ExtractSettings(reframe=reframe, reframe_seed=seed)`` translates
    ``rgb``: each axis uniform over −``reframe``…``reframe``, from a generator seeded with ``seed`` and a checksum of
    the photo's pixels, so a photo gets the same offset in every run and process and other photos independent ones."""
    checksum = zlib.crc32(np.ascontiguousarray(rgb[::4, ::4]).tobytes())
    rng = np.random.default_rng([seed, checksum, *rgb.shape])
    dx, dy = rng.integers(-reframe, reframe + 1, 2)
    return int(dx), int(dy)


def remeasured(rgb: np.ndarray, face: np.ndarray, mesh, k: int) -> np.ndarray:
    """The mean of ``k`` FaceMesh measurements of one face: ``face`` (478, 3), found in ``rgb`` in MediaPipe's
    normalised units, and ``k`` − 1 more in copies of ``rgb`` shifted by :func:`remeasure_shifts` (whole pixels, edge
    pixels repeated, the size kept), each the face overlapping ``face`` most, moved back by its shift.  A copy
    where no face overlaps it (IoU < 0.3) is left out of the mean.  Same units as ``face``."""
    h, w = rgb.shape[:2]
    unit = np.array([w, h], dtype=np.float64)
    ref_box = (*face[:, :2].min(0), *face[:, :2].max(0))
    measured = [np.asarray(face, dtype=np.float64)]
    for dx, dy in remeasure_shifts(k, (ref_box[2] - ref_box[0]) * w):
        moved = shifted(rgb, dx, dy)
        back = np.array([dx, dy]) / unit
        candidates = [np.column_stack([f[:, :2] - back, f[:, 2]]) for f in find_faces(moved, mesh)]
        if not candidates:
            continue
        overlap = [_iou((*c[:, :2].min(0), *c[:, :2].max(0)), ref_box) for c in candidates]
        if max(overlap) >= 0.3:
            measured.append(candidates[int(np.argmax(overlap))])
    return np.mean(measured, axis=0).astype(np.float32)


def landmarks_from_bytes(data: bytes, settings: ExtractSettings = ExtractSettings(),
                         box=None) -> tuple[np.ndarray, int, int]:
    """One photo's bytes → ((478, 3) float32 pixel-unit landmarks, width, height); raises :class:`PhotoError`.

    Where the labelled ``box`` let the photo be decoded coarser than ``draft_long_side`` alone would
    (:func:`jpeg_scale`), the box is checked against the face found: if there is none, or its landmarks
    span less than half of ``min_face_side`` decoded pixels (the box overstated the face), the photo is
    decoded again by ``draft_long_side`` alone, so a wrong box never costs a face its resolution.
    """
    rgb, width, height = decode(data, settings.draft_long_side, box, settings.min_face_side)
    used = max(width, height) / max(rgb.shape[:2])  # the scale decoded at (libjpeg rounds sizes up)
    if box is None or used <= jpeg_scale((width, height), settings.draft_long_side) * 1.01:  # the box changed nothing
        return landmarks_from_rgb(rgb, settings, (width, height), box), width, height
    try:
        lm = landmarks_from_rgb(rgb, settings, (width, height), box)
        if float(np.min(lm[:, :2].max(0) - lm[:, :2].min(0))) / used >= settings.min_face_side / 2:
            return lm, width, height
    except PhotoError as err:
        if err.status != "no_face":
            raise
    rgb = decode(data, settings.draft_long_side)[0]
    return landmarks_from_rgb(rgb, settings, (width, height), box), width, height


def read_bytes(container: str, member: str) -> bytes:
    """A photo's bytes from its ZIP or folder (``container``/``member`` as in an index row)."""
    if str(container).lower().endswith(".zip"):
        with zipfile.ZipFile(container) as zf:
            return zf.read(member)
    return (Path(container) / member).read_bytes()


#: glibc malloc settings for processes that extract (mallopt parameter numbers from <malloc.h>): blocks up
#: to 32 MB (glibc's most) come from the heap, and up to 128 MB of freed heap is kept for the next photo.
_MALLOC_SETTINGS = ((-3, 32 << 20), (-1, 128 << 20))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
_ALLOCATOR_TUNED: bool | None = None


def tune_allocator() -> bool:
    """Keep freed photo buffers in this process for the next photo (glibc only; once per process).

    Decoding an EXIF-rotated phone photo allocates two 9 MB buffers (the decoded and
    the turned pixels).  With glibc's default, adaptive thresholds, freeing them can
    hand the memory back to the system, and the next photo then faults it in again,
    page by page: 2,400–2,900 page faults and about 6 ms more per rotated 12 MP photo
    in a fresh worker process (37–39 ms instead of 32 ms), while a long-lived process
    whose heap happens to be laid out otherwise pays nothing.  Fixed thresholds
    (:data:`_MALLOC_SETTINGS`) make every process behave like the lucky one: at most
    128 MB of freed memory stays with the process, a constant, not a growth.
    Called by every extraction task, in whichever process runs it (local workers,
    Dask workers).  Returns whether the settings were applied (False off glibc).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        _ALLOCATOR_TUNED = False
        try:
            import ctypes
            import platform

            if platform.libc_ver()[0] == "glibc":
                mallopt = ctypes.CDLL(None).mallopt
                _ALLOCATOR_TUNED = all(mallopt(param, value) == 1 for param, value in _MALLOC_SETTINGS)
        except (OSError, AttributeError):
            pass
    return _ALLOCATOR_TUNED


def _open_archive(container: str) -> zipfile.ZipFile:
    """This thread's open ``ZipFile`` for ``container``, kept for the next chunk of the same ZIP.

    Opening a ZIP reads its whole central directory: 36 ms for 10,000 members here, against about
    0.6 s of work in a 16-photo chunk, so reopening it for every chunk cost a real download's
    extraction about 4–6 % (measured: 27.8 against 26.8 photos/s).  One ZIP per thread stays
    open; it is reopened when the file's size or modification time changes, and
    :func:`_close_archive` closes it.
    """
    stat = os.stat(container)
    key = (os.path.abspath(container), stat.st_size, stat.st_mtime_ns)
    held = getattr(_LOCAL, "archive", None)
    if held is not None and held[0] == key:
        return held[1]
    _close_archive()
    archive = zipfile.ZipFile(container)
    _LOCAL.archive = (key, archive)
    return archive


def _close_archive() -> None:
    """Close this thread's ZIP kept open by :func:`_open_archive`, if any."""
    held = getattr(_LOCAL, "archive", None)
    _LOCAL.archive = None
    if held is not None:
        held[1].close()


def _extract_chunk(container: str, members: list[str], settings: ExtractSettings,
                   boxes: list | None = None) -> list[tuple]:
    """Worker task: (member, status, reason, landmarks or None, width, height, cacheable, crc) per member.

    ``crc``: a folder photo's CRC-32 (as :func:`_file_crc` gives it; None for ZIP members, whose CRC the
    index already has, and where the file could not be read), so that its cache entry is also found
    after a copy that changed its mtime.  Runs in any process; opens the container itself so only names
    cross the wire (and keeps a ZIP open for the next chunk of it, :func:`_open_archive`).  Failures to read the container (a cut-off
    copy, a network drive) are not cacheable: they say nothing about the photo and are retried on the
    next run; nor are errors other than a :class:`PhotoError` (FaceMesh's, memory), for the same reason.
    """
    tune_allocator()
    out = []
    boxes = boxes or [None] * len(members)
    try:
        archive = _open_archive(container) if container.lower().endswith(".zip") else None
    except (zipfile.BadZipFile, OSError) as exc:
        return [(m, "unreadable", f"cannot open {container}: {exc}", None, 0, 0, False, None) for m in members]
    failed = False
    for member, box in zip(members, boxes):
        try:
            data = archive.read(member) if archive else (Path(container) / member).read_bytes()
        except Exception as exc:  # noqa: BLE001 - the container, not the photo, failed
            out.append((member, "unreadable", f"cannot read from {container}: {type(exc).__name__}: {exc}",
                        None, 0, 0, False, None))
            failed = True
            continue
        crc = None if archive else zlib.crc32(data)
        try:
            lm, w, h = landmarks_from_bytes(data, settings, box)
            out.append((member, "ok", "", lm, w, h, True, crc))
        except PhotoError as err:
            out.append((member, err.status, err.reason, None, 0, 0, True, crc))
        except Exception as exc:  # noqa: BLE001 - one bad member never stops a run
            # Not the photo's fault as far as anyone can tell (decode turns every decoding failure into a
            # PhotoError): a FaceMesh graph error, memory.  Reported, not cached: the next run tries it again.
            out.append((member, "unreadable", f"{type(exc).__name__}: {exc} (not kept in the landmark cache: "
                        "the next run tries this photo again)", None, 0, 0, False, crc))
    if failed and archive is not None:
        _close_archive()  # a handle that failed is not kept: the next chunk opens the file afresh
    return out


# ----------------------------------------------------------------------------- cache

def _boxes(rows: pd.DataFrame) -> list:
    if not set(BOX_COLUMNS) <= set(rows.columns):
        return [None] * len(rows)
    values = rows[BOX_COLUMNS].to_numpy(dtype=float)
    return [tuple(v) if np.isfinite(v).all() else None for v in values]


def _box_suffixes(rows: pd.DataFrame) -> list[str]:
    return ["" if b is None else "|" + ",".join(f"{v:.0f}" for v in b) for b in _boxes(rows)]


def _revision(member: str) -> str:
    """A key suffix for the kinds of photo whose decoding changed since ``CACHE_VERSION``, so that only they are
    extracted again: TIFFs ("|tiff2": an EXIF-turned TIFF was turned twice before 2026-12-07)."""
    return "|tiff2" if member.lower().endswith((".tif", ".tiff")) else ""


def _content_keys(rows: pd.DataFrame) -> list[str]:
    """Cache key per photo: its content (ZIP CRC and size, or file size and mtime) and labelled box."""
    boxes = [x + _revision(m) for m, x in zip(rows["member"], _box_suffixes(rows))]
    if "crc" in rows and rows["crc"].notna().all():
        return [f"{m}|{int(c)}|{int(b)}{x}" for m, c, b, x in zip(rows["member"], rows["crc"], rows["bytes"], boxes)]
    mtime = rows["mtime_ns"] if "mtime_ns" in rows else pd.Series(0, index=rows.index)
    return [f"{m}|{int(b)}|{int(t)}{x}" for m, b, t, x in zip(rows["member"], rows["bytes"], mtime, boxes)]


#: Marks a folder photo's CRC key (:func:`_crc_key`), stored beside its entry (by size and mtime) as an alias.
_CRC_MARK = "|crc32="


def _crc_key(member: str, nbytes: int, crc: int, box_suffix: str) -> str:
    return f"{member}|{int(nbytes)}{_CRC_MARK}{int(crc):08x}{box_suffix}{_revision(member)}"


def _file_crc(path: Path) -> int | None:
    """A file's CRC-32 (zlib's, as ZIP's), read in 1 MB blocks; None where it cannot be read."""
    crc = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                crc = zlib.crc32(block, crc)
    except OSError:
        return None
    return crc


def _cache_folder(container: str, settings: ExtractSettings, root: Path) -> Path:
    name = Path(container).name
    slug = re.sub(r"[^\w.-]+", "_", name)[:60]
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return root / "landmarks" / f"{slug}-{digest}-{settings.key()}"


def _load_cache(folder: Path, aliases: dict[str, str] | None = None) -> dict[str, tuple]:
    """key → (status, reason, landmarks, width, height) of every cached photo; ``aliases``, where given, is
    filled with each folder photo's CRC key → its key (:func:`_crc_key`; stored once, beside it)."""
    entries: dict[str, tuple] = {}
    for part in sorted(folder.glob("part-*.npz")):
        try:
            # Each array read once per part: z[name] reads (and decompresses) the whole array on every
            # access, and a row of it is a view that keeps that whole copy alive, so reading row by row
            # held one copy of the part's landmarks per photo (841 MB for 1,173 cached photos).
            with np.load(part, allow_pickle=False) as z:
                keys, status, reason, lms, width, height = (
                    z[name] for name in ("keys", "status", "reason", "landmarks", "width", "height"))
                crc_keys = z["crc_keys"].tolist() if "crc_keys" in z.files else []
        except Exception:  # noqa: BLE001 - a part cut off by a crash is redone, not trusted
            part.unlink(missing_ok=True)
            continue
        for i, key in enumerate(keys.tolist()):
            entries[str(key)] = (str(status[i]), str(reason[i]), lms[i], int(width[i]), int(height[i]))
        if aliases is not None:
            aliases.update((str(a), str(k)) for a, k in zip(crc_keys, keys.tolist()) if a)
    return entries


def _save_part(folder: Path, keys: list[str], results: list[tuple], crc_keys: list[str] | None = None) -> None:
    """One cache part: ``results`` (tuples as :func:`_extract_chunk` gives them) under ``keys``, and each
    folder photo's CRC key (``crc_keys``, "" where none) beside its key."""
    folder.mkdir(parents=True, exist_ok=True)
    lms = np.full((len(results), N_LANDMARKS, 3), np.nan, dtype=np.float32)
    for i, r in enumerate(results):
        if r[3] is not None:
            lms[i] = r[3]
    tmp = folder / f".tmp-{uuid.uuid4().hex}.npz"
    np.savez(tmp, keys=np.array(keys), status=np.array([r[1] for r in results]),
             reason=np.array([r[2] for r in results]), landmarks=lms,
             width=np.array([r[4] for r in results], dtype=np.int32),
             height=np.array([r[5] for r in results], dtype=np.int32),
             crc_keys=np.array(crc_keys if crc_keys is not None else [""] * len(results)))
    os.replace(tmp, folder / f"part-{uuid.uuid4().hex}.npz")  # atomic: a part is whole or absent


def _consolidate(folder: Path, rename: dict[str, str] | None = None) -> None:
    """The cache's parts as one; ``rename`` (old key → new key) moves entries to new keys (a folder photo
    found by its CRC under another mtime: its entry moves to today's, so nothing is stored twice)."""
    parts = sorted(folder.glob("part-*.npz"))
    if len(parts) < 2 and not rename:
        return
    aliases: dict[str, str] = {}
    entries = _load_cache(folder, aliases)
    crc_of = {k: a for a, k in aliases.items()}
    for old, new in (rename or {}).items():
        if old in entries:
            entries[new] = entries.pop(old)
            if old in crc_of:
                crc_of[new] = crc_of.pop(old)
    keys = list(entries)
    _save_part(folder, keys, [(k, *entries[k]) for k in keys], [crc_of.get(k, "") for k in keys])
    for p in parts:
        p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- driver

def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _exit_with_parent(parent: int) -> None:
    """Pool worker initializer: a worker whose parent is gone (killed with SIGKILL, or out of memory, with no
    chance to stop its pool) exits within a second, instead of waiting for work forever: a process pool's
    workers hold both ends of its queue, so they never see it close."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="facekit-parent-watch", daemon=True).start()


def extract(index: pd.DataFrame, settings: ExtractSettings = ExtractSettings(), *,
            workers: int | None = None, executor: Executor | None = None, chunk_size: int = 16,
            cache: Path | str | None = None, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Landmarks for every row of an index.

    Returns ``(table, landmarks)``: ``table`` is the index (same row order) with
    ``status``, ``reason``, ``width``, ``height`` and ``from_cache`` (found in the landmark
    cache, not extracted by this call) added; ``landmarks`` is
    ``(N, 478, 3) float32`` in pixel units of the upright full-size photo, NaN
    where ``status != "ok"``.  Rows the index already marks with a ``problem`` are
    ``skipped`` with that reason.

    ``workers`` defaults to every core; ``executor`` (any
    ``concurrent.futures.Executor``, e.g. ``dask.distributed.Client(...).get_executor()``)
    overrides it.  Workers open the ZIPs themselves, so they must see the same paths.
    """
    from tqdm.auto import tqdm

    table = index.reset_index(drop=True).copy()
    n = len(table)
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
    status = np.array(["skipped"] * n, dtype=object)
    reason = table["problem"].fillna("").astype(str).to_numpy(dtype=object) if "problem" in table \
        else np.array([""] * n, dtype=object)
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    from_cache = np.zeros(n, dtype=bool)
    usable = table["problem"].isna().to_numpy() if "problem" in table else np.ones(n, bool)
    root = Path(cache) if cache else cache_dir()

    if "source" in table:  # synthetic rows are generated, not photographed
        from . import synthetic

        syn = usable & (table["source"] == synthetic.SOURCE).to_numpy()
        if syn.any():
            rows = np.flatnonzero(syn)
            landmarks[rows], width[rows], height[rows] = synthetic.render(table.iloc[rows])
            status[rows], reason[rows] = "ok", ""
            usable = usable & ~syn

    missing = sorted({c for c in table.loc[usable, "container"]} - {c for c in table["container"] if Path(c).exists()})
    if missing:
        raise FileNotFoundError(f"{missing[0]} does not exist; was the data moved? Re-run the index on its new location")

    todo: list[tuple] = []  # container, members, keys, rows, boxes
    folders: dict[str, Path] = {}
    for container, group in table[usable].groupby("container", sort=True):
        folder = _cache_folder(container, settings, root)
        folders[container] = folder
        aliases: dict[str, str] = {}
        cached = _load_cache(folder, aliases)
        keys = _content_keys(group)
        # A folder photo missed by size and mtime may be one the cache has under another mtime (a copy that
        # did not keep times): look for it by its own CRC, where the cache holds such keys at all.
        # Only a photo with the same name and size as one under a CRC key can be such a copy: a new photo (or
        # one whose size changed) is not read twice (once here to hash it, once to extract it).
        by_crc = {a.split(_CRC_MARK, 1)[0] for a in aliases} if not container.lower().endswith(".zip") else set()
        pending, renamed = [], {}
        for row, member, key, box, nbytes, suffix in zip(group.index, group["member"], keys, _boxes(group),
                                                         group["bytes"], _box_suffixes(group)):
            hit = cached.get(key)
            if hit is None and f"{member}|{int(nbytes)}" in by_crc:
                crc = _file_crc(Path(container) / member)
                old = None if crc is None else aliases.get(_crc_key(member, nbytes, crc, suffix))
                hit = cached.get(old) if old else None
                if hit is not None:
                    renamed[old] = key  # found by content: its entry moves to today's mtime
            if hit is None:
                pending.append((row, member, key, box))
                continue
            status[row], reason[row], landmarks[row], width[row], height[row] = hit
            from_cache[row] = True
        if renamed:
            _consolidate(folder, renamed)
        for start in range(0, len(pending), chunk_size):
            part = pending[start:start + chunk_size]
            todo.append((container, [p[1] for p in part], [p[2] for p in part], [p[0] for p in part],
                         [p[3] for p in part]))

    total = sum(len(t[1]) for t in todo)
    if progress and usable.any():
        n_usable = int(usable.sum())
        print(f"{n_usable - total} of {n_usable} photos from the landmark cache, {total} to extract")
    if total:
        check_writable(root / "landmarks", folder=True)  # a cache that cannot be written would lose every photo
        own_pool = None
        n_workers = workers or default_workers()
        if executor is None and n_workers > 1 and len(todo) > 1:
            import multiprocessing

            own_pool = executor = ProcessPoolExecutor(min(n_workers, len(todo)),
                                                      mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_exit_with_parent, initargs=(os.getpid(),))
        bar = tqdm(total=total, unit="photo", desc="FaceMesh", disable=not progress)
        try:
            if executor is None:
                results = ((t, _extract_chunk(t[0], t[1], settings, t[4])) for t in todo)
            else:
                futures: dict[Future, tuple] = {executor.submit(_extract_chunk, t[0], t[1], settings, t[4]): t
                                                for t in todo}
                results = ((futures[f], f.result()) for f in as_completed(futures))
            for (container, _members, keys, rows, _boxes_), out in results:
                keep = [i for i, r in enumerate(out) if r[6]]
                if keep:
                    # a folder photo's CRC key beside its key: found again after a copy that changed mtimes
                    suffixes = _box_suffixes(table.loc[[rows[i] for i in keep]])
                    crc_keys = ["" if out[i][7] is None else _crc_key(out[i][0], table.at[rows[i], "bytes"],
                                                                       out[i][7], x)
                                for i, x in zip(keep, suffixes)]
                    _save_part(folders[container], [keys[i] for i in keep], [out[i] for i in keep], crc_keys)
                for row, (_m, st, why, lm, w, h, _cacheable, _crc) in zip(rows, out):
                    status[row], reason[row], width[row], height[row] = st, why, w, h
                    if lm is not None:
                        landmarks[row] = lm
                bar.update(len(rows))
        except BaseException:
            if executor is not None:
                for f in list(locals().get("futures", {})):
                    f.cancel()
            raise
        finally:
            bar.close()
            if own_pool is not None:
                own_pool.shutdown(wait=True, cancel_futures=True)
            if executor is None:
                _close_archive()  # extracted in this thread: leave no ZIP open in the caller's process
        for folder in folders.values():
            _consolidate(folder)

    table["status"] = status
    table["reason"] = reason
    table["width"] = width
    table["height"] = height
    table["from_cache"] = from_cache
    return table, landmarks


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The photos that gave no landmarks, with their reason (what a user reads after a run)."""
    cols = [c for c in ("split", "container", "name", "status", "reason") if c in table]
    return table.loc[table["status"] != "ok", cols]
