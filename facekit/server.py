"""The inference server: the original system's FastAPI service on port 8001, done safely.

    python -m facekit serve [--weights FILE] [--host 127.0.0.1] [--port 8001]
        [--cors-origin URL ...] [--max-bytes N] [--max-pixels N] [--threads N]

Needs the ``serve`` extra (``pip install -e '.[serve]'``: fastapi, uvicorn,
python-multipart); this module imports them only when a server is built, so the
rest of the kit works without them.

Endpoints (OpenAPI at ``/openapi.json``, rendered at ``/docs`` by a page the server
serves itself: nothing is loaded from a CDN, so it works offline):

- ``GET /``: the web page (browser camera → ``/predict/image`` one frame at a time).
- ``GET /health``, ``GET /model`` (classes, task, normalisation, training summary).
- ``POST /predict/landmarks``: JSON ``{"units": "pixels", "landmarks": 478×3, "width": W,
  "height": H}`` or ``{"units": "normalised", "landmarks": 1,434 numbers}``.
- ``POST /predict/image``: a JPEG or PNG as a multipart ``file`` field, a raw
  ``image/jpeg``/``image/png`` body, or JSON ``{"image": "<base64>"}`` (as the
  original system took it).  The answer: state, class, probabilities, anxiety
  score 0–100 and face box, or a clear ``no_face`` state.

A photo is decoded by the training data's decoder and long-side rule
(:func:`facekit.extract.decode`: a large JPEG at 1/2 to 1/8 scale, EXIF orientation
applied), so a photo's landmarks are those its extraction for training gives where
no labelled face box is involved (an upload has none); it then goes through the kit's own
per-frame path, :class:`facekit.live.LivePipeline` (FaceMesh → full-size pixel units
→ the checkpoint's normalisation → model), in
static-image mode with a fresh pipeline per request, so requests never share
tracking or smoothing state; landmarks go through
:meth:`facekit.checkpoint.Predictor.predict_shapes`.  Inference runs in a pool of
``--threads`` threads, each with its own FaceMesh (one per thread:
:func:`facekit.extract.face_mesh`).

Personal-neutral checkpoints (``calibration: personal-neutral``) score a face
relative to the same person's neutral face: send ``reference`` (1,434 numbers, the
mean normalised shape of that person's neutral photos in the checkpoint's own
normalisation; ``/predict/image?shape=true`` returns a photo's shape for building
it, and the web page's Calibrate button does exactly that).  Without it
``/predict/landmarks`` answers 422 and ``/predict/image`` the state
``needs_calibration``.

Safe defaults: loopback only unless ``--host`` says otherwise (and then requests
must name this machine in ``Host``: a page on another site cannot reach a
loopback server through DNS rebinding); CORS off unless ``--cors-origin`` lists
origins; request bodies over ``--max-bytes`` refused (413) from their
``Content-Length`` before anything is read, and streamed bodies cut off at the
limit; photos over ``--max-pixels`` refused from their header before decoding;
every malformed input answered with a 4xx whose ``detail`` says what is wrong; the
model loaded once at start-up, and a bad weights file stops start-up with a
message naming the file.

:func:`running_server` starts a server in a background process on a free
loopback port (tests, benchmarks); :func:`load_test` measures latency and
throughput of ``/predict/image``.
"""
import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import importlib.util
import io
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .paths import ASSETS_DIR, PROJECT_ROOT, weights_dir

DEFAULT_PORT = 8001
DEFAULT_MAX_BYTES = 8 * 1024 * 1024      # a 12-megapixel phone JPEG is 3–6 MB; base64 in JSON adds a third
DEFAULT_MAX_PIXELS = 30_000_000          # decoded RGB: up to 90 MB per request in flight (PNG; JPEGs decode smaller)
N_LANDMARKS = 478
N_VALUES = N_LANDMARKS * 3
MAX_SIDE = 100_000                       # width / height accepted with pixel-unit landmarks
NORMALISED_LIMIT = 100.0                 # |value| of a normalised shape (kit shapes have centroid size 1)
IMAGE_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}  # Pillow's names; MPO: phone JPEGs
EXTRA_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
# Served by the server itself; nothing else in the assets folder is reachable.
STATIC = {"server_page.js": "text/javascript", "server_page.css": "text/css", "server_docs.js": "text/javascript"}
# The pages load nothing from elsewhere; the camera's frames stay in the page (blob:) and go only to this server.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ServerSetupError(RuntimeError):
    """The server cannot start (the ``serve`` extra is missing); the message says what to install."""


@dataclass(frozen=True)
class ServerSettings:
    """What ``python -m facekit serve`` was asked for.

    ``weights``: the checkpoint (``None``: :func:`default_weights`).  ``host``:
    the interface to bind (loopback by default).  ``cors_origins``: origins whose
    pages may call the API from a browser (none by default).  ``max_bytes``: the
    largest request body; ``max_pixels``: the largest photo (width × height).
    ``threads``: inference threads, each with its own FaceMesh (default: one per CPU).
    """

    weights: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    cors_origins: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))


def default_weights() -> Path:
    """The checkpoint notebook 05 would load: notebook 03's ``model_binary.pt`` if it was trained, else the
    shipped ``demo_binary.pt`` (both in :func:`facekit.paths.weights_dir`, i.e. ``FACEKIT_WEIGHTS``)."""
    trained = weights_dir() / "model_binary.pt"
    return trained if trained.is_file() else weights_dir() / "demo_binary.pt"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_extra() -> None:
    """Raise :class:`ServerSetupError` naming what is missing when the ``serve`` extra is not installed."""
    missing = [pip for module, pip in EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ServerSetupError(
            f"the server needs the 'serve' extra, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not installed: run .venv/bin/pip install -e '.[serve]' (the versions are pinned in pyproject.toml)")


# ----------------------------------------------------------------------------- input checks

class BadInput(Exception):
    """A request the server cannot use: ``status`` (4xx) and a ``message`` saying what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _json_type(value) -> str:
    return {bool: "a boolean", str: "a string", dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__)


def parse_json(body: bytes) -> dict:
    """A request body → a JSON object, or :class:`BadInput` saying why not."""
    if not body:
        raise BadInput(400, "empty body: expected a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise BadInput(400, "the body is not UTF-8 text, so not JSON") from None
    except RecursionError:
        raise BadInput(400, "the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python's 4,300-digit limit
        raise BadInput(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInput(422, f"expected a JSON object, got {_json_type(value)}")
    return value


def _check_fields(value: dict, required: Sequence[str], optional: Sequence[str]) -> None:
    missing = [k for k in required if k not in value]
    if missing:
        raise BadInput(422, f"missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise BadInput(422, f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"accepted: {', '.join(list(required) + list(optional))}")


def numbers(value, name: str, limit: float) -> np.ndarray:
    """1,434 JSON numbers, flat or as 478 rows of (x, y, z), each finite and within ±``limit`` → (478, 3) float64.

    Raises :class:`BadInput` (422) naming the first problem: not an array, a row
    that is not three numbers, an element that is not a number, the wrong count,
    NaN or infinity, a value out of range.
    """
    if not isinstance(value, list):
        raise BadInput(422, f"{name} must be an array of {N_VALUES:,} numbers (or {N_LANDMARKS} rows of x, y, z), "
                            f"got {_json_type(value)}")
    flat = value
    if value and all(isinstance(row, list) for row in value):
        bad = next((i for i, row in enumerate(value) if len(row) != 3), None)
        if bad is not None:
            raise BadInput(422, f"{name}[{bad}] has {len(value[bad])} values; each of the {N_LANDMARKS} rows must "
                                "be x, y, z")
        flat = [v for row in value for v in row]
    bad = next((i for i, v in enumerate(flat) if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        where = f"{name}[{bad // 3}][{bad % 3}]" if flat is not value else f"{name}[{bad}]"
        raise BadInput(422, f"{where} is {_json_type(flat[bad])}, not a number")
    if len(flat) != N_VALUES:
        rows = f" ({len(value)} rows)" if flat is not value else ""
        raise BadInput(422, f"{name} holds {len(flat):,} numbers{rows}; expected {N_VALUES:,}: {N_LANDMARKS} "
                            "landmarks × (x, y, z)")
    try:
        arr = np.array(flat, dtype=np.float64)
    except OverflowError:
        raise BadInput(422, f"{name} holds an integer too large for a number (over 1e308)") from None
    finite = np.isfinite(arr)
    if not finite.all():
        first = int(np.argmin(finite))
        raise BadInput(422, f"{name} holds {int((~finite).sum())} values that are not finite numbers (NaN or "
                            f"±infinity), the first at index {first}")
    big = np.abs(arr) > limit
    if big.any():
        first = int(np.argmax(big))
        raise BadInput(422, f"{name}[{first}] = {arr[first]:g} is out of range: values must lie within ±{limit:g}")
    return arr.reshape(N_LANDMARKS, 3)


def _side(value, name: str) -> int:
    """A photo's width or height from JSON: a whole number of pixels from 1 to :data:`MAX_SIDE`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(422, f"{name} must be a whole number of pixels, got {_json_type(value)}")
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= MAX_SIDE:
        raise BadInput(422, f"{name} must be a whole number of pixels from 1 to {MAX_SIDE:,}, got {value!r}")
    return int(value)


def decode_base64(text, name: str = "image") -> bytes:
    """Base64 text (optionally a ``data:image/...;base64,`` URL; line breaks allowed) → bytes, or :class:`BadInput`."""
    if not isinstance(text, str):
        raise BadInput(422, f"{name} must be a base64 string, got {_json_type(text)}")
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise BadInput(422, f"{name} is a data URL without ';base64,': send the photo base64-encoded")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(400, f"{name} is not valid base64 ({exc})") from None
    if not data:
        raise BadInput(400, f"{name} is empty")
    return data


def check_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Read a photo's header only → (format, width, height); :class:`BadInput` for an empty file, something
    that is not an image (415), a format other than JPEG or PNG (415), too many pixels (413)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadInput(400, "empty image: the upload holds 0 bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
    except UnidentifiedImageError:
        raise BadInput(415, f"not an image: these {len(data):,} bytes are neither JPEG nor PNG") from None
    except Image.DecompressionBombError as exc:
        raise BadInput(413, f"the image is far too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a header Pillow cannot parse is the client's problem
        raise BadInput(422, f"the image header cannot be read: {exc}") from None
    if fmt not in IMAGE_FORMATS:
        raise BadInput(415, f"image format {fmt} is not accepted: send JPEG or PNG")
    if width * height > max_pixels:
        raise BadInput(413, f"the image is {width}×{height} pixels ({width * height / 1e6:.1f} megapixels), over "
                            f"this server's limit of {max_pixels / 1e6:g} megapixels (--max-pixels); a face needs "
                            "far fewer: scale the photo down")
    return IMAGE_FORMATS[fmt], width, height


def _finite(value):
    """A JSON-safe copy: NaN and infinity (in a checkpoint's metrics, say) become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


# ----------------------------------------------------------------------------- the service (no web framework)

class Service:
    """The model and the per-request work of the endpoints, independent of the web framework.

    ``Service(settings)`` loads the checkpoint once (:class:`facekit.checkpoint.CheckpointError`
    or ``FileNotFoundError`` naming the file when it cannot), starts the inference
    threads and warms each one's FaceMesh on the demo photo.  Its methods run in
    those threads and raise :class:`BadInput` for anything a client got wrong.
    """

    def __init__(self, settings: ServerSettings):
        from .checkpoint import load

        self.settings = settings
        self.weights = Path(settings.weights) if settings.weights else default_weights()
        self.predictor = load(self.weights)
        self.personal = self.predictor.calibration == "personal-neutral"
        self.started = time.time()
        self.threads = max(1, settings.threads)
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="facekit-infer")
        self.model_info = self._model_info()
        self._warm_up()

    def _model_info(self) -> dict:
        p = self.predictor
        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()
        return _finite({**p.describe(), "weights": str(self.weights), "sha256": digest,
                        "score_class": p.classes[p.anxious_index] if p.anxious_index is not None else None,
                        "needs_reference": self.personal,
                        "limits": {"max_bytes": self.settings.max_bytes, "max_pixels": self.settings.max_pixels}})

    def _warm_up(self) -> None:
        """Build every inference thread's FaceMesh now, so that no client waits for it."""
        from . import demo
        from .live import encode_jpeg

        photo = encode_jpeg(demo.portrait(320))
        barrier = threading.Barrier(self.threads)

        def warm():
            barrier.wait(timeout=120)  # one task per thread: each builds its own graph
            self._pipeline(None).process(photo, t=0.0)

        for future in [self.pool.submit(warm) for _ in range(self.threads)]:
            future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _pipeline(self, reference: np.ndarray | None):
        """A fresh static-mode pipeline for one photo: no tracking or smoothing carried between requests."""
        from .live import LivePipeline, LiveSettings

        pipe = LivePipeline(self.predictor, settings=LiveSettings(tracking=False, smoothing_s=0.0))
        pipe.reference = None if reference is None else reference.astype(np.float32)
        return pipe

    def _reference(self, value) -> np.ndarray | None:
        if value is None:
            return None
        if not self.personal:
            raise BadInput(422, f"reference is only for personal-neutral checkpoints; {self.weights.name} is a "
                                "plain model: leave reference out")
        return numbers(value, "reference", NORMALISED_LIMIT)

    def health(self) -> dict:
        return {"status": "ok", "model_loaded": True, "weights": self.weights.name, "task": self.predictor.task,
                "needs_reference": self.personal, "threads": self.threads,
                "uptime_s": round(time.time() - self.started, 1)}

    # -- /predict/landmarks
    def predict_landmarks(self, body: bytes) -> dict:
        """JSON body → the model's answer for one face's landmarks (see the module docstring)."""
        request = parse_json(body)
        _check_fields(request, ("units", "landmarks"), ("width", "height", "reference"))
        units = request["units"]
        if units not in ("pixels", "normalised", "normalized"):
            raise BadInput(422, f"units must be 'pixels' (raw FaceMesh landmarks × width, height, width, with width "
                                f"and height) or 'normalised' (already in this model's normalisation), got {units!r}")
        reference = self._reference(request.get("reference"))
        if self.personal and reference is None:
            raise BadInput(422, f"{self.weights.name} is a personal-neutral model: it scores a face relative to the "
                                "same person's neutral face, so send reference (1,434 numbers: the mean normalised "
                                "shape of their neutral photos; /predict/image?shape=true gives a photo's shape)")
        p = self.predictor
        if units == "pixels":
            missing = [k for k in ("width", "height") if k not in request]
            if missing:
                raise BadInput(422, f"units 'pixels' needs the photo's {' and '.join(missing)} (in pixels)")
            width, height = _side(request["width"], "width"), _side(request["height"], "height")
            limit = 10.0 * max(width, height)
            lm = numbers(request["landmarks"], "landmarks", limit)
            shape = p.normalize(lm[None].astype(np.float32), width, height)
            if not np.isfinite(shape).all():
                raise BadInput(422, "the landmarks are degenerate (all points at one place or nearly so): they "
                                    "cannot be normalised")
        else:
            extra = [k for k in ("width", "height") if k in request]
            if extra:
                raise BadInput(422, f"{' and '.join(extra)} {'belong' if len(extra) > 1 else 'belongs'} to units "
                                    "'pixels'; normalised landmarks need neither")
            shape = numbers(request["landmarks"], "landmarks", NORMALISED_LIMIT)[None].astype(np.float32)
        prob = p.predict_shapes(shape, reference)[0]
        if not np.isfinite(prob).all():
            raise BadInput(422, "the model gave no finite answer for these numbers: they are far outside the "
                                "faces it was trained on")
        return self._answer(prob)

    def _answer(self, prob: np.ndarray) -> dict:
        """Probabilities → label, score 0–100 and the top classes, by the live path's own rule."""
        p = self.predictor
        classes = list(p.classes)
        k = p.anxious_index if p.anxious_index is not None else int(np.argmax(prob))
        if len(classes) == 2 and p.anxious_index is not None:
            label = classes[k] if prob[k] >= p.threshold else classes[1 - k]
        else:
            label = classes[int(np.argmax(prob))]
        order = np.argsort(-prob)[:3]
        return {"label": label, "score": round(float(prob[k]) * 100, 3), "score_class": classes[k],
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, prob)},
                "top": [[classes[i], round(float(prob[i]) * 100, 3)] for i in order],
                "threshold": p.threshold, "model": "personal-neutral" if self.personal else "plain"}

    # -- /predict/image
    def predict_image(self, data: bytes, reference=None, landmarks: bool = False, shape: bool = False) -> dict:
        """Photo bytes → the per-frame path's answer for it (see the module docstring)."""
        from .extract import ExtractSettings, PhotoError, decode

        reference = self._reference(reference)
        fmt = check_image(data, self.settings.max_pixels)[0]
        t0 = time.perf_counter()
        try:
            # The training data's decoder and rule (facekit.extract): a phone photo's JPEG is decoded at
            # 1/2 to 1/8 scale, its long side never under draft_long_side pixels; EXIF orientation applied.
            rgb, width, height = decode(data, ExtractSettings().draft_long_side)
        except PhotoError as err:
            raise BadInput(422, f"the {fmt} image could not be decoded: {err.reason}") from None
        decode_ms = (time.perf_counter() - t0) * 1000
        pipe = self._pipeline(reference)
        result = pipe.process(rgb, t=0.0, full_size=(width, height))
        result.timings["decode"] = decode_ms
        answer = {"state": result.state, "message": result.message, "face": result.landmarks is not None,
                  "n_faces": result.n_faces, "width": result.width, "height": result.height, "box": None,
                  "others": [[round(float(v), 1) for v in box] for box in result.others],
                  "label": None, "score": None, "score_class": None, "probabilities": None, "top": [],
                  "threshold": self.predictor.threshold, "model": "personal-neutral" if self.personal else "plain",
                  "timings_ms": {k: round(float(v), 3) for k, v in result.timings.items()}}
        if result.state == "needs_calibration":
            answer["message"] = (
                f"{self.weights.name} is a personal-neutral model: it scores a face relative to the same person's "
                "neutral face: send reference (the mean of their neutral photos' shapes; ask for a photo's shape "
                "with shape=true), or press Calibrate on the web page")
        if result.landmarks is not None:
            lm = result.landmarks
            answer["box"] = [round(float(v), 1) for v in (*lm[:, :2].min(0), *lm[:, :2].max(0))]
            if landmarks:
                answer["landmarks"] = np.round(lm.astype(np.float64), 2).tolist()
            if shape:
                upright = self.predictor.normalize(lm[None], result.width, result.height)[0]  # EXIF applied
                answer["shape"] = np.round(upright.astype(np.float64), 6).reshape(-1).tolist()
        if result.probabilities is not None:
            prob = result.probabilities.astype(np.float64)
            if not np.isfinite(prob).all():
                raise BadInput(422, "the model gave no finite answer for this face")
            scored = self._answer(prob)
            scored["label"] = result.label  # the live path's own label (the same rule)
            answer.update(scored)
        return answer


# ----------------------------------------------------------------------------- the FastAPI app

def _schemas() -> dict:
    """OpenAPI schemas of the requests and answers (documentation; the checks are in :class:`Service`)."""
    values = {"type": "array", "description": f"{N_VALUES:,} numbers, or {N_LANDMARKS} rows of [x, y, z]",
              "items": {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"},
                                                         "minItems": 3, "maxItems": 3}]}}
    scored = {
        "label": {"type": ["string", "null"], "description": "the class at the checkpoint's threshold"},
        "score": {"type": ["number", "null"], "description": "probability of score_class × 100 (0–100)"},
        "score_class": {"type": ["string", "null"], "description": "'anxious' (a 7-class model: its top class)"},
        "probabilities": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "top": {"type": "array", "items": {"type": "array"}, "description": "the three likeliest [class, score]"},
        "threshold": {"type": "number"},
        "model": {"type": "string", "enum": ["plain", "personal-neutral"]},
    }
    return {
        "LandmarksRequest": {
            "type": "object", "required": ["units", "landmarks"], "additionalProperties": False,
            "properties": {
                "units": {"type": "string", "enum": ["pixels", "normalised"],
                          "description": "'pixels': FaceMesh's landmarks × (width, height, width) of the photo; "
                                         "'normalised': already in this checkpoint's normalisation"},
                "landmarks": values,
                "width": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE, "description": "with 'pixels'"},
                "height": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE, "description": "with 'pixels'"},
                "reference": {**values, "description": "personal-neutral checkpoints only: the person's mean "
                                                       "normalised neutral shape (1,434 numbers)"}},
            "example": {"units": "pixels", "width": 640, "height": 480,
                        "landmarks": [[320.5, 240.1, -12.3], "… 478 rows …"]}},
        "ImageJSON": {
            "type": "object", "required": ["image"], "additionalProperties": False,
            "properties": {"image": {"type": "string", "description": "base64 JPEG or PNG (a data: URL too)"},
                           "reference": values}},
        "ImageUpload": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "description": "a JPEG or PNG photo"},
                           "reference": {"type": "string", "description": "JSON array: see LandmarksRequest"}}},
        "Prediction": {"type": "object", "properties": scored},
        "ImagePrediction": {"type": "object", "properties": {
            "state": {"type": "string", "enum": ["ok", "multiple_faces", "no_face", "needs_calibration"]},
            "message": {"type": "string"}, "face": {"type": "boolean"}, "n_faces": {"type": "integer"},
            "width": {"type": "integer"}, "height": {"type": "integer"},
            "box": {"type": ["array", "null"], "items": {"type": "number"},
                    "description": "the scored face: [x0, y0, x1, y1] in pixels"},
            "others": {"type": "array", "description": "boxes of further faces (not scored)"},
            **scored,
            "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            "landmarks": {"type": "array", "description": "with landmarks=true: 478 × [x, y, z] in pixels"},
            "shape": {"type": "array", "description": "with shape=true: the normalised shape, 1,434 numbers"}}},
        "Error": {"type": "object", "properties": {"detail": {"type": "string", "description": "what is wrong"}}},
    }


def _errors(*codes: int) -> dict:
    text = {400: "malformed body (bad JSON, bad base64, empty)", 413: "body or photo over the server's limits",
            415: "wrong Content-Type, or not a JPEG/PNG", 422: "well-formed but unusable input"}
    return {c: {"description": text[c], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for c in codes}


class Guard:
    """ASGI middleware in front of everything: the Host check, the body limit, two safe headers.

    A loopback server answers only requests addressed to this machine
    (``local_names``; ``None``: any name, for a server bound to a public
    interface), so that a page elsewhere cannot reach it by pointing its own
    domain name at 127.0.0.1 (DNS rebinding).  A body whose ``Content-Length``
    is over ``max_bytes`` is refused before any of it is read; a streamed body
    is cut off as soon as it passes the limit (413, raised where the endpoint
    reads it).  Every answer says ``nosniff`` and sends no referrer.
    """

    def __init__(self, app, local_names: set[str] | None, max_bytes: int):
        self.app, self.local_names, self.max_bytes = app, local_names, max_bytes
        self.too_large = (f"the request body is over this server's limit of {max_bytes:,} bytes (--max-bytes); "
                          "send a smaller photo")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        headers = dict(scope["headers"])
        refusal = None
        if self.local_names is not None and Request(scope).url.hostname not in self.local_names:
            host = headers.get(b"host", b"").decode("latin-1")
            refusal = 400, (f"Host {host!r} is not this server: it listens on loopback and answers requests for "
                            "localhost or 127.0.0.1 only")
        elif not headers.get(b"content-length", b"0").isdigit():
            refusal = 400, "Content-Length is not a whole number of bytes"
        elif int(headers.get(b"content-length", b"0")) > self.max_bytes:
            refusal = 413, self.too_large
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BadInput(413, self.too_large)
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
            await send(message)

        if refusal is not None:
            return await JSONResponse({"detail": refusal[1]}, status_code=refusal[0])(scope, receive, send_with_headers)
        await self.app(scope, limited_receive, send_with_headers)


def create_app(settings: ServerSettings = ServerSettings(), service: Service | None = None):
    """The FastAPI application (the model is loaded here, once: see :class:`Service`)."""
    require_extra()
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    service = service or Service(settings)
    app = FastAPI(
        title="facekit inference server",
        version="1",
        description=("Anxiety vs neutral from the geometry of a face (MediaPipe FaceMesh landmarks → the "
                     f"checkpoint's normalisation → ResNet MLP). Model: {service.weights.name} "
                     f"({service.predictor.task}, classes {list(service.predictor.classes)}). The score is the model's "
                     "probability × 100 that the face's geometry looks like the faces labelled anxious in its "
                     "training data: not a measure of felt anxiety and not a diagnosis."),
        docs_url=None, redoc_url=None, openapi_url="/openapi.json",
        # FastAPI's OpenTelemetry hooks: nothing to report to, so nothing recorded
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                   "auto_configure": False})
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"], max_age=600)
    app.add_middleware(Guard, local_names={"localhost", "127.0.0.1", "::1", settings.host}
                       if is_loopback(settings.host) else None, max_bytes=settings.max_bytes)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError):
        # FastAPI's own checks (only the query parameters here): one sentence, like every other refusal
        text = "; ".join(f"{' '.join(map(str, e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors())
        return JSONResponse({"detail": text or "invalid request"}, status_code=422)

    async def in_pool(fn, *args, **kwargs):
        """Run inference in the server's own threads (each with its own FaceMesh), not on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(service.pool, lambda: fn(*args, **kwargs))

    def page(name: str) -> HTMLResponse:
        return HTMLResponse((ASSETS_DIR / name).read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return page("server_page.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return page("server_docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(ASSETS_DIR / name, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/health", summary="Is the server up, with its model loaded?")
    def health():
        return service.health()

    @app.get("/model", summary="The loaded checkpoint: classes, task, normalisation, training summary, metrics")
    def model():
        return service.model_info

    @app.post("/predict/landmarks", summary="Score one face from its 478 FaceMesh landmarks",
              description=("JSON: `units: \"pixels\"` with `landmarks` 478 × [x, y, z] (FaceMesh's normalised "
                           "output × width, height, width) and the photo's `width` and `height`; or `units: "
                           "\"normalised\"` with 1,434 numbers already in this checkpoint's normalisation. A "
                           "personal-neutral checkpoint also needs `reference`."),
              responses={200: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}}},
                         **_errors(400, 413, 415, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/LandmarksRequest"}}}}})
    async def predict_landmarks(request: Request):
        _require_type(request, ("application/json",), "send the landmarks as JSON with Content-Type: application/json")
        return await in_pool(service.predict_landmarks, await request.body())

    @app.post("/predict/image", summary="Score the face in a photo (JPEG or PNG)",
              description=("The photo as a multipart `file` field (`curl -F file=@photo.jpg`), a raw `image/jpeg` or "
                           "`image/png` body, or JSON `{\"image\": \"<base64>\"}`. The answer's `state` is `ok`, "
                           "`multiple_faces` (the largest is scored), `no_face` or `needs_calibration`. "
                           "`landmarks=true` adds the face's 478 landmarks in pixels; `shape=true` its normalised "
                           "shape (for building a personal-neutral `reference`)."),
              responses={200: {"content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ImagePrediction"}}}}, **_errors(400, 413, 415, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImageUpload"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "application/json": {"schema": {"$ref": "#/components/schemas/ImageJSON"}}}}})
    async def predict_image(request: Request,
                            landmarks: bool = Query(False, description="add the 478 landmarks (pixels)"),
                            shape: bool = Query(False, description="add the normalised shape (1,434 numbers)")):
        kind = _require_type(request, ("multipart/form-data", "image/jpeg", "image/png", "application/json"),
                             "send the photo as multipart/form-data (a 'file' field), a raw image/jpeg or image/png "
                             "body, or JSON {\"image\": \"<base64>\"}")
        reference = None
        if kind == "multipart/form-data":
            async with request.form(max_files=1, max_fields=1) as form:
                upload = form.get("file", form.get("image"))
                if upload is None or isinstance(upload, str):
                    raise BadInput(422, "the multipart upload needs the photo in a file field named 'file'")
                data = await upload.read()
                text = form.get("reference")
            if text is not None:
                if not isinstance(text, str):
                    raise BadInput(422, "reference must be a text field holding a JSON array of 1,434 numbers")
                try:
                    reference = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    raise BadInput(400, f"the reference field is not valid JSON: {exc}") from None
        elif kind == "application/json":
            body = await request.body()

            def from_json():
                value = parse_json(body)
                _check_fields(value, ("image",), ("reference",))
                return service.predict_image(decode_base64(value["image"]), value.get("reference"), landmarks, shape)

            return await in_pool(from_json)
        else:
            data = await request.body()
            if not data:
                raise BadInput(400, f"empty body: expected the {kind} photo's bytes")
        return await in_pool(service.predict_image, data, reference, landmarks, shape)

    def _openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = _openapi
    return app


def _require_type(request, accepted: Sequence[str], hint: str) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in accepted:
        raise BadInput(415, f"Content-Type {kind or '(none)'!r} is not accepted here: {hint}")
    return kind


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m facekit serve``."""
    parser.add_argument("--weights", default=None,
                        help="checkpoint to serve (default: weights/model_binary.pt if notebook 03 trained it, else "
                             "the shipped weights/demo_binary.pt; the folder is $FACEKIT_WEIGHTS if set)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the "
                             "server, which has no authentication, to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, as the "
                                                                         "original system)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let pages from ORIGIN (e.g. http://localhost:3000) call the API from a browser; "
                             "repeat for more (default: none, CORS off)")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"largest request body in bytes (default {DEFAULT_MAX_BYTES:,})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest photo, width × height (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--threads", type=int, default=None,
                        help="inference threads, each with its own FaceMesh (default: one per CPU)")


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Parsed ``serve`` options → :class:`ServerSettings`; ``ValueError`` for impossible values."""
    for name in ("max_bytes", "max_pixels"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port number (0–65535)")
    extra = {} if args.threads is None else {"threads": args.threads}
    return ServerSettings(weights=Path(args.weights) if args.weights else None, host=args.host, port=args.port,
                          cors_origins=tuple(args.cors_origin), max_bytes=args.max_bytes,
                          max_pixels=args.max_pixels, **extra)


def serve_command(args: argparse.Namespace) -> int:
    """``python -m facekit serve``: load the model, then serve until interrupted; 2 when it cannot start."""
    from .checkpoint import CheckpointError

    try:
        settings = settings_from(args)
        require_extra()
        service = Service(settings)
    except (ServerSetupError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: the server cannot start: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(settings, service)
    p = service.predictor
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"facekit server: model {service.weights} ({p.task}, classes {list(p.classes)}, "
          f"{'personal-neutral: requests need a reference' if service.personal else 'plain'}); "
          f"{service.threads} inference threads", flush=True)
    print(f"facekit server: web page http://{shown}:{settings.port}/ · API docs http://{shown}:{settings.port}/docs · "
          f"CORS {'for ' + ', '.join(settings.cors_origins) if settings.cors_origins else 'off'} · "
          f"limits {settings.max_bytes:,} bytes, {settings.max_pixels:,} pixels", flush=True)
    if not is_loopback(settings.host):
        print(f"warning: listening on {settings.host}: other machines can reach this server, and it has no "
              "authentication", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", server_header=False)
    finally:
        service.close()
    return 0


# ----------------------------------------------------------------------------- a server in the background

def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (another process may still take it before the server binds it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(weights: Path | str | None = None, port: int = 0, host: str = "127.0.0.1",
                   args: Sequence[str] = (), log: Path | str | None = None, timeout_s: float = 180.0,
                   env: dict | None = None) -> Iterator[str]:
    """``python -m facekit serve`` in a background process; yields its base URL once ``/health`` answers.

    ``port=0`` picks a free loopback port (and tries another if it was taken in
    the meantime).  ``args``: further ``serve`` options (``--cors-origin``, …).
    ``log``: a file for the server's output (default: a temporary file, printed in
    the error if the server fails to start).  The process is stopped when the
    block ends, however it ends.
    """
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    for attempt in range(3 if port == 0 else 1):
        chosen = port or free_port(host)
        cmd = [sys.executable, "-m", "facekit", "serve", "--host", host, "--port", str(chosen), *args]
        if weights is not None:
            cmd += ["--weights", str(weights)]
        log_path = Path(log) if log else Path(tempfile.mkstemp(prefix="facekit-server-", suffix=".log")[1])
        url = f"http://{'[' + host + ']' if ':' in host else host}:{chosen}"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
        try:
            failure = _wait_for(url, proc, log_path, timeout_s)
            if failure is None:
                yield url
                return
            if "address already in use" in failure.lower() and attempt < 2 and port == 0:
                continue
            raise RuntimeError(failure)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if not log:
                log_path.unlink(missing_ok=True)


def _wait_for(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> str | None:
    """``None`` once ``url/health`` answers 200; else why not (the process exited, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            return f"the server exited with code {proc.returncode} before answering:\n{tail}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return None
        except OSError:
            time.sleep(0.1)
    return f"the server did not answer {url}/health within {timeout_s:g} s:\n" + \
        log_path.read_text(errors="replace")[-3000:]


# ----------------------------------------------------------------------------- load test

def _photo_bytes(photo) -> tuple[bytes, str]:
    """Bytes, a file path or an RGB array → (bytes, content type)."""
    if isinstance(photo, np.ndarray):
        from .live import encode_jpeg

        data = encode_jpeg(photo)
    elif isinstance(photo, (str, Path)):
        data = Path(photo).read_bytes()
    else:
        data = bytes(photo)
    kind = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return data, kind


def load_test(url: str, photos: Sequence, n_requests: int = 200, concurrency: int = 8,
              timeout_s: float = 60.0) -> dict:
    """``n_requests`` POSTs of ``photos`` (in turn) to ``url/predict/image`` from ``concurrency`` clients at once.

    ``photos``: JPEG/PNG bytes, file paths or RGB arrays.  Each client sends its
    next request as soon as its previous answer arrives (a multipart upload, as
    the web page sends).  Returns the counts (``errors``: answers other than 200,
    or no answer; ``error_examples``: the first few), latency percentiles in
    milliseconds over the successful requests, ``requests_per_s`` (completed
    requests over the wall time) and the answers' states.
    """
    import httpx

    if not photos:
        raise ValueError("load_test needs at least one photo")
    bodies = [_photo_bytes(p) for p in photos]
    lock = threading.Lock()
    issued = iter(range(n_requests))
    latencies: list[float] = []
    errors: list[str] = []
    states: collections.Counter = collections.Counter()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as http:
            while True:
                with lock:
                    i = next(issued, None)
                if i is None:
                    return
                data, kind = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    r = http.post("/predict/image", files={"file": (f"photo{i}", data, kind)})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"request {i}: {type(exc).__name__}: {exc}")
                    continue
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code == 200:
                        latencies.append(ms)
                        states[r.json().get("state")] += 1
                    else:
                        errors.append(f"request {i}: HTTP {r.status_code}: {r.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"load-test-{k}") for k in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"url": url, "requests": n_requests, "concurrency": concurrency, "photos": len(bodies),
            "errors": len(errors), "error_examples": errors[:5],
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "mean_ms": round(float(lat.mean()), 1), "max_ms": round(float(lat.max()), 1),
            "requests_per_s": round(len(latencies) / wall, 1), "wall_s": round(wall, 2), "states": dict(states),
            "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}
