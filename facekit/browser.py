"""Notebook 05 in a real browser: JupyterLab on a loopback port and Debian's headless Chromium.

Shared by the browser test (``tests/test_browser_e2e.py``) and the benchmark's
browser section (:func:`browser_fps`, ``python -m facekit bench``): JupyterLab
with its own config, runtime and settings folders (:class:`Lab`, started as
``./kit lab`` starts it, with ``TCP_NODELAY`` on the kernel websocket), Chromium
driven by Python playwright (no browser download) whose fake camera plays a
``.y4m`` clip made with ffmpeg (:func:`make_clip`), and the page-side snippets
that read the notebook's state and the live panel's numbers.

Needs Debian's ``chromium`` (or ``$FACEKIT_CHROMIUM``), ``ffmpeg`` and the Python
``playwright`` package; :func:`missing_tools` names what is absent (``./kit test``
installs all three).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from .paths import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "05_live_webcam_demo.ipynb"
CHROMIUM = os.environ.get("FACEKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CLIP_FPS = 30
#: Chromium flags: headless, no GPU, a fake camera (playing ``--use-file-for-fake-video-capture``) allowed
#: without asking, nothing fetched from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
#: How the panel's frames must travel from a loopback page, for each ``frame_format``: "auto" sends YUV here.
TRAVELS_AS = {"auto": "yuv", "yuv": "yuv", "jpeg": "jpeg", "rgb": "rgb"}


def missing_tools() -> list[str]:
    """What the browser runs need and this machine lacks (empty: everything is there)."""
    missing = [what for what, ok in ((f"Debian's chromium ({CHROMIUM}; or set FACEKIT_CHROMIUM)",
                                      os.access(CHROMIUM, os.X_OK)),
                                     ("ffmpeg", shutil.which("ffmpeg") is not None)) if not ok]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python playwright package")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def letterbox(rgb: np.ndarray, size=(640, 480)) -> np.ndarray:
    """A photo scaled to fill the frame's height, centred on a grey 640×480 canvas (a webcam's frame)."""
    from PIL import Image

    w, h = size
    im = Image.fromarray(rgb).convert("RGB")
    scale = h / im.height
    im = im.resize((max(1, round(im.width * scale)), h), Image.LANCZOS)
    canvas = Image.new("RGB", size, (96, 96, 110))
    canvas.paste(im, ((w - im.width) // 2, 0))
    return np.asarray(canvas)


def make_clip(frames: list[np.ndarray], seconds_each: float, path: Path) -> Path:
    """Still frames, each held ``seconds_each``, → a .y4m (I420) at :data:`CLIP_FPS`: Chromium's fake camera loops it."""
    from PIL import Image

    path = Path(path)
    folder = path.parent / f"{path.stem}_frames"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-framerate", f"1/{seconds_each}", "-i", str(folder / "f%03d.png"),
           "-vf", f"fps={CLIP_FPS},format=yuv420p", "-f", "yuv4mpegpipe", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


class Lab:
    """JupyterLab on a loopback port with its own config, runtime, settings and workspace folders."""

    def __init__(self, tmp: Path, notebook_dir: Path, env: dict, nodelay: bool | None = None):
        tmp = Path(tmp)
        self.port = free_port()
        for name in ("config", "runtime", "data", "settings", "workspaces"):
            (tmp / "jupyter" / name).mkdir(parents=True)
        env = dict(os.environ, **env,
                   JUPYTER_CONFIG_DIR=str(tmp / "jupyter" / "config"),
                   JUPYTER_RUNTIME_DIR=str(tmp / "jupyter" / "runtime"),
                   JUPYTER_DATA_DIR=str(tmp / "jupyter" / "data"),
                   JUPYTERLAB_SETTINGS_DIR=str(tmp / "jupyter" / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp / "jupyter" / "workspaces"))
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={self.port}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={notebook_dir}", "--IdentityProvider.token=",
               "--ServerApp.password=", "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.nodelay = os.environ.get("FACEKIT_LAB_NODELAY", "1") != "0" if nodelay is None else nodelay
        if self.nodelay:  # as ./kit lab starts it (facekit/lab.py)
            from .lab import FLAG

            cmd.append(FLAG)
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = tmp / "jupyterlab.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=notebook_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


# JavaScript run in the page (window.jupyterapp is exposed by --LabApp.expose_app_in_browser).
JS_NOTEBOOK = """(name) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return {ready: false, why: "no window.jupyterapp yet"};
  let nb = null;
  for (const w of app.shell.widgets("main")) { if (w.context && w.context.path.endsWith(name)) nb = w; }
  if (!nb || !nb.content || !nb.sessionContext) return {ready: false, why: "notebook not open yet"};
  const session = nb.sessionContext.session;
  const kernel = session && session.kernel;
  const cells = nb.content.widgets.filter((c) => c.model.type === "code");
  const errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === "error") errors.push(`${o.ename}: ${o.evalue}\\n${(o.traceback || []).join("\\n")}`);
    }
  }
  return {ready: true, id: nb.id, status: kernel ? kernel.status : "no kernel",
          counts: cells.map((c) => c.model.executionCount), errors};
}"""
JS_RUN_ALL = """async (id) => { const app = window.jupyterapp; app.shell.activateById(id);
                                 await app.commands.execute("notebook:run-all-cells"); }"""
JS_EXECUTE = """async ([name, code]) => {
  // Run code in the notebook's kernel while frames stream (it answers between frames: the kernel stays free).
  let nb = null;
  for (const w of window.jupyterapp.shell.widgets("main")) { if (w.context && w.context.path.endsWith(name)) nb = w; }
  const future = nb.sessionContext.session.kernel.requestExecute({code, silent: false, store_history: false});
  let out = "";
  future.onIOPub = (msg) => { if (msg.header.msg_type === "stream") out += msg.content.text; };
  const started = performance.now();
  await future.done;
  return {out, ms: performance.now() - started};
}"""
JS_PANEL = """() => {
  const el = document.querySelector(".fk-live");
  if (!el) return null;
  const video = el.querySelector(".fk-video");
  return {...el.dataset, banner: el.querySelector(".fk-banner").textContent,
          label_text: el.querySelector(".fk-label").textContent, score_text: el.querySelector(".fk-score").textContent,
          calibration_text: el.querySelector(".fk-calibration").textContent,
          stats: el.querySelector(".fk-stats").textContent, camera_on: !!(video && video.srcObject),
          tracks: video && video.srcObject ? video.srcObject.getTracks().filter((t) => t.readyState === "live").length : 0,
          now: performance.now()};
}"""


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def wait(page, fn, arg, until, timeout: float, what: str, poll: float = 0.25):
    """Evaluate ``fn`` in the page until ``until(result)``; raises TimeoutError naming ``what``."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = page.evaluate(fn, arg) if arg is not None else page.evaluate(fn)
        if until(last):
            return last
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}; last seen: {last}")


def launch(pw, profile: Path, clip: Path):
    """A persistent headless Chromium context whose fake camera plays ``clip``."""
    return pw.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, viewport={"width": 1400, "height": 1000},
        args=CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={Path(clip).resolve()}"])


def notebook_lab(tmp: Path, checkpoint: Path, frame_format: str) -> Lab:
    """JupyterLab on a copy of notebook 05 in ``tmp``, set to run it in smoke mode on the browser's camera with
    ``checkpoint`` and the panel's ``frame_format`` (not yet waited for: :meth:`Lab.wait_ready`)."""
    tmp = Path(tmp)
    notebook_dir = tmp / "notebooks"
    notebook_dir.mkdir()
    shutil.copy(NOTEBOOK, notebook_dir / NOTEBOOK.name)
    return Lab(tmp, notebook_dir, {
        "FACEKIT_CHECKPOINT": str(Path(checkpoint).resolve()), "FACEKIT_LIVE_SOURCE": "browser", "FACEKIT_SMOKE": "1",
        "FACEKIT_WEIGHTS": str(tmp / "no_weights"), "FACEKIT_CACHE": str(tmp / "cache"),
        "FACEKIT_REPORTS": str(tmp / "reports"), "MPLBACKEND": "agg", "FACEKIT_FRAME_FORMAT": frame_format})


@contextlib.contextmanager
def camera_page(pw, profile: Path, lab: Lab, clip: Path):
    """A page of headless Chromium (:func:`launch`) allowed to use the fake camera on ``lab``'s origin."""
    context = launch(pw, profile, clip)
    try:
        context.grant_permissions(["camera"], origin=lab.url)
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()


def open_notebook(page, lab: Lab, name: str = NOTEBOOK.name) -> dict:
    """Open notebook ``name`` and run every cell; returns the notebook's state (``errors`` lists failed cells)."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset", timeout=120_000)
    nb = wait(page, JS_NOTEBOOK, name, lambda s: s and s.get("ready") and s["status"] == "idle", 180,
              "the kernel to be idle")
    page.evaluate(JS_RUN_ALL, nb["id"])
    return wait(page, JS_NOTEBOOK, name,
                lambda s: s["errors"] or (s["status"] == "idle" and all(c is not None for c in s["counts"])),
                300, "every cell to run", poll=0.5)


def browser_fps(tmp: Path, checkpoint: Path, formats=("auto", "jpeg"), passes: int = 2, seconds: float = 10.0,
                settle_s: float = 2.0) -> dict:
    """Frames per second the live panel sustains in a real browser, per frame format, in alternating passes.

    One JupyterLab (``./kit lab``'s server setting) and one headless Chromium whose fake camera plays the
    demo face (:func:`facekit.live.demo_frames`, 640×480 at 30 frames/s) run notebook 05 in smoke mode with
    ``checkpoint``, press Start, and then, ``passes`` times, for each of ``formats`` in turn (the order
    reversed every other pass), set the panel's ``frame_format`` from the kernel, let ``settle_s`` pass and
    count the frames the kernel acknowledges over ``seconds``.  Per format: the median rate over passes,
    each pass's rate, and the panel's own medians of the last 30 frames at the end of each pass (round
    trip, the kernel's handler, the browser's capture and encoding, the kernel's ms per stage), the format
    the frames travelled in; and the kernel's stage breakdown over the whole run.  Raises RuntimeError where the tools are missing (:func:`missing_tools`).
    """
    from playwright.sync_api import sync_playwright

    from .live import demo_frames

    missing = missing_tools()
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed; ./kit test installs them")
    tmp = Path(tmp)
    clip = make_clip(demo_frames(60), 1 / CLIP_FPS, tmp / "clip.y4m")
    lab = notebook_lab(tmp, checkpoint, formats[0])
    runs: dict[str, list[dict]] = {f: [] for f in formats}
    try:
        lab.wait_ready()
        with sync_playwright() as pw, camera_page(pw, tmp / "chromium-profile", lab, clip) as page:
            nb = open_notebook(page, lab)
            if nb["errors"]:
                raise RuntimeError("a cell of notebook 05 failed:\n" + "\n".join(nb["errors"]))
            page.wait_for_selector(".fk-live .fk-start", timeout=60_000)
            page.click(".fk-live .fk-start")
            wait(page, JS_PANEL, None, lambda p: int(p["frames"]) > 0 and p["camera_on"], 60,
                 "the first frame to reach the kernel")
            for k in range(passes):
                for fmt in (formats if k % 2 == 0 else formats[::-1]):
                    page.evaluate(JS_EXECUTE, [NOTEBOOK.name, f"panel.frame_format = {fmt!r}"])
                    time.sleep(settle_s)
                    start = page.evaluate(JS_PANEL)
                    t0 = time.perf_counter()
                    time.sleep(seconds)
                    end = page.evaluate(JS_PANEL)
                    elapsed = time.perf_counter() - t0
                    runs[fmt].append({
                        "fps": round((int(end["frames"]) - int(start["frames"])) / elapsed, 2),
                        "frames": int(end["frames"]) - int(start["frames"]), "seconds": round(elapsed, 2),
                        "travelled_as": end.get("frameFormat"), "round_trip_ms": number(end.get("roundTripMs")),
                        "kernel_handler_ms": number(end.get("handlerMs")),
                        "browser_capture_ms": number(end.get("captureMs")), "stats": end.get("stats"),
                        "kernel_stages_ms": json.loads(end.get("latency") or "{}"),
                        "with_face": end.get("state") in ("ok", "multiple_faces")})
            asked = page.evaluate(JS_EXECUTE, [NOTEBOOK.name, "import json; print(json.dumps(panel.summary()))"])
            page.click(".fk-live .fk-stop")
    finally:
        lab.close()
    summary = json.loads(asked["out"].strip().splitlines()[-1])
    out = {"size": "640x480", "camera_fps": CLIP_FPS, "clip": "the demo face (scikit-image astronaut), 2 s",
           "checkpoint": str(Path(checkpoint).resolve()), "server_tcp_nodelay": lab.nodelay, "passes": passes,
           "seconds_per_pass": seconds, "kernel_latency_ms": summary.get("latency_ms"),
           "kernel_states": summary.get("states"), "formats": {}}
    for fmt, rs in runs.items():
        def med(key):
            values = [r[key] for r in rs if r[key] is not None]
            return round(statistics.median(values), 2) if values else None

        stages = {k: round(statistics.median(r["kernel_stages_ms"][k] for r in rs), 3)
                  for k in rs[0]["kernel_stages_ms"] if all(k in r["kernel_stages_ms"] for r in rs)}
        out["formats"][fmt] = {"fps": med("fps"), "round_trip_ms": med("round_trip_ms"),
                               "kernel_handler_ms": med("kernel_handler_ms"),
                               "browser_capture_ms": med("browser_capture_ms"), "kernel_stages_ms": stages,
                               "travelled_as": sorted({r["travelled_as"] for r in rs}), "passes": rs}
    return out
