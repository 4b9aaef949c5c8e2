"""Notebook 05 in a real browser: JupyterLab + headless Chromium whose fake camera plays real faces.

The test starts JupyterLab on a loopback port, opens a copy of notebook 05 in
Debian's Chromium driven by Python playwright (no browser download), runs every
cell, presses Start, and checks what the page shows: frames reach the kernel, a
face is found, a score and a label appear, Calibrate explains itself, Stop
releases the camera.

The fake camera plays a .y4m clip made with ffmpeg from real photos.  Where
``../shared/datasets/jaffe`` is present, the clip is one person's (KM) three
neutral photos, then the same person's three fear photos, and the model is trained
in the test on the *other nine* JAFFE people (FaceMesh landmarks from
``facekit.extract.extract``, the kit's aligned normalisation): the label shown must
move from neutral to anxious.  KM is used because a model trained without KM
separates KM's photos clearly in the live path (held-out probabilities about
0.05 vs 0.99 over three seeds), so the check tests the live path, not the
model's luck.  Without JAFFE the clip is the scikit-image astronaut and only
frames, face and score are checked.

It runs twice: with the panel's default ``frame_format="auto"``, which on this
loopback page must send the camera's own YUV planes (WebCodecs), and with
``"jpeg"``, what a page served over a network sends (``FACEKIT_FRAME_FORMAT`` set
in the environment runs that one format alone).  It saves
``test-results/live_e2e.png`` and writes the browser's frame rate to
``test-results/live_fps.json`` (``live_e2e_jpeg.png`` and ``live_fps_jpeg.json``
for the JPEG run; printed too; not asserted: timings are measured, not tested).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from builders import CHROMIUM, require_browser_tools

from facekit.paths import PROJECT_ROOT, shared_datasets

NOTEBOOK = PROJECT_ROOT / "notebooks" / "05_live_webcam_demo.ipynb"
RESULTS = PROJECT_ROOT / "test-results"
HELD_OUT = "KM"
CLIP_FPS = 30
SECONDS_PER_PHOTO = 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _letterbox(rgb: np.ndarray, size=(640, 480)) -> np.ndarray:
    """A photo scaled to fill the frame's height, centred on a grey 640×480 canvas (a webcam's frame)."""
    from PIL import Image

    w, h = size
    im = Image.fromarray(rgb).convert("RGB")
    scale = h / im.height
    im = im.resize((max(1, round(im.width * scale)), h), Image.LANCZOS)
    canvas = Image.new("RGB", size, (96, 96, 110))
    canvas.paste(im, ((w - im.width) // 2, 0))
    return np.asarray(canvas)


def _make_clip(frames: list[np.ndarray], seconds_each: float, path: Path) -> Path:
    """Still frames, each held ``seconds_each``, → a 640×480 .y4m at CLIP_FPS (Chromium's fake camera loops it)."""
    from PIL import Image

    folder = path.parent / "clip_frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-framerate", f"1/{seconds_each}", "-i", str(folder / "f%03d.png"),
           "-vf", f"fps={CLIP_FPS},format=yuv420p", "-f", "yuv4mpegpipe", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def _jaffe_clip_and_model(tmp: Path) -> tuple[Path, Path, dict]:
    """KM's neutral then fear photos as a clip, and a checkpoint trained on the other JAFFE people."""
    import torch

    from facekit.checkpoint import features, normalization_meta, save
    from facekit.extract import decode, extract, read_bytes
    from facekit.model import ModelConfig
    from facekit.normalize import NormalizeSettings, normalize
    from facekit.sources import index_preset
    from facekit.train import TrainConfig, fit

    index = index_preset("jaffe")
    index = index[index["emotion"].isin(["중립", "불안"])].reset_index(drop=True)
    table, landmarks = extract(index, cache=tmp / "cache", workers=1, progress=False)
    ok = (table["status"] == "ok").to_numpy()
    table, landmarks = table[ok].reset_index(drop=True), landmarks[ok]
    settings = NormalizeSettings("kit", align=True)
    x = features(normalize(landmarks, settings), "xyz")
    y = (table["emotion"] == "불안").to_numpy().astype(int)
    train = (table["person"] != HELD_OUT).to_numpy()
    assert HELD_OUT not in set(table.loc[train, "person"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model; on a shared 2-core machine more threads only wait for each other
    try:
        model, _ = fit(x[train], y[train], None, None,
                       ModelConfig(n_features=x.shape[1], n_classes=2, hidden=128, blocks=1),
                       TrainConfig(epochs=150, seed=0))
    finally:
        torch.set_num_threads(threads)
    checkpoint = save(tmp / "jaffe_without_KM.pt", model, {
        "classes": ["neutral", "anxious"], "task": "binary", "features": "xyz",
        "normalization": normalization_meta(settings),
        "training_data": {"source": f"JAFFE without {HELD_OUT}", "photos": int(train.sum()),
                          "people": sorted(set(table.loc[train, "person"]))}})
    held = table[~train]
    photos = []
    for emotion in ("중립", "불안"):  # neutral first, then fear
        for row in held[held["emotion"] == emotion].sort_values("member").itertuples():
            photos.append(_letterbox(decode(read_bytes(row.container, row.member))[0]))
    info = {"clip": f"JAFFE {HELD_OUT}: {int((held['emotion'] == '중립').sum())} neutral then "
                    f"{int((held['emotion'] == '불안').sum())} fear photos, {SECONDS_PER_PHOTO} s each",
            "neutral_photos": int((held["emotion"] == "중립").sum())}
    return _make_clip(photos, SECONDS_PER_PHOTO, tmp / "clip.y4m"), checkpoint, info


def _astronaut_clip_and_model(tmp: Path) -> tuple[Path, Path, dict]:
    """The astronaut moving slowly, and a small model trained on the synthetic demo data."""
    import torch

    from facekit import live
    from facekit.checkpoint import features, normalization_meta, save
    from facekit.model import ModelConfig
    from facekit.normalize import NormalizeSettings, normalize
    from facekit.synthetic import make_dataset
    from facekit.train import TrainConfig, fit

    table, landmarks = make_dataset(n_people=20, photos_per_emotion=4, seed=0)
    settings = NormalizeSettings("kit", align=True)
    x = features(normalize(landmarks, settings), "xyz")
    y = (table["emotion"] == "불안").to_numpy().astype(int)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = fit(x, y, None, None, ModelConfig(n_features=x.shape[1], n_classes=2, hidden=64, blocks=1),
                       TrainConfig(epochs=10))
    finally:
        torch.set_num_threads(threads)
    checkpoint = save(tmp / "synthetic.pt", model, {"classes": ["neutral", "anxious"], "task": "binary",
                                                    "features": "xyz", "normalization": normalization_meta(settings)})
    return (_make_clip(live.demo_frames(60), 1 / CLIP_FPS, tmp / "clip.y4m"), checkpoint,
            {"clip": "scikit-image astronaut, 2 s"})


class Lab:
    """JupyterLab on a loopback port with its own config, runtime, settings and workspace folders."""

    def __init__(self, tmp: Path, notebook_dir: Path, env: dict):
        self.port = _free_port()
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
        if os.environ.get("FACEKIT_LAB_NODELAY", "1") != "0":  # as ./kit lab starts it (facekit/lab.py)
            from facekit.lab import FLAG

            cmd.append(FLAG)
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = open(tmp / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=notebook_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "jupyterlab.log"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

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
JS_KERNEL_SUMMARY = """async (name) => {
  // Ask the kernel itself, while frames stream: it answers between frames (the kernel stays free).
  let nb = null;
  for (const w of window.jupyterapp.shell.widgets("main")) { if (w.context && w.context.path.endsWith(name)) nb = w; }
  const future = nb.sessionContext.session.kernel.requestExecute(
    {code: "import json; print(json.dumps(panel.summary()))", silent: false, store_history: false});
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


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _wait(page, fn, arg, until, timeout: float, what: str, poll: float = 0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = page.evaluate(fn, arg) if arg is not None else page.evaluate(fn)
        if until(last):
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last}")


#: Frame formats the browser test runs (the panel's frame_format) → how the frames must travel from this
#: loopback page: "auto" sends the camera's YUV planes here.
FRAME_FORMATS = {"auto": "yuv", "yuv": "yuv", "jpeg": "jpeg", "rgb": "rgb"}
RUN_FORMATS = [os.environ["FACEKIT_FRAME_FORMAT"]] if os.environ.get("FACEKIT_FRAME_FORMAT") else ["auto", "jpeg"]


@pytest.mark.parametrize("frame_format", RUN_FORMATS)
def test_notebook_05_in_a_real_browser(tmp_path: Path, frame_format: str):
    require_browser_tools()
    from playwright.sync_api import sync_playwright

    jaffe = (shared_datasets() / "jaffe").is_dir()
    started = time.time()
    clip, checkpoint, info = (_jaffe_clip_and_model if jaffe else _astronaut_clip_and_model)(tmp_path)
    prepared_s = time.time() - started

    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()
    shutil.copy(NOTEBOOK, notebook_dir / NOTEBOOK.name)
    lab = Lab(tmp_path, notebook_dir, {
        "FACEKIT_CHECKPOINT": str(checkpoint), "FACEKIT_LIVE_SOURCE": "browser", "FACEKIT_SMOKE": "1",
        "FACEKIT_WEIGHTS": str(tmp_path / "no_weights"), "FACEKIT_CACHE": str(tmp_path / "cache"),
        "FACEKIT_REPORTS": str(tmp_path / "reports"), "MPLBACKEND": "agg", "FACEKIT_FRAME_FORMAT": frame_format})
    suffix = "" if frame_format == "auto" else f"_{frame_format}"
    RESULTS.mkdir(exist_ok=True)
    observations: list[dict] = []
    try:
        lab.wait_ready()
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                viewport={"width": 1400, "height": 1000},
                args=["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                      "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip.resolve()}",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      "--no-first-run", "--disable-dev-shm-usage"])
            try:
                context.grant_permissions(["camera"], origin=lab.url)
                page = context.pages[0] if context.pages else context.new_page()
                console: list[str] = []
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?reset", timeout=120_000)

                nb = _wait(page, JS_NOTEBOOK, NOTEBOOK.name,
                           lambda s: s and s.get("ready") and s["status"] == "idle", 180, "the kernel to be idle")
                page.evaluate("""async (id) => { const app = window.jupyterapp; app.shell.activateById(id);
                                 await app.commands.execute("notebook:run-all-cells"); }""", nb["id"])
                nb = _wait(page, JS_NOTEBOOK, NOTEBOOK.name,
                           lambda s: s["errors"] or (s["status"] == "idle" and all(c is not None for c in s["counts"])),
                           300, "every cell to run", poll=0.5)
                assert not nb["errors"], "a cell failed:\n" + "\n".join(nb["errors"])

                page.wait_for_selector(".fk-live .fk-start", timeout=60_000)
                panel = page.evaluate(JS_PANEL)
                assert panel["state"] == "idle" and panel["frames"] == "0", panel

                # Calibrate without a personal-neutral model: the panel says so instead of pretending.
                page.click(".fk-live .fk-calibrate")
                _wait(page, JS_PANEL, None, lambda p: "personal-neutral" in p["calibration_text"], 30,
                      "Calibrate to explain that no personal-neutral model is loaded")

                page.click(".fk-live .fk-start")
                first = _wait(page, JS_PANEL, None, lambda p: int(p["frames"]) > 0 and p["camera_on"], 60,
                              "the first frame to reach the kernel")
                # Watch the page: at least two loops of the clip (JAFFE) or 10 s.
                watch_s = max(10.0, 2.5 * 6 * SECONDS_PER_PHOTO) if jaffe else 10.0
                t0, f0 = time.time(), int(first["frames"])
                moved = False
                while time.time() - t0 < max(watch_s, 60 if jaffe else 10):
                    p = page.evaluate(JS_PANEL)
                    p["wall"] = time.time() - t0
                    observations.append(p)
                    if jaffe:
                        labels = [o["label"] for o in observations if o["state"] in ("ok", "multiple_faces")]
                        seen_neutral = "neutral" in labels
                        moved = seen_neutral and "anxious" in labels[labels.index("neutral"):]
                    if time.time() - t0 >= watch_s and (moved or not jaffe):
                        break
                    time.sleep(0.2)
                last = observations[-1]
                elapsed = last["wall"]
                # The frames travel as the panel's frame_format says ("auto" on this loopback page: YUV).
                assert last["frameFormat"] == FRAME_FORMATS[frame_format], last
                asked = page.evaluate(JS_KERNEL_SUMMARY, NOTEBOOK.name)
                kernel_summary = json.loads(asked["out"].strip().splitlines()[-1])
                kernel_frames = int(last["frames"]) - f0
                page.screenshot(path=str(RESULTS / f"live_e2e{suffix}.png"), full_page=False)
                page.locator(".fk-live").screenshot(path=str(RESULTS / f"live_e2e_panel{suffix}.png"))

                # Stop releases the camera (every track ended, the video element emptied).
                page.click(".fk-live .fk-stop")
                stopped = _wait(page, JS_PANEL, None, lambda p: p["running"] == "false" and not p["camera_on"], 30,
                                "Stop to release the camera")
                frames_at_stop = int(stopped["frames"])
                time.sleep(1.0)
                after = page.evaluate(JS_PANEL)
            finally:
                context.close()
    finally:
        lab.close()

    fps = {"browser_fps_frames_acked": round(kernel_frames / elapsed, 2),
           "browser_fps_panel": _number(last["fps"]), "seconds_watched": round(elapsed, 1),
           "frames": kernel_frames, "frame_size": "640x480", "frame_format": last["frameFormat"],
           "camera_fps": CLIP_FPS, "clip": info["clip"],
           "server_tcp_nodelay": os.environ.get("FACEKIT_LAB_NODELAY", "1") != "0",
           "round_trip_ms": _number(last.get("roundTripMs")), "kernel_handler_ms": _number(last.get("handlerMs")),
           "browser_capture_ms": _number(last.get("captureMs")), "camera_fps_seen": _number(last.get("cameraFps")),
           "kernel_summary": kernel_summary, "cell_answer_ms_while_streaming": round(asked["ms"]),
           "panel_stats": last["stats"], "prepare_s": round(prepared_s, 1),
           "load_average": [round(v, 2) for v in os.getloadavg()]}
    (RESULTS / f"live_fps{suffix}.json").write_text(json.dumps(fps, indent=2) + "\n")
    print(f"\nbrowser fps at 640x480, {fps['frame_format']} frames: {fps['browser_fps_frames_acked']} frames/s acknowledged by the kernel "
          f"over {elapsed:.1f} s (panel: {fps['browser_fps_panel']}); {last['stats']}")

    assert kernel_summary["frames"] > 10 and kernel_summary["states"].get("ok", 0) > 0, kernel_summary
    assert asked["ms"] < 30_000, f"the kernel took {asked['ms']:.0f} ms to run a cell while frames streamed"
    with_face = [o for o in observations if o["state"] in ("ok", "multiple_faces")]
    assert kernel_frames > 10, f"frames did not keep reaching the kernel: {observations[-3:]}"
    assert int(last["faces"]) > 0 and with_face, f"no face found: {observations[-3:]}"
    scored = [o for o in with_face if o["score"] not in ("", None)]
    assert scored, f"no score shown: {with_face[-3:]}"
    assert all(0 <= float(o["score"]) <= 100 for o in scored)
    assert all(o["label_text"] in ("neutral", "anxious") for o in scored), scored[-1]
    assert frames_at_stop == int(after["frames"]), "frames kept arriving after Stop"
    assert after["tracks"] == 0 and after["state"] == "stopped", after
    if jaffe:
        labels = [o["label"] for o in with_face]
        assert moved, f"the label never moved from neutral to anxious on {info['clip']}: sequence {labels}"
