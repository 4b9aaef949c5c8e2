"""The live panel: an anywidget that shows what :class:`facekit.live.LivePipeline` sees.

The browser's own camera (``getUserMedia``, so it works with a remote kernel) sends
one frame at a time (the camera's own YUV planes, a JPEG, or packed RGB pixels: the ``frame_format``
trait) with ``model.send({type: "frame"}, undefined, [buffer])``;
the kernel answers each with an ack that carries the scored face's 2-D landmarks,
and the browser sends the next frame only then, so frames never pile up.  The
handler runs in the kernel's comm handler between cells, so the kernel stays free.

Kernel-side sources (a local camera through OpenCV, for VS Code, which blocks
browser cameras in notebook output; a video file; a folder of images) run in a
background thread that feeds the same pipeline and updates the same panel.

The panel shows the video with the landmarks, the score bar (0–100) and label,
the smoothed and the raw score, frames per second and the latency per stage, the
score over the last minute, Start/Stop, Calibrate and Reset, and a plain message
for every state (:data:`facekit.live.STATES`).  Its numbers are synced traits, so
other cells can read them (``panel.score``, ``panel.state``, ``panel.summary()``).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import anywidget
import numpy as np
import traitlets as t

from .live import (STATES, FrameResult, LivePipeline, LiveSettings, Source, SourceError, YUVFrame, decode_frame,
                   open_source)
from .live import run as run_source
from .paths import ASSETS_DIR

FRAME_FORMATS = ("auto", "yuv", "jpeg", "rgb")
PREVIEW_FPS = 15  # kernel sources: frames shown in the panel per second at most (the score uses every frame)
SYNC_INTERVAL_S = 0.25  # the synced traits follow the frames at most this often (each frame's ack carries its own)


def _load(predictor):
    if isinstance(predictor, (str, Path)):
        from .checkpoint import load

        return load(predictor)
    return predictor


def _frame_format_from_env() -> str:
    value = os.environ.get("FACEKIT_FRAME_FORMAT", "auto").strip().lower() or "auto"
    if value not in FRAME_FORMATS:
        raise ValueError(f"FACEKIT_FRAME_FORMAT={value!r}: choose one of {', '.join(FRAME_FORMATS)}")
    return value


class LiveWidget(anywidget.AnyWidget):
    """The live camera panel.

    ``LiveWidget(predictor, personal=None, source=None, settings=LiveSettings())``:
    ``predictor`` and ``personal`` are :class:`facekit.checkpoint.Predictor` objects
    or checkpoint paths (see :class:`facekit.live.LivePipeline`); ``source`` is
    ``None``/``"browser"`` for the browser's camera, or anything
    :func:`facekit.live.open_source` accepts (``"camera"``, a video file, an image
    folder, a :class:`facekit.live.Source`).
    """

    _esm = ASSETS_DIR / "live_widget.js"
    _css = ASSETS_DIR / "live_widget.css"

    source = t.Unicode("browser").tag(sync=True)
    running = t.Bool(False).tag(sync=True)
    state = t.Unicode("idle").tag(sync=True)
    message = t.Unicode(STATES["idle"]).tag(sync=True)
    score = t.Float(None, allow_none=True).tag(sync=True)
    raw_score = t.Float(None, allow_none=True).tag(sync=True)
    label = t.Unicode("").tag(sync=True)
    top = t.List().tag(sync=True)
    classes = t.List().tag(sync=True)
    threshold = t.Float(50.0).tag(sync=True)
    model_info = t.Unicode("").tag(sync=True)
    calibration = t.Unicode("off").tag(sync=True)
    calibration_message = t.Unicode("").tag(sync=True)
    fps = t.Float(0.0).tag(sync=True)
    latency = t.Dict().tag(sync=True)
    frames = t.Int(0).tag(sync=True)
    faces = t.Int(0).tag(sync=True)
    smoothing_s = t.Float(1.0).tag(sync=True)
    calibrate_s = t.Float(3.0).tag(sync=True)
    width = t.Int(640).tag(sync=True)
    height = t.Int(480).tag(sync=True)
    jpeg_quality = t.Float(0.8).tag(sync=True)
    #: How the browser sends frames (README, *Live webcam demo*): "yuv", the camera's own 4:2:0 frame as WebCodecs
    #: gives it (I420 or NV12, 0.46 MB at 640×480, nothing encoded in the browser, 0.1–0.2 ms to convert
    #: here; a frame the browser cannot give so goes as JPEG); "jpeg" (about 40 kB, decoded here, 0.7 ms);
    #: "rgb" (packed pixels, 0.9 MB, the slowest round trip); "auto": "yuv" where JupyterLab's page comes
    #: from this machine (localhost), else "jpeg".  Default: $FACEKIT_FRAME_FORMAT, else "auto".
    frame_format = t.Enum(FRAME_FORMATS, "auto").tag(sync=True)

    def __init__(self, predictor=None, personal=None, source=None, settings: LiveSettings = LiveSettings(),
                 **kwargs):
        self.pipeline = LivePipeline(_load(predictor), _load(personal), settings)
        kwargs.setdefault("frame_format", _frame_format_from_env())
        super().__init__(smoothing_s=settings.smoothing_s, calibrate_s=settings.calibrate_s, **kwargs)
        self._source: Source | None = open_source(source)
        self.source = "browser" if self._source is None else self._source.name
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_wall: float | None = None
        self._last_preview = 0.0
        self._last_sync = 0.0
        self._fps = 0.0
        self._faces_seen = 0
        self._latest: FrameResult | None = None
        self.on_msg(self._on_msg)
        self._refresh_model()
        self._sync_calibration()

    # ------------------------------------------------------------------ Python API
    def load(self, predictor=None, personal=None) -> None:
        """Swap the models (``None`` unloads); the calibration and the smoothing start over."""
        self.pipeline.set_models(_load(predictor), _load(personal))
        self.reset()

    def start(self) -> None:
        """Start the source: the browser camera (as the Start button does) or the kernel source's thread."""
        if self._source is None:
            self.send({"type": "start-camera"})
        else:
            self.play()

    def play(self, source=None) -> "LiveWidget":
        """Run a kernel-side source (or the one given at construction) in a background thread.

        The cell returns at once; the panel updates as frames are scored; the
        kernel stays free for other cells.  :meth:`wait` blocks until a file or
        folder has been read to its end.
        """
        if source is not None:
            self.stop()
            self._source = open_source(source)
            self.source = "browser" if self._source is None else self._source.name
        if self._source is None:
            raise ValueError("this panel uses the browser's camera: press Start in the panel (or pass a source)")
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._last_wall = None
        with self.hold_sync():
            self.running = True
            self.state, self.message = "idle", f"starting {self._source.name}"
        self._thread = threading.Thread(target=self._run, name="facekit-live-source", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop: the browser stops every camera track; a kernel source's thread ends and releases its camera or file."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout)
        elif self._source is None:
            self.send({"type": "stop-camera"})
            self._sync()
            with self.hold_sync():
                self.running = False
                self.state, self.message = "stopped", STATES["stopped"]

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the kernel source ends (a video file or folder read to its end); returns :meth:`summary`."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary()

    def calibrate(self, seconds: float | None = None) -> str:
        message = self.pipeline.calibrate(self.calibrate_s if seconds is None else seconds)
        self._sync_calibration()
        return message

    def reset(self) -> str:
        message = self.pipeline.reset()
        with self.hold_sync():
            self.score = self.raw_score = None
            self.label, self.top = "", []
            self._sync_calibration()
            self._refresh_model()
        return message

    def summary(self) -> dict:
        """Frames, states, latency breakdown, calibration, the last score; and the source and frame rate.

        Exact at any time (the synced traits follow the frames a few times a second)."""
        return {"source": self.source, "fps": round(self._fps, 2), **self.pipeline.summary()}

    # ------------------------------------------------------------------ internals
    @t.observe("smoothing_s")
    def _smoothing_changed(self, change):
        self.pipeline.set_smoothing(change["new"])

    def _refresh_model(self) -> None:
        active = self.pipeline.active or self.pipeline.plain or self.pipeline.personal
        with self.hold_sync():
            self.model_info = self.pipeline.describe()
            self.classes = [] if active is None else list(active.classes)
            self.threshold = 50.0 if active is None else float(active.threshold) * 100
            if active is None:
                self.state, self.message = "no_model", STATES["no_model"]

    def _sync_calibration(self) -> None:
        with self.hold_sync():
            self.calibration = self.pipeline.calibration
            self.calibration_message = self.pipeline.calibration_message

    def _publish(self, result: FrameResult, fps: float | None = None, force: bool = False) -> None:
        """Count the frame and sync the panel's traits: at once when the state, label or calibration
        changes, else at most every :data:`SYNC_INTERVAL_S` (every frame's own numbers go with its ack)."""
        now = time.monotonic()
        if fps is None:  # kernel sources: frames per second of wall-clock time
            if self._last_wall is not None and now > self._last_wall:
                inst = 1.0 / (now - self._last_wall)
                fps = inst if self._fps <= 0 else 0.8 * self._fps + 0.2 * inst
            self._last_wall = now
        if fps is not None:
            self._fps = float(fps)
        self._faces_seen += result.landmarks is not None
        self._latest = result
        changed = (result.state != self.state or (result.label or "") != self.label
                   or result.calibration != self.calibration)
        if force or changed or now - self._last_sync >= SYNC_INTERVAL_S:
            self._sync(result)

    def _sync(self, result: FrameResult | None = None) -> None:
        result = result or self._latest
        if result is None:
            return
        self._last_sync = time.monotonic()
        active = self.pipeline.active
        with self.hold_sync():
            self.state, self.message = result.state, result.message
            self.score, self.raw_score = result.score, result.raw_score
            self.label = result.label or ""
            self.top = [[name, round(p, 1)] for name, p in result.top]
            timings = {k: round(v, 3) for k, v in result.timings.items()}
            timings["total"] = round(result.total_ms, 3)
            self.latency = timings
            self.frames = self.pipeline.frames
            self.faces = self._faces_seen
            self.fps = self._fps
            self.calibration, self.calibration_message = result.calibration, result.calibration_message
            if active is not None and self.threshold != float(active.threshold) * 100:
                self.threshold = float(active.threshold) * 100
                self.classes = list(active.classes)

    def _frame_message(self, kind: str, result: FrameResult) -> dict:
        return {"type": kind, **result.to_message(), "frames": self.pipeline.frames, "faces": self._faces_seen}

    def _on_msg(self, _widget, content, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "frame":
            self._on_frame(content, buffers)
        elif kind == "start":
            if self._source is not None:
                self.play()
            else:
                with self.hold_sync():
                    self.running = True
                    self.state, self.message = "idle", "camera started; waiting for the first frame"
        elif kind == "stop":
            self.stop()
            if self._source is None:
                self._sync()
                with self.hold_sync():
                    self.running = False
                    self.state, self.message = "stopped", "stopped; the camera is released"
        elif kind == "calibrate":
            self.calibrate()
        elif kind == "reset":
            self.reset()
        elif kind == "camera":  # the browser could not open a camera
            state = content.get("state") if content.get("state") in STATES else "no_camera"
            with self.hold_sync():
                self.running = False
                self.state, self.message = state, str(content.get("message") or STATES[state])

    def _on_frame(self, content: dict, buffers) -> None:
        entered = time.perf_counter()
        ack = {"type": "ack", "id": content.get("id")}
        points = b""
        try:
            data = buffers[0] if buffers else b""
            stamp = content.get("t")
            stamp = None if stamp is None else float(stamp) / 1000.0
            if content.get("format") == "yuv":  # the camera's 4:2:0 planes: converted in the path's decode stage
                result = self.pipeline.process(YUVFrame(data, int(content.get("width") or 0),
                                                        int(content.get("height") or 0), str(content.get("layout")),
                                                        content.get("matrix"), content.get("full_range")), stamp)
            elif content.get("format") == "rgb":  # packed RGB rows: used in place, nothing to decode
                result = self.pipeline.process(data, stamp, size=(int(content.get("width") or 0),
                                                                  int(content.get("height") or 0)))
            else:
                result = self.pipeline.process(bytes(data), stamp)
            fps = content.get("fps")
            self._publish(result, float(fps) if isinstance(fps, (int, float)) else None)
            ack.update(self._frame_message("ack", result))
            points = result.points().tobytes()
        except Exception as exc:  # noqa: BLE001 - the browser must get its ack whatever happens
            with self.hold_sync():
                self.state, self.message = "source_error", f"the kernel failed on a frame: {type(exc).__name__}: {exc}"
            ack.update(state="source_error")
        finally:
            ack["handler_ms"] = round((time.perf_counter() - entered) * 1000, 2)  # the kernel's whole share
            self.send(ack, buffers=[points])

    def _on_source_result(self, result: FrameResult, frame) -> None:
        self._publish(result)
        now = time.monotonic()
        if now - self._last_preview < 1.0 / PREVIEW_FPS:
            return  # scored and counted; the panel shows at most PREVIEW_FPS frames a second
        self._last_preview = now
        buffers = [result.points().tobytes()]
        try:
            buffers.append(_preview_jpeg(frame.data, frame.bgr))
        except Exception:  # noqa: BLE001 - a frame that cannot be shown is still scored
            pass
        self.send(self._frame_message("result", result), buffers=buffers)

    def _run(self) -> None:
        state = message = None
        try:
            run_source(self._source, self.pipeline, on_result=self._on_source_result, stop=self._stop)
            if self._stop.is_set():
                state, message = "stopped", f"stopped; {self._source.name} is released"
            else:
                state, message = "finished", f"{self._source.name}: {STATES['finished']} ({self.pipeline.frames} frames)"
        except SourceError as err:
            state, message = err.state, err.message
        except Exception as exc:  # noqa: BLE001 - reported in the panel, not lost in a thread
            state, message = "source_error", f"{self._source.name} failed: {type(exc).__name__}: {exc}"
        finally:
            self._sync()
            with self.hold_sync():
                self.running = False
                self.state, self.message = state or "source_error", message or "the source ended unexpectedly"


def _preview_jpeg(data, bgr: bool, max_width: int = 640) -> bytes:
    """The frame as a JPEG for the panel (at most ``max_width`` wide)."""
    import cv2

    if isinstance(data, (bytes, bytearray, memoryview)):
        rgb = decode_frame(bytes(data))
        image = rgb[:, :, ::-1]
    else:
        image = np.asarray(data)
        if not bgr:
            image = image[:, :, ::-1]
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, int(round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 75])
    if not ok:
        raise ValueError("cannot encode the preview")
    return buf.tobytes()
