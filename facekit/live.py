"""Stage 8, **live**: camera frames → the same extract + normalise → model → score.

One object, :class:`LivePipeline`, is the per-frame path for every source (the
browser's camera through :class:`facekit.widget.LiveWidget`, a local camera read
with OpenCV, a video file, a folder of images)::

    frame (JPEG bytes, or an RGB/BGR array)
      → decode                       JPEG: OpenCV's libjpeg-turbo; anything else: facekit.extract.decode
      → FaceMesh, tracking mode      facekit.extract.face_mesh(static=False) / find_faces, the largest face
      → pixel units                  facekit.extract.to_pixels (x·W, y·H, z·W), as for training data
      → the checkpoint's normalise   Predictor.normalize (its own mode, alignment and version)
      → model                        Predictor.predict_shapes (shape − reference once calibrated)
      → smoothing                    exponential, time constant in seconds of frame time
      → FrameResult                  state, raw and smoothed score 0–100, label, landmarks, timings

Every step after decoding is the code that made the training data, so training
and live inputs cannot drift apart.  The score is the model's probability of
``anxious`` × 100 (for a 7-class model the top emotions are reported too).

States (:data:`STATES`) are reported, never silent: a frame with no face, more
than one face (the largest is scored and the result says so), a frame that
cannot be decoded (reported; the stream goes on), no model loaded, a
personal-neutral model that needs calibration first, and, from the sources, no
camera or camera permission denied.

:func:`benchmark` measures the kernel-side cost per frame against FaceMesh alone
and against the FaceMesh graph alone on the same frames (the README's *Live webcam
demo* states the figures; TRAINING_DETAIL.md section 6.5 every run and the command).
"""
from __future__ import annotations

import collections
import math
import os
import statistics
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .index import IMAGE_EXTENSIONS
from .extract import PhotoError, decode, face_mesh, find_faces, graph_route, restart, run_graph, to_pixels

#: Frame states and what the panel says for each.
STATES = {
    "idle": "not started: press Start",
    "ok": "face found and scored",
    "no_face": "no face in view",
    "multiple_faces": "more than one face in view: the largest is scored",
    "corrupt_frame": "a frame could not be decoded; it was skipped and the stream goes on",
    "no_model": "no model loaded: landmarks are shown but nothing is scored",
    "needs_calibration": "this model compares your face with your own neutral face: press Calibrate",
    "permission_denied": "camera permission denied",
    "no_camera": "no camera found",
    "source_error": "the source failed",
    "stopped": "stopped",
    "finished": "the source has no more frames",
}
#: Per-frame stages timed by :class:`LivePipeline` (milliseconds), in order.
STAGES = ("decode", "facemesh", "normalise", "model", "smoothing")
CALIBRATION_STATES = ("off", "collecting", "on", "unavailable", "failed")


class SourceError(RuntimeError):
    """A source that cannot deliver frames; ``state`` is ``no_camera`` or ``source_error``."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state, self.message = state, message


@dataclass(frozen=True)
class LiveSettings:
    """Settings of the per-frame path.

    ``smoothing_s`` is the exponential smoothing's time constant in seconds of
    *frame time* (0 = no smoothing): after a step change the smoothed score covers
    63 % of the step in ``smoothing_s`` seconds whatever the frame rate.
    ``calibrate_s``: how long Calibrate collects neutral frames;
    ``min_calibration_frames``: how many of them must show a face.
    ``max_faces=2`` lets a second face be noticed and reported (tracking one face
    only is faster but cannot tell).  ``history``: frames kept for the latency summary.
    """

    smoothing_s: float = 1.0
    calibrate_s: float = 3.0
    min_calibration_frames: int = 5
    max_faces: int = 2
    min_detection_confidence: float = 0.5
    tracking: bool = True
    history: int = 300


# ----------------------------------------------------------------------------- results

@dataclass
class FrameResult:
    """What the per-frame path found in one frame.

    ``landmarks``: (478, 3) float32, pixel units, the scored face (``None`` without
    one); ``others``: pixel boxes (x0, y0, x1, y1) of further faces, not scored.
    ``probabilities`` / ``smoothed``: (n_classes,) float32 for this frame / after
    smoothing.  ``raw_score`` / ``score``: the same for the score class × 100;
    ``score`` holds its last value through frames without a face.  ``timings``:
    milliseconds per stage (:data:`STAGES`).
    """

    index: int
    t: float
    state: str
    message: str
    width: int = 0
    height: int = 0
    n_faces: int = 0
    landmarks: np.ndarray | None = None
    others: list = field(default_factory=list)
    probabilities: np.ndarray | None = None
    smoothed: np.ndarray | None = None
    raw_score: float | None = None
    score: float | None = None
    label: str | None = None
    top: list = field(default_factory=list)
    model: str | None = None
    calibration: str = "off"
    calibration_message: str = ""
    timings: dict = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return float(sum(self.timings.values()))

    def points(self) -> np.ndarray:
        """The scored face's 2-D landmarks as fractions of the frame (478, 2) float32 (for drawing)."""
        if self.landmarks is None or not self.width:
            return np.zeros((0, 2), np.float32)
        return (self.landmarks[:, :2] / np.array([self.width, self.height], np.float32)).astype(np.float32)

    def to_message(self) -> dict:
        """JSON-safe summary (what the widget sends to the browser, without the landmarks)."""
        rnd = (lambda v: None if v is None else round(float(v), 2))
        return {"index": self.index, "t": self.t, "state": self.state, "message": self.message,
                "width": self.width, "height": self.height, "n_faces": self.n_faces,
                "others": [[round(float(v) / (self.width if i % 2 == 0 else self.height), 4)
                            for i, v in enumerate(box)] for box in self.others],
                "raw_score": rnd(self.raw_score), "score": rnd(self.score), "label": self.label,
                "top": [[name, rnd(p)] for name, p in self.top], "model": self.model,
                "calibration": self.calibration, "calibration_message": self.calibration_message,
                "timings": {k: round(float(v), 3) for k, v in self.timings.items()}}


class Smoother:
    """Exponential smoothing in continuous time: ``s += (1 − exp(−Δt/τ)) · (x − s)``.

    Δt comes from the frames' own timestamps, so the smoothing means the same at
    5 or 30 frames per second and across dropped frames.  A timestamp earlier
    than the last one (a restarted video) starts over.
    """

    def __init__(self, time_constant_s: float):
        self.time_constant_s = float(time_constant_s)
        self.value: np.ndarray | None = None
        self.t: float | None = None

    def reset(self) -> None:
        self.value, self.t = None, None

    def update(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.t is None or t < self.t:
            self.value = x.copy()
        else:
            tau = self.time_constant_s
            alpha = 1.0 if tau <= 0 else 1.0 - math.exp(-(t - self.t) / tau)
            self.value = self.value + alpha * (x - self.value)
        self.t = t
        return self.value.copy()


def decode_frame(data: bytes) -> np.ndarray:
    """Frame bytes → upright RGB (H, W, 3) uint8; raises :class:`facekit.extract.PhotoError`.

    A complete JPEG (SOI … EOI) is decoded by OpenCV (libjpeg-turbo, about 4× faster
    than Pillow here, EXIF orientation applied); anything else, and anything
    OpenCV refuses, goes through :func:`facekit.extract.decode`, the training
    data's decoder, which also says why a frame is unusable.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) > 4 and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9":
        rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
        if rgb is not None:
            return rgb
    if not len(buf):
        raise PhotoError("unreadable", "empty frame (0 bytes)")
    return decode(bytes(data))[0]


def rgb_frame(data, width: int, height: int) -> np.ndarray:
    """Packed 8-bit RGB rows (the browser's ``rgb`` frames) → an (H, W, 3) uint8 view of the same memory.

    Nothing is decoded or copied; a buffer of the wrong length raises
    :class:`facekit.extract.PhotoError` (``unreadable``), so the stream reports it and goes on.
    """
    width, height = int(width), int(height)
    size = memoryview(data).nbytes
    if width <= 0 or height <= 0 or size != width * height * 3:
        raise PhotoError("unreadable", f"an RGB frame of {width}×{height} needs {max(width * height * 3, 0):,} "
                                       f"bytes, got {size:,}")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


#: YUV matrices the kit converts, as WebCodecs' ``VideoColorSpace.matrix`` names them → (Kr, Kb).
#: ``None`` (unspecified) is read as BT.601, as Chromium itself draws such frames.
YUV_MATRICES = {None: (0.299, 0.114), "smpte170m": (0.299, 0.114), "bt470bg": (0.299, 0.114),
                "bt709": (0.2126, 0.0722)}
#: 4:2:0 layouts: I420 (Y, then U, then V planes) and NV12 (Y, then interleaved U/V).
YUV_LAYOUTS = ("I420", "NV12")


def _yuv_matrix(matrix: str | None, full_range: bool) -> np.ndarray:
    """The 3×4 affine map from (Y, U, V, 1) to (R, G, B), 0–255, for ``matrix`` and range."""
    kr, kb = YUV_MATRICES[matrix]
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1 / 255, 1 / 255, 0.0) if full_range else (1 / 219, 1 / 224, 16.0)
    rows = 255 * np.array([[ys, 0.0, 2 * (1 - kr) * cs],
                           [ys, -2 * kb * (1 - kb) / kg * cs, -2 * kr * (1 - kr) / kg * cs],
                           [ys, 2 * (1 - kb) * cs, 0.0]])
    offset = -(rows[:, 0] * y0 + (rows[:, 1] + rows[:, 2]) * 128)
    return np.hstack([rows, offset[:, None]]).astype(np.float32)


@dataclass(frozen=True)
class YUVFrame:
    """A camera frame as 4:2:0 YUV planes, tightly packed: the browser's ``yuv`` frames.

    That is how WebCodecs' ``VideoFrame.copyTo`` hands over a camera frame (the camera's
    own pixels, nothing encoded): ``layout`` ``"I420"`` or ``"NV12"``; ``matrix`` and
    ``full_range`` as its ``VideoColorSpace`` says (``None``: BT.601, limited range, as
    Chromium draws such frames).  :meth:`to_rgb` converts it (``LivePipeline.process``
    does, as its *decode* stage): BT.601 limited range by OpenCV (about 0.1 ms at 640×480),
    other matrices and full range by the standards' formulas (about 0.6 ms); chroma is
    taken per 2×2 block, as OpenCV does.  Width and height must be even.
    """

    data: object
    width: int
    height: int
    layout: str = "I420"
    matrix: str | None = None
    full_range: bool | None = None

    def to_rgb(self) -> np.ndarray:
        """→ (H, W, 3) uint8 RGB; raises :class:`facekit.extract.PhotoError` (``unreadable``)."""
        import cv2

        w, h = int(self.width), int(self.height)
        if self.layout not in YUV_LAYOUTS:
            raise PhotoError("unreadable", f"YUV layout {self.layout!r} is not one of {', '.join(YUV_LAYOUTS)}")
        if self.matrix not in YUV_MATRICES:
            raise PhotoError("unreadable", f"YUV colour matrix {self.matrix!r} is not one the kit converts "
                                           f"({', '.join(str(m) for m in YUV_MATRICES if m)}); send JPEG frames")
        size = memoryview(self.data).nbytes
        if w <= 0 or h <= 0 or w % 2 or h % 2 or size != w * h * 3 // 2:
            raise PhotoError("unreadable", f"a {self.layout} frame of {w}×{h} (even sides) needs "
                                           f"{max(w * h * 3 // 2, 0):,} bytes, got {size:,}")
        planes = np.frombuffer(self.data, dtype=np.uint8)
        if YUV_MATRICES[self.matrix] == YUV_MATRICES[None] and not self.full_range:
            code = cv2.COLOR_YUV2RGB_I420 if self.layout == "I420" else cv2.COLOR_YUV2RGB_NV12
            return cv2.cvtColor(planes.reshape(h * 3 // 2, w), code)
        y = planes[:w * h].reshape(h, w)
        if self.layout == "I420":
            q = w * h // 4
            uv = cv2.merge([planes[w * h:w * h + q].reshape(h // 2, w // 2),
                            planes[w * h + q:].reshape(h // 2, w // 2)])
        else:
            uv = planes[w * h:].reshape(h // 2, w // 2, 2)
        uv = cv2.resize(uv, (w, h), interpolation=cv2.INTER_NEAREST)
        return cv2.transform(cv2.merge([y, uv[:, :, 0], uv[:, :, 1]]), _yuv_matrix(self.matrix, bool(self.full_range)))


def yuv_from_rgb(rgb: np.ndarray, layout: str = "I420", matrix: str | None = None,
                 full_range: bool = False) -> YUVFrame:
    """An RGB frame → :class:`YUVFrame` (chroma averaged over 2×2 blocks), as a camera would give it.

    For tests and :func:`benchmark`; the inverse of :meth:`YUVFrame.to_rgb` up to rounding."""
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    m = _yuv_matrix(matrix, full_range).astype(np.float64)
    yuv = (rgb.reshape(-1, 3).astype(np.float64) - m[:, 3]) @ np.linalg.inv(m[:, :3]).T
    yuv = yuv.reshape(h, w, 3)
    y = np.clip(np.rint(yuv[:, :, 0]), 0, 255).astype(np.uint8)
    uv = np.clip(np.rint(yuv[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean((1, 3))), 0, 255).astype(np.uint8)
    tail = uv.tobytes() if layout == "NV12" else uv[:, :, 0].tobytes() + uv[:, :, 1].tobytes()
    return YUVFrame(y.tobytes() + tail, w, h, layout, matrix, full_range)


def _box(lm: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = lm[:, :2].min(0), lm[:, :2].max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


# ----------------------------------------------------------------------------- the per-frame path

class LivePipeline:
    """The per-frame path shared by every source: frame → FaceMesh → pixel units → normalise → model → score.

    ``predictor`` is a :class:`facekit.checkpoint.Predictor` (``None``: landmarks
    only, state ``no_model``).  ``personal`` is an optional second predictor
    trained with the personal-neutral protocol; :meth:`calibrate` collects the
    user's neutral face and switches to it.  A personal-neutral checkpoint passed
    as ``predictor`` is used as ``personal`` (it scores nothing until calibrated).

    Not for two threads at once (one FaceMesh per thread; a lock serialises
    calls); every source feeds it from one thread.
    """

    def __init__(self, predictor=None, personal=None, settings: LiveSettings = LiveSettings()):
        self.settings = settings
        self._lock = threading.RLock()
        self.plain = None
        self.personal = None
        self.set_models(predictor, personal)
        self.smoother = Smoother(settings.smoothing_s)
        self.timings: collections.deque = collections.deque(maxlen=settings.history)
        self.counts: collections.Counter = collections.Counter()
        self.frames = 0
        self.last: FrameResult | None = None
        self.reference: np.ndarray | None = None
        self.calibration = "off"
        self.calibration_message = ""
        self._calib_pending = False
        self._calib_until: float | None = None
        self._calib_shapes: list[np.ndarray] = []
        self._calib_seconds = settings.calibrate_s
        if self.plain is None and self.personal is None:
            self.calibration_message = "no model loaded"
        elif self.personal is None:
            self.calibration = "unavailable"
            self.calibration_message = self._no_personal_message()
        elif self.plain is None:
            self.calibration_message = STATES["needs_calibration"]

    # -- models
    def set_models(self, predictor=None, personal=None) -> None:
        """Load (or unload, with ``None``) the plain and the personal-neutral predictors."""
        with self._lock:
            if predictor is not None and getattr(predictor, "calibration", "none") == "personal-neutral":
                if personal is not None:
                    raise ValueError("two personal-neutral models given; pass the plain one as predictor=")
                predictor, personal = None, predictor
            if personal is not None and getattr(personal, "calibration", "none") != "personal-neutral":
                raise ValueError(f"personal= must be a personal-neutral checkpoint; this one's calibration is "
                                 f"{getattr(personal, 'calibration', 'none')!r}")
            self.plain, self.personal = predictor, personal

    @property
    def active(self):
        """The predictor that scores frames now: the personal one once calibrated, else the plain one."""
        if self.reference is not None and self.personal is not None:
            return self.personal
        return self.plain

    @property
    def active_kind(self) -> str | None:
        if self.reference is not None and self.personal is not None:
            return "personal-neutral"
        return "plain" if self.plain is not None else None

    def describe(self) -> str:
        """One line per loaded model, for the panel."""
        lines = []
        for kind, p in (("model", self.plain), ("personal-neutral model", self.personal)):
            if p is None:
                continue
            d = p.describe()
            norm = d.get("normalization", {})
            data = d.get("training_data", {})
            where = f", trained on {data.get('source', data.get('description', ''))}" if isinstance(data, dict) \
                and (data.get("source") or data.get("description")) else ""
            lines.append(f"{kind}: {d.get('task', '?')} {list(p.classes)}, normalisation {norm.get('mode')}"
                         f"{'+align' if norm.get('align') else ''} v{norm.get('version')}{where}")
        return "\n".join(lines) or "no model loaded"

    def _no_personal_message(self) -> str:
        return ("Calibrate needs a personal-neutral checkpoint (a model trained on faces relative to each "
                "person's own neutral face, such as weights/demo_binary_personal.pt); none is loaded, so the "
                "plain model stays in use")

    # -- calibration
    def calibrate(self, seconds: float | None = None) -> str:
        """Collect the next ``seconds`` of frame time as the user's neutral face.

        The reference is the mean normalised shape (the personal model's own
        normalisation) of the frames with a face in that window, and only those;
        then the personal-neutral model scores ``shape − reference``.  Without a
        personal-neutral model nothing is collected and the message says so.
        """
        with self._lock:
            if self.personal is None:
                self.calibration = "unavailable"
                self.calibration_message = self._no_personal_message()
                return self.calibration_message
            self._calib_seconds = self.settings.calibrate_s if seconds is None else float(seconds)
            self._calib_pending, self._calib_until, self._calib_shapes = True, None, []
            self.calibration = "collecting"
            self.calibration_message = f"hold a neutral face for {self._calib_seconds:g} s"
            return self.calibration_message

    def reset(self) -> str:
        """Back to the plain model: forget the reference and the smoothing."""
        with self._lock:
            self.reference = None
            self._calib_pending, self._calib_until, self._calib_shapes = False, None, []
            self.smoother.reset()
            if self.personal is None:
                self.calibration = "unavailable" if self.plain is not None else "off"
                self.calibration_message = self._no_personal_message() if self.plain is not None else "no model loaded"
            else:
                self.calibration, self.calibration_message = "off", "plain model (not calibrated)"
            return self.calibration_message

    def _collect(self, shape: np.ndarray | None, t: float) -> None:
        if self._calib_pending:
            self._calib_pending, self._calib_until = False, t + self._calib_seconds
        if self._calib_until is None:
            return
        if t < self._calib_until:
            if shape is not None:
                self._calib_shapes.append(shape)
            left = self._calib_until - t
            self.calibration_message = (f"hold a neutral face: {left:.1f} s left, "
                                        f"{len(self._calib_shapes)} frames with a face")
            return
        n = len(self._calib_shapes)
        self._calib_until = None
        if n < self.settings.min_calibration_frames:
            self.calibration = "failed"
            self.calibration_message = (f"calibration failed: only {n} frames with a face in "
                                        f"{self._calib_seconds:g} s (need {self.settings.min_calibration_frames}); "
                                        "face the camera and press Calibrate again")
            self._calib_shapes = []
            return
        self.reference = np.mean(np.stack(self._calib_shapes), axis=0).astype(np.float32)
        self._calib_shapes = []
        self.smoother.reset()
        self.calibration = "on"
        self.calibration_message = f"calibrated on {n} frames: scoring relative to your neutral face"

    # -- the path
    def set_smoothing(self, seconds: float) -> None:
        with self._lock:
            self.settings = replace(self.settings, smoothing_s=float(seconds))
            self.smoother.time_constant_s = float(seconds)

    def process(self, frame, t: float | None = None, bgr: bool = False,
                size: tuple[int, int] | None = None, full_size: tuple[int, int] | None = None) -> FrameResult:
        """One frame → :class:`FrameResult`.  ``frame``: JPEG/PNG bytes, or an (H, W, 3) uint8 array
        (RGB, or BGR with ``bgr=True`` as OpenCV reads it), or with ``size=(width, height)`` a buffer of
        packed RGB rows (:func:`rgb_frame`, the browser's ``rgb`` frames), or a :class:`YUVFrame` (the
        browser's ``yuv`` frames; converted here, in the *decode* stage); ``t``: its timestamp in
        seconds (default: now).  ``full_size=(width, height)``: the photo's own size where ``frame``
        was decoded smaller (:func:`facekit.extract.decode`'s JPEG scaling, as the server does):
        landmarks, width and height are then in the photo's full-size pixels, as in training data."""
        t = time.monotonic() if t is None else float(t)
        with self._lock:
            index = self.frames
            self.frames += 1
            timings = dict.fromkeys(STAGES, 0.0)
            t0 = time.perf_counter()
            try:
                if isinstance(frame, YUVFrame):
                    rgb = frame.to_rgb()
                elif size is not None:
                    rgb = rgb_frame(frame, *size)
                elif isinstance(frame, (bytes, bytearray, memoryview)):
                    rgb = decode_frame(bytes(frame) if not isinstance(frame, bytes) else frame)
                else:
                    rgb = np.asarray(frame)
                    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
                        raise PhotoError("unreadable", f"frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
                    if bgr or rgb.shape[2] == 4:
                        import cv2

                        code = {(True, 3): cv2.COLOR_BGR2RGB, (True, 4): cv2.COLOR_BGRA2RGB,
                                (False, 4): cv2.COLOR_RGBA2RGB}[(bool(bgr), rgb.shape[2])]
                        rgb = cv2.cvtColor(rgb, code)
                    rgb = np.ascontiguousarray(rgb)
            except PhotoError as err:
                timings["decode"] = (time.perf_counter() - t0) * 1000
                self._collect(None, t)
                return self._finish(FrameResult(
                    index, t, "corrupt_frame", f"frame {index} could not be decoded ({err.reason}); "
                    "skipped, the stream goes on", timings=timings))
            t1 = time.perf_counter()
            timings["decode"] = (t1 - t0) * 1000
            width, height = full_size if full_size is not None else (rgb.shape[1], rgb.shape[0])
            mesh = face_mesh(not self.settings.tracking, self.settings.max_faces,
                             self.settings.min_detection_confidence)
            if self.settings.tracking:
                owner = getattr(mesh, "_facekit_live_owner", None)
                if owner is None or owner() is not self:
                    # This thread's tracking FaceMesh last followed another stream: start it afresh, or its
                    # first frames here would be searched where that stream's face was.
                    restart(mesh)
                    mesh._facekit_live_owner = weakref.ref(self)
            faces = [to_pixels(f, width, height) for f in find_faces(rgb, mesh)]
            t2 = time.perf_counter()
            timings["facemesh"] = (t2 - t1) * 1000
            result = FrameResult(index, t, "ok", STATES["ok"], width, height, len(faces))
            result.timings = timings
            if not faces:
                self._collect(None, t)
                result.state, result.message = "no_face", STATES["no_face"]
                return self._finish(result)
            used = 0
            if len(faces) > 1:
                # Boxes only where there is a choice: their NumPy calls take 0.1 ms right after FaceMesh (cold caches).
                boxes = [_box(f) for f in faces]
                used = max(range(len(faces)), key=lambda i: _area(boxes[i]))  # the first of equals, as argmax
                result.others = [b for i, b in enumerate(boxes) if i != used]
                result.state = "multiple_faces"
                # No "left"/"right": the panels show the camera mirrored, files are not, so a side would
                # be wrong in one of them; the scored face is the one with landmarks drawn on it.
                result.message = (f"{len(faces)} faces in view: scoring the largest (the one with landmarks "
                                  "drawn on it); the others are ignored")
            result.landmarks = faces[used]
            self._score(result, faces[used], width, height, timings)
            return self._finish(result)

    def _score(self, result: FrameResult, lm: np.ndarray, width: int, height: int, timings: dict) -> None:
        t2 = time.perf_counter()
        plain_shape = personal_shape = None
        if self.plain is not None:
            plain_shape = self.plain.normalize(lm[None], width, height)
        if self.personal is not None:
            same = self.plain is not None and self.plain.normalize_settings == self.personal.normalize_settings
            personal_shape = plain_shape if same else self.personal.normalize(lm[None], width, height)
        collecting = self._calib_pending or self._calib_until is not None
        self._collect(None if personal_shape is None else personal_shape[0], result.t)
        t3 = time.perf_counter()
        timings["normalise"] = (t3 - t2) * 1000
        predictor = self.active
        if predictor is None:
            faces = f"; {result.message}" if result.state == "multiple_faces" else ""
            if self.personal is not None:
                result.state = "needs_calibration"
                result.message = ("calibrating: hold a neutral face" if collecting or self.calibration == "collecting"
                                  else STATES["needs_calibration"]) + faces
            else:
                result.state, result.message = "no_model", STATES["no_model"] + faces
            return
        shape = personal_shape if predictor is self.personal else plain_shape
        # On the CPU this is model.FusedMLP: NumPy, no PyTorch dispatch or thread pool per frame.
        prob = predictor.predict_shapes(shape, self.reference if predictor is self.personal else None)[0]
        t4 = time.perf_counter()
        timings["model"] = (t4 - t3) * 1000
        smoothed = self.smoother.update(prob, result.t)
        classes = list(predictor.classes)
        k = predictor.anxious_index if predictor.anxious_index is not None else int(np.argmax(smoothed))
        result.probabilities = prob.astype(np.float32)
        result.smoothed = smoothed.astype(np.float32)
        result.raw_score = float(prob[k]) * 100
        result.score = float(smoothed[k]) * 100
        if len(classes) == 2 and predictor.anxious_index is not None:
            other = classes[1 - k]
            result.label = classes[k] if smoothed[k] >= predictor.threshold else other
        else:
            result.label = classes[int(np.argmax(smoothed))]
        order = np.argsort(-smoothed)[:3]
        result.top = [(classes[i], float(smoothed[i]) * 100) for i in order]
        result.model = self.active_kind
        timings["smoothing"] = (time.perf_counter() - t4) * 1000

    def _finish(self, result: FrameResult) -> FrameResult:
        if result.score is None and self.smoother.value is not None and self.active is not None:
            predictor = self.active
            k = predictor.anxious_index if predictor.anxious_index is not None else int(np.argmax(self.smoother.value))
            result.score = float(self.smoother.value[k]) * 100  # held through frames without a face
        result.model = result.model or self.active_kind
        result.calibration, result.calibration_message = self.calibration, self.calibration_message
        self.counts[result.state] += 1
        self.timings.append(result.timings)
        self.last = result
        return result

    # -- summaries
    def latency(self) -> dict:
        """Median milliseconds per stage over the recent frames, and their total."""
        rows = [r for r in self.timings if r.get("facemesh", 0) > 0]
        if not rows:
            return {}
        out = {s: statistics.median(r.get(s, 0.0) for r in rows) for s in STAGES}
        out["total"] = statistics.median(sum(r.values()) for r in rows)
        return out

    def summary(self) -> dict:
        """Frames seen, frames per state, the latency breakdown, the calibration and the last score."""
        last = self.last
        return {"frames": self.frames, "states": dict(self.counts), "latency_ms": self.latency(),
                "calibration": self.calibration, "model": self.active_kind,
                "score": None if last is None or last.score is None else round(last.score, 1),
                "label": None if last is None else last.label}


# ----------------------------------------------------------------------------- sources

@dataclass
class Frame:
    """One frame from a source: ``data`` (bytes or an array), its timestamp ``t`` in seconds, ``bgr`` layout,
    and ``path``, the file it was read from where each frame is one (an image folder's photos)."""

    data: object
    t: float
    bgr: bool = False
    path: Path | None = None


class Source:
    """A source of frames for :func:`run` (and the widget's Start button).

    ``frames()`` yields :class:`Frame` objects and releases what it opened when
    it ends or is closed.  ``realtime``: the runner paces frames to their
    timestamps (a camera is paced by itself).
    """

    name = "source"
    realtime = False

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class CameraSource(Source):
    """A local camera through OpenCV's ``VideoCapture`` (for VS Code, which blocks browser cameras)."""

    def __init__(self, index: int = 0, width: int = 640, height: int = 480):
        self.index, self.width, self.height = index, width, height
        self.name = f"camera {index} (OpenCV)"

    def frames(self) -> Iterator[Frame]:
        import cv2

        cap = cv2.VideoCapture(self.index)
        try:
            if not cap.isOpened():
                raise SourceError("no_camera", f"no camera at index {self.index} (OpenCV could not open it); "
                                  "check that one is connected and not used by another program")
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            failures = 0
            while True:
                ok, bgr = cap.read()
                t = time.monotonic()
                if not ok:
                    failures += 1
                    if failures >= 30:
                        raise SourceError("no_camera", f"camera {self.index} stopped delivering frames")
                    time.sleep(0.01)
                    continue
                failures = 0
                yield Frame(bgr, t, bgr=True)
        finally:
            cap.release()


class VideoFileSource(Source):
    """A video file, frame by frame; a frame's timestamp is its index ÷ the file's frame rate."""

    def __init__(self, path: Path | str, realtime: bool = False, loop: bool = False):
        self.path = Path(path)
        self.realtime, self.loop = realtime, loop
        self.name = f"video file {self.path.name}"

    def frames(self) -> Iterator[Frame]:
        import cv2

        if not self.path.is_file():
            raise SourceError("source_error", f"video file {self.path} does not exist")
        offset = 0.0
        while True:
            cap = cv2.VideoCapture(str(self.path))
            try:
                if not cap.isOpened():
                    raise SourceError("source_error", f"OpenCV cannot open {self.path} as a video")
                fps = cap.get(cv2.CAP_PROP_FPS) or 0
                fps = fps if 1 <= fps <= 240 else 30.0
                i = 0
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    yield Frame(bgr, offset + i / fps, bgr=True)
                    i += 1
            finally:
                cap.release()
            if i == 0 and offset == 0:  # OpenCV "opens" some files that are not videos and reads nothing from them
                raise SourceError("source_error", f"OpenCV read no frame from {self.path}: it is not a video it can "
                                  "decode; give a video file (an image folder for photos)")
            if not self.loop or i == 0:
                return
            offset += i / fps


class FolderSource(Source):
    """The images of a folder in name order, each shown for ``seconds_per_image`` of frame time.

    Files are passed as bytes, so an unreadable one is reported as a corrupt
    frame and the next one follows.
    """

    EXTENSIONS = IMAGE_EXTENSIONS  # the same image types the index accepts

    def __init__(self, path: Path | str, seconds_per_image: float = 1.0, realtime: bool = False):
        self.path = Path(path)
        self.seconds_per_image, self.realtime = seconds_per_image, realtime
        self.name = f"image folder {self.path.name}"

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            raise SourceError("source_error", f"image folder {self.path} does not exist")
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in self.EXTENSIONS)

    def frames(self) -> Iterator[Frame]:
        files = self.files()
        if not files:
            raise SourceError("source_error", f"no images ({', '.join(self.EXTENSIONS)}) in {self.path}")
        for i, path in enumerate(files):
            yield Frame(path.read_bytes(), i * self.seconds_per_image, path=path)


def open_source(spec: str | Path | Source | None, realtime: bool = False) -> Source | None:
    """``"browser"``/``None`` → ``None`` (the widget uses the browser's camera); ``"camera"``/``"camera:1"`` →
    :class:`CameraSource`; a folder → :class:`FolderSource`; a file → :class:`VideoFileSource`;
    ``"demo-video"`` → a short clip of the built-in demo face (see :func:`demo_video`).
    ``realtime``: a file or folder is paced to its timestamps (as a camera would be) instead of
    read as fast as the kernel can."""
    if spec is None or isinstance(spec, Source):
        return spec
    text = str(spec).strip()
    if text in ("", "browser"):
        return None
    if text == "camera" or text.startswith("camera:"):
        return CameraSource(int(text.partition(":")[2] or 0))
    if text == "demo-video":
        return VideoFileSource(demo_video(), realtime=realtime)
    path = Path(text).expanduser()
    if path.is_dir():
        return FolderSource(path, realtime=realtime)
    if path.is_file():
        return VideoFileSource(path, realtime=realtime)
    missing = "; no such file or folder: check the path" if path.suffix or "/" in text else ""
    raise SourceError("source_error", f"live source {text!r} is neither 'browser', 'camera[:N]', 'demo-video', "
                      f"a video file nor an image folder{missing}")


def run(source: Source, pipeline: LivePipeline, on_result: Callable[[FrameResult, Frame], None] | None = None,
        stop: threading.Event | None = None, max_frames: int | None = None) -> dict:
    """Feed every frame of ``source`` through ``pipeline`` (in the calling thread); returns the summary.

    ``on_result(result, frame)`` is called per frame; ``stop`` ends it early; a
    realtime source is paced to its timestamps.  What the source opened is
    released when this returns, however it ends.
    """
    frames = source.frames()
    start_wall, start_t = None, None
    try:
        for n, frame in enumerate(frames):
            if (stop is not None and stop.is_set()) or (max_frames is not None and n >= max_frames):
                break
            if source.realtime:
                if start_wall is None:
                    start_wall, start_t = time.monotonic(), frame.t
                delay = (frame.t - start_t) - (time.monotonic() - start_wall)
                if delay > 0:
                    if stop is None:
                        time.sleep(delay)
                    elif stop.wait(delay):
                        break
            result = pipeline.process(frame.data, frame.t, bgr=frame.bgr)
            if result.state == "corrupt_frame" and frame.path is not None:
                result.message = f"{frame.path}: {result.message}"  # which photo to replace
            if on_result is not None:
                on_result(result, frame)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # runs the generator's finally: the camera or file is released now
    return pipeline.summary()


# ----------------------------------------------------------------------------- demo frames, clips, benchmark

def demo_frames(n: int = 90, size: tuple[int, int] = (640, 480), gap: tuple[int, int] | None = None,
                seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB frames (H, W, 3) of the built-in demo face (scikit-image's astronaut, a real photo) moving
    slowly as a head does in front of a webcam; frames ``gap[0]:gap[1]`` show no face (an empty room)."""
    from PIL import Image

    from . import demo

    width, height = size
    rng = np.random.default_rng(seed)
    face = Image.fromarray(demo.portrait(int(min(width, height) * 0.9)))
    background = np.full((height, width, 3), 96, np.uint8)
    background[:, :, 2] = 110
    frames = []
    for i in range(n):
        phase = 2 * math.pi * i / max(n, 30)
        scale = 1 + 0.05 * math.sin(phase)
        side = int(face.size[0] * scale)
        img = face.resize((side, side), Image.BILINEAR).rotate(4 * math.sin(phase * 0.7), resample=Image.BILINEAR)
        canvas = Image.fromarray(background.copy())
        x = (width - side) // 2 + int(30 * math.sin(phase)) + int(rng.integers(-2, 3))
        y = (height - side) // 2 + int(10 * math.cos(phase))
        if gap is None or not gap[0] <= i < gap[1]:
            canvas.paste(img, (x, y))
        frames.append(np.asarray(canvas))
    return frames


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """RGB frame → JPEG bytes (what the browser sends; quality 80 ≈ the widget's 0.8)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def write_video(path: Path | str, frames: list[np.ndarray], fps: float = 15.0) -> Path:
    """RGB frames → a Motion-JPEG ``.avi`` that :class:`VideoFileSource` (OpenCV) reads back anywhere."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write a Motion-JPEG video to {path}")
    try:
        for rgb in frames:
            writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    finally:
        writer.release()
    return path


def demo_video(path: Path | str | None = None, seconds: float = 4.0, fps: float = 15.0) -> Path:
    """A short clip of the demo face with a one-second empty stretch in the middle (written once, then reused)."""
    n = max(int(seconds * fps), 4)
    path = Path(path) if path else Path(tempfile.gettempdir()) / f"facekit-demo-{n}x{fps:g}.avi"
    if not path.is_file():
        gap = (n // 2, n // 2 + int(fps)) if n >= 3 * fps else (n // 2, n // 2 + 1)
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.avi")
        write_video(tmp, demo_frames(n, gap=gap), fps)
        os.replace(tmp, path)
    return path


def benchmark(predictor=None, frames: list[bytes] | None = None, n_frames: int = 120, repeats: int = 3,
              settings: LiveSettings = LiveSettings(), frame_format: str = "jpeg") -> dict:
    """Kernel-side cost per frame of the whole path against FaceMesh alone, on the same frames.

    ``frames``: JPEG bytes (default: ``n_frames`` demo frames at 640×480, quality 80,
    as the browser's ``jpeg`` frames).  Two references, with the path's own settings on
    the already-decoded frames: **FaceMesh alone** is ``mesh.process(rgb)`` on the
    frames as OpenCV decodes them (writeable arrays: what a researcher calls), and
    **FaceMesh graph alone** the same graph driven as :func:`facekit.extract.find_faces`
    drives it, on read-only views of the same frames, with nothing parsed
    (:func:`facekit.extract.run_graph`; ``None`` where that route is missing).  The
    path is :meth:`LivePipeline.process` on the frames as the browser sends them
    (``frame_format``: ``"jpeg"``, the JPEG bytes, decoded in the path; ``"rgb"``, the
    same decoded pixels as packed RGB bytes, what the browser sends with
    ``frame_format="rgb"``; ``"yuv"``, the same pixels as I420 planes (BT.601, limited
    range, as a camera gives them; the references then see these planes' RGB, the
    pixels the path sees), converted in the path, what the browser sends with
    ``frame_format="yuv"``), then FaceMesh, normalise, model, smoothing.  Passes alternate
    (``repeats`` of each) so that other load on the machine hits all three alike.
    Returns medians in milliseconds, the ratios (``ratio`` against FaceMesh alone,
    ``ratio_vs_graph`` against the graph alone), and the frames per second the
    kernel could sustain.
    """
    if frame_format not in ("jpeg", "rgb", "yuv"):
        raise ValueError(f"frame_format must be 'jpeg', 'rgb' or 'yuv', got {frame_format!r}")
    if isinstance(predictor, (str, Path)):
        from .checkpoint import load

        predictor = load(predictor)
    if frames is None:
        frames = [encode_jpeg(f) for f in demo_frames(n_frames)]
    rgbs = [decode_frame(f) for f in frames]
    if frame_format == "yuv":
        import cv2

        sent = [YUVFrame(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes(), rgb.shape[1], rgb.shape[0])
                for rgb in rgbs]
        rgbs = [f.to_rgb() for f in sent]
    else:
        sent = frames if frame_format == "jpeg" else [rgb.tobytes() for rgb in rgbs]
    mesh = face_mesh(not settings.tracking, settings.max_faces, settings.min_detection_confidence)
    for rgb in rgbs[:10]:  # warm-up: graph start, XNNPACK, torch
        mesh.process(rgb)
    direct = graph_route(mesh)
    frozen = []
    for rgb in rgbs:
        view = rgb.view()
        view.flags.writeable = False  # taken by reference, as find_faces passes it
        frozen.append(view)
    alone: list[float] = []
    graph: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    faces = 0
    for _ in range(max(1, repeats)):
        for rgb in rgbs:
            t0 = time.perf_counter()
            mesh.process(rgb)
            alone.append((time.perf_counter() - t0) * 1000)
        for view in frozen if direct else ():
            t0 = time.perf_counter()
            run_graph(view, mesh)
            graph.append((time.perf_counter() - t0) * 1000)
        pipeline = LivePipeline(predictor, settings=settings)
        for i, (data, rgb) in enumerate(zip(sent, rgbs)):
            size = (rgb.shape[1], rgb.shape[0]) if frame_format == "rgb" else None
            t0 = time.perf_counter()
            result = pipeline.process(data, t=i / 30, size=size)
            totals.append((time.perf_counter() - t0) * 1000)
            faces += result.landmarks is not None
            for s in STAGES:
                stages[s].append(result.timings.get(s, 0.0))
    med_alone, med_total = statistics.median(alone), statistics.median(totals)
    med_graph = statistics.median(graph) if graph else None
    h, w = rgbs[0].shape[:2]
    return {"frames": len(frames), "repeats": repeats, "size": f"{w}x{h}", "frame_format": frame_format,
            "faces_found": faces / max(1, repeats),
            "model": None if predictor is None else predictor.describe().get("model_config"),
            "facemesh_alone_ms": round(med_alone, 3),
            "facemesh_graph_ms": None if med_graph is None else round(med_graph, 3),
            "pipeline_ms": round(med_total, 3),
            "stages_ms": {s: round(statistics.median(v), 3) for s, v in stages.items()},
            "ratio": round(med_total / med_alone, 3),
            "ratio_vs_graph": None if med_graph is None else round(med_total / med_graph, 3),
            "kernel_fps": round(1000 / med_total, 1),
            "settings": {"tracking": settings.tracking, "max_faces": settings.max_faces},
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "cpus": os.cpu_count()}
