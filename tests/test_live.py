"""The live per-frame path (facekit.live) and the panel's kernel side (facekit.widget), on real photos.

Real faces: the scikit-image astronaut (always there) and JAFFE from
``../shared/datasets`` (skipped with a reason where absent).  The models are small
ones trained here in a few seconds (on the synthetic demo data, or on JAFFE).
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facekit import demo, live
from facekit.checkpoint import features, load, normalization_meta, save
from facekit.extract import PhotoError
from facekit.extract import extract, landmarks_from_rgb
from facekit.model import ModelConfig
from facekit.normalize import NormalizeSettings, normalize
from facekit.train import TrainConfig, fit

SETTINGS = NormalizeSettings("kit", align=True)


def _fit(x, y, n_classes, epochs=20, hidden=64):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on a busy 2-core machine more threads only wait for each other
    try:
        model, _ = fit(x, y, None, None, ModelConfig(n_features=x.shape[1], n_classes=n_classes, hidden=hidden,
                                                     blocks=1), TrainConfig(epochs=epochs, seed=0))
    finally:
        torch.set_num_threads(threads)
    return model


@pytest.fixture(scope="module")
def synthetic():
    from facekit.synthetic import make_dataset

    table, landmarks = make_dataset(n_people=30, photos_per_emotion=4, seed=0)
    shapes = normalize(landmarks, SETTINGS)
    return table, shapes


@pytest.fixture(scope="module")
def plain(synthetic, tmp_path_factory):
    """A small binary model (neutral, anxious) trained on the synthetic demo data."""
    table, shapes = synthetic
    y = (table["emotion"] == "불안").to_numpy().astype(int)
    path = save(tmp_path_factory.mktemp("ckpt") / "plain.pt", _fit(features(shapes), y, 2), {
        "classes": ["neutral", "anxious"], "task": "binary", "features": "xyz",
        "normalization": normalization_meta(SETTINGS)})
    return load(path)


@pytest.fixture(scope="module")
def personal(synthetic, tmp_path_factory):
    """A personal-neutral model: trained on each face minus its person's mean neutral face."""
    table, shapes = synthetic
    people = table["person"].to_numpy()
    neutral = (table["emotion"] == "중립").to_numpy()
    deltas = np.empty_like(shapes)
    for person in np.unique(people):
        rows = people == person
        deltas[rows] = shapes[rows] - shapes[rows & neutral].mean(axis=0)
    y = (~neutral).astype(int)
    path = save(tmp_path_factory.mktemp("ckpt") / "personal.pt", _fit(features(deltas), y, 2), {
        "classes": ["neutral", "anxious"], "task": "binary", "features": "xyz", "calibration": "personal-neutral",
        "normalization": normalization_meta(SETTINGS), "threshold": 0.5})
    return load(path)


@pytest.fixture(scope="module")
def frames():
    """12 webcam-like 640×480 frames of the astronaut moving slowly (a real photo)."""
    return live.demo_frames(12)


@pytest.fixture(scope="module")
def blank():
    return np.full((480, 640, 3), 96, np.uint8)


def jpeg(rgb, quality=80) -> bytes:
    return live.encode_jpeg(rgb, quality)


def letterbox(rgb: np.ndarray) -> np.ndarray:
    im = Image.fromarray(rgb).convert("RGB")
    im = im.resize((round(im.width * 480 / im.height), 480), Image.LANCZOS)
    canvas = Image.new("RGB", (640, 480), (96, 96, 110))
    canvas.paste(im, ((640 - im.width) // 2, 0))
    return np.asarray(canvas)


# ----------------------------------------------------------------------------- one frame

def test_a_real_face_is_found_and_scored(plain, frames):
    pipe = live.LivePipeline(plain)
    result = pipe.process(jpeg(frames[0]), t=0.0)
    assert result.state == "ok", result.message
    assert result.landmarks.shape == (478, 3) and result.landmarks.dtype == np.float32
    assert (result.width, result.height) == (640, 480)
    xy = result.landmarks[:, :2]
    assert xy.min() >= 0 and xy[:, 0].max() <= 640 and xy[:, 1].max() <= 480  # pixel units, inside the frame
    assert 0 <= result.raw_score <= 100 and 0 <= result.score <= 100
    assert result.label in plain.classes and result.model == "plain"
    assert set(result.timings) == set(live.STAGES) and result.timings["facemesh"] > 0
    # The score is the checkpoint's own normalisation and model on these pixel-unit landmarks.
    expected = plain.predict_landmarks(result.landmarks, 640, 480)[plain.anxious_index] * 100
    assert result.raw_score == pytest.approx(float(expected), abs=1e-4)
    pts = result.points()
    assert pts.shape == (478, 2) and 0 <= pts.min() and pts.max() <= 1


def test_live_landmarks_match_the_training_extraction(frames):
    """The live path's FaceMesh is the training extraction's: identical in static mode, and within
    FaceMesh's own jitter in tracking mode (there the crop comes from the previous frame's landmarks)."""
    static = live.LivePipeline(None, settings=live.LiveSettings(tracking=False))
    tracking = live.LivePipeline(None)
    differences = []
    for i, rgb in enumerate(frames):
        train = landmarks_from_rgb(rgb)
        np.testing.assert_array_equal(static.process(rgb, t=i).landmarks, train)
        got = tracking.process(rgb, t=i / 10)
        assert got.state == "no_model" and got.landmarks is not None
        a, b = normalize(got.landmarks, SETTINGS), normalize(train, SETTINGS)
        differences.append(float(np.sqrt(((a - b) ** 2).sum(-1).mean())))
    assert np.median(differences) < 0.03 and max(differences) < 0.06, differences  # kit units; jitter ≈ 0.01


def test_frames_in_every_layout_give_the_same_landmarks(frames):
    """JPEG bytes, RGB, BGR and RGBA arrays of one frame → the same face (decoding differs only by JPEG loss)."""
    rgb = frames[3]
    got = {}
    for name, frame, bgr in [("rgb", rgb, False), ("bgr", np.ascontiguousarray(rgb[:, :, ::-1]), True),
                             ("rgba", np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), False),
                             ("png", _png(rgb), False)]:
        got[name] = live.LivePipeline(None, settings=live.LiveSettings(tracking=False)).process(frame, 0, bgr=bgr)
    for name, result in got.items():
        assert result.landmarks is not None, name
        assert np.abs(result.landmarks - got["rgb"].landmarks).max() < 0.5, name


def _png(rgb) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def test_jaffe_faces_are_found_and_scored(plain, jaffe_root: Path):
    from facekit.sources import index_preset

    index = index_preset("jaffe", jaffe_root)
    rows = index.sort_values("member").groupby("person").head(1)  # one photo of each person
    pipe = live.LivePipeline(plain, settings=live.LiveSettings(tracking=False))
    for i, row in enumerate(rows.itertuples()):
        data = (Path(row.container) / row.member).read_bytes()  # TIFF: the training decoder's path
        result = pipe.process(data, t=float(i))
        assert result.state == "ok", f"{row.member}: {result.message}"
        assert 0 <= result.raw_score <= 100
        framed = pipe.process(jpeg(letterbox(np.asarray(Image.open(Path(row.container) / row.member).convert("RGB")))),
                              t=i + 0.5)
        assert framed.state == "ok", f"{row.member} in a 640×480 frame: {framed.message}"


def test_no_face_gives_the_no_face_state_and_holds_the_score(plain, frames, blank):
    pipe = live.LivePipeline(plain)
    first = pipe.process(jpeg(frames[0]), t=0.0)
    empty = pipe.process(jpeg(blank), t=0.1)
    assert empty.state == "no_face" and "no face" in empty.message
    assert empty.landmarks is None and empty.raw_score is None and empty.points().shape == (0, 2)
    assert empty.score == pytest.approx(first.score)  # the smoothed score is held, not reset
    assert pipe.process(jpeg(frames[1]), t=0.2).state == "ok"
    assert pipe.counts["no_face"] == 1


def test_a_corrupt_frame_is_reported_and_the_stream_goes_on(plain, frames):
    pipe = live.LivePipeline(plain)
    good = jpeg(frames[0])
    before = pipe.process(good, t=0.0)
    for i, bad in enumerate([good[: len(good) // 2], b"\xff\xd8 not a jpeg \xff\xd9", b"hello", b""]):
        result = pipe.process(bad, t=0.1 + i / 10)
        assert result.state == "corrupt_frame", bad[:12]
        assert "could not be decoded" in result.message and "goes on" in result.message
        assert result.landmarks is None and result.score == pytest.approx(before.score)
    after = pipe.process(jpeg(frames[1]), t=1.0)
    assert after.state == "ok" and 0 <= after.score <= 100
    assert pipe.counts == {"ok": 2, "corrupt_frame": 4}


def test_two_faces_the_largest_is_scored_and_named(plain):
    canvas = Image.new("RGB", (640, 480), (96, 96, 110))
    canvas.paste(Image.fromarray(demo.portrait(320)), (10, 80))     # large, on the left
    canvas.paste(Image.fromarray(demo.portrait(220)), (400, 120))   # smaller, on the right
    result = live.LivePipeline(plain).process(np.asarray(canvas), t=0.0)
    assert result.state == "multiple_faces" and result.n_faces == 2
    assert "largest" in result.message and "2 faces" in result.message
    x0, y0, x1, y1 = live._box(result.landmarks)
    assert x1 < 340 and (x1 - x0) > 150  # the face inside the large portrait
    assert len(result.others) == 1 and result.others[0][0] > 390
    assert 0 <= result.score <= 100  # scored all the same
    message = result.to_message()
    assert all(0 <= v <= 1 for v in message["others"][0])  # boxes go to the browser as fractions


def test_without_a_model_landmarks_are_still_shown(frames):
    result = live.LivePipeline(None).process(jpeg(frames[0]), t=0.0)
    assert result.state == "no_model" and result.landmarks is not None and result.score is None
    assert result.model is None


# ----------------------------------------------------------------------------- smoothing

def test_smoothing_follows_the_time_constant_whatever_the_frame_rate():
    for fps in (5, 30, 7.3):
        s = live.Smoother(time_constant_s=2.0)
        s.update(np.array([0.0]), 0.0)
        n = round(2.0 * fps)
        for k in range(1, n + 1):
            value = s.update(np.array([1.0]), k / fps)
        # after one time constant a step is covered to 1 − 1/e, at any frame rate
        assert value[0] == pytest.approx(1 - math.exp(-n / fps / 2.0), abs=1e-9)
        assert value[0] == pytest.approx(1 - math.exp(-1), abs=0.05)
    s = live.Smoother(0.0)  # no smoothing
    s.update(np.array([0.2]), 0.0)
    assert s.update(np.array([0.9]), 0.01)[0] == pytest.approx(0.9)
    s = live.Smoother(1.0)  # a timestamp going back (a restarted video) starts over
    s.update(np.array([0.2]), 5.0)
    assert s.update(np.array([0.9]), 1.0)[0] == pytest.approx(0.9)


def test_the_pipeline_smooths_real_scores_by_frame_time(plain, frames):
    tau = 0.5
    stamps = np.cumsum([0, 0.05, 0.4, 0.033, 0.2, 1.5, 0.1, 0.1, 0.7, 0.05, 0.3, 0.02])
    pipe = live.LivePipeline(plain, settings=live.LiveSettings(smoothing_s=tau))
    results = [pipe.process(jpeg(f), t=float(t)) for f, t in zip(frames, stamps)]
    assert all(r.state == "ok" for r in results)
    expected = results[0].raw_score
    for prev, cur in zip(results, results[1:]):
        alpha = 1 - math.exp(-(cur.t - prev.t) / tau)
        expected = expected + alpha * (cur.raw_score - expected)
        assert cur.score == pytest.approx(expected, abs=1e-6)
    raw = [r.raw_score for r in results]
    assert len(set(np.round(raw, 6))) > 1  # real frames, really different scores
    pipe.set_smoothing(0)
    last = pipe.process(jpeg(frames[0]), t=float(stamps[-1] + 0.1))
    assert last.score == pytest.approx(last.raw_score)


# ----------------------------------------------------------------------------- calibration

def test_calibration_uses_only_the_calibration_frames(plain, personal, frames, blank):
    pipe = live.LivePipeline(plain, personal, live.LiveSettings(calibrate_s=1.0, min_calibration_frames=3))
    before = [pipe.process(jpeg(frames[i]), t=0.1 * i) for i in range(3)]      # not part of calibration
    assert all(r.model == "plain" for r in before) and pipe.calibration == "off"
    assert "1 s" in pipe.calibrate(1.0)
    # The window opens at the first frame after Calibrate (t = 2.0) and lasts 1 s of frame time.
    window = [pipe.process(jpeg(frames[3 + i]), t=2.0 + 0.2 * i) for i in range(5)]  # t = 2.0 … 2.8
    assert all(r.calibration == "collecting" for r in window) and pipe.reference is None
    assert all(r.model == "plain" and r.score is not None for r in window)  # still scored meanwhile
    gap = pipe.process(jpeg(blank), t=2.9)                                     # in the window, no face
    assert gap.state == "no_face"
    after = pipe.process(jpeg(frames[9]), t=3.05)                              # closes the window
    assert pipe.calibration == "on" and after.calibration == "on" and after.model == "personal-neutral"
    assert "5 frames" in pipe.calibration_message
    expected = np.mean([personal.normalize(r.landmarks[None], 640, 480)[0] for r in window], axis=0)
    np.testing.assert_allclose(pipe.reference, expected, atol=1e-6)
    # From now on the personal model sees the face relative to that reference.
    want = personal.predict_landmarks(after.landmarks, 640, 480, reference=pipe.reference)[1] * 100
    assert after.raw_score == pytest.approx(float(want), abs=1e-4)
    assert after.score == pytest.approx(after.raw_score)  # smoothing restarts with the new model
    assert "plain" in pipe.reset() and pipe.reference is None
    assert pipe.process(jpeg(frames[10]), t=3.2).model == "plain"


def test_calibrate_without_a_personal_model_says_so(plain, frames):
    pipe = live.LivePipeline(plain)
    assert pipe.calibration == "unavailable"
    message = pipe.calibrate()
    assert "personal-neutral" in message and "plain model stays" in message
    result = pipe.process(jpeg(frames[0]), t=0.0)
    assert result.calibration == "unavailable" and result.model == "plain" and pipe.reference is None


def test_a_personal_model_alone_waits_for_calibration(personal, frames):
    pipe = live.LivePipeline(personal, settings=live.LiveSettings(calibrate_s=0.5, min_calibration_frames=2))
    assert pipe.plain is None and pipe.personal is personal
    first = pipe.process(jpeg(frames[0]), t=0.0)
    assert first.state == "needs_calibration" and first.score is None and "Calibrate" in first.message
    pipe.calibrate()
    during = [pipe.process(jpeg(frames[i]), t=1 + 0.2 * i) for i in range(1, 4)]
    assert all(r.state == "needs_calibration" and "hold a neutral face" in r.message for r in during)
    done = pipe.process(jpeg(frames[5]), t=2.0)
    assert done.state == "ok" and done.model == "personal-neutral" and 0 <= done.score <= 100


def test_calibration_without_a_face_fails_clearly(plain, personal, blank):
    pipe = live.LivePipeline(plain, personal, live.LiveSettings(calibrate_s=0.5))
    pipe.calibrate()
    for i in range(4):
        pipe.process(jpeg(blank), t=0.2 * i)
    assert pipe.calibration == "failed" and "only 0 frames with a face" in pipe.calibration_message
    assert pipe.reference is None


def test_a_seven_class_model_reports_the_top_emotions(jaffe_root: Path, tmp_path: Path):
    from facekit.labels import EMOTIONS, ClassSet
    from facekit.sources import index_preset

    index = index_preset("jaffe", jaffe_root)
    table, landmarks = extract(index, cache=tmp_path / "cache", workers=1, progress=False)
    ok = (table["status"] == "ok").to_numpy()
    classes = ClassSet.all()
    y = classes.encode(table.loc[ok, "emotion"])
    keep = y >= 0
    x = features(normalize(landmarks[ok][keep], SETTINGS))
    path = save(tmp_path / "seven.pt", _fit(x, y[keep], 7, epochs=30), {
        "classes": list(EMOTIONS.values()), "task": "7class", "features": "xyz",
        "normalization": normalization_meta(SETTINGS)})
    predictor = load(path)
    photo = np.asarray(Image.open(Path(table.loc[ok].iloc[0]["container"]) / table.loc[ok].iloc[0]["member"])
                       .convert("RGB"))
    result = live.LivePipeline(predictor, settings=live.LiveSettings(smoothing_s=0)).process(letterbox(photo), 0.0)
    assert result.state == "ok"
    assert len(result.top) == 3 and result.top[0][0] == result.label
    assert [p for _, p in result.top] == sorted((p for _, p in result.top), reverse=True)
    assert result.raw_score == pytest.approx(float(result.probabilities[predictor.anxious_index]) * 100)
    assert result.smoothed.shape == (7,) and result.smoothed.sum() == pytest.approx(1, abs=1e-4)


# ----------------------------------------------------------------------------- sources

def test_a_video_file_is_read_frame_by_frame_with_its_timestamps(plain, frames, tmp_path: Path):
    path = live.write_video(tmp_path / "clip.avi", frames[:6] + [np.full_like(frames[0], 96)] * 2, fps=10)
    seen = []
    summary = live.run(live.VideoFileSource(path), live.LivePipeline(plain),
                       on_result=lambda r, f: seen.append((r.state, f.t)))
    assert [t for _, t in seen] == pytest.approx([i / 10 for i in range(8)])
    assert [s for s, _ in seen] == ["ok"] * 6 + ["no_face"] * 2
    assert summary["frames"] == 8 and summary["states"] == {"ok": 6, "no_face": 2}
    assert set(summary["latency_ms"]) == set(live.STAGES) | {"total"}


def test_a_folder_of_images_with_a_corrupt_file(plain, frames, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(frames[0]).save(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(jpeg(frames[1])[:3000])  # cut off
    Image.fromarray(frames[2]).save(folder / "c.png")
    source = live.open_source(folder)
    assert isinstance(source, live.FolderSource)
    states, messages = [], []
    live.run(source, live.LivePipeline(plain),
             on_result=lambda r, f: (states.append((r.state, f.t)), messages.append(r.message)))
    assert states == [("ok", 0.0), ("corrupt_frame", 1.0), ("ok", 2.0)]
    assert messages[1].startswith(f"{folder / 'b.jpg'}: frame 1 could not be decoded"), messages[1]


def test_stop_ends_a_source_and_releases_it(plain, frames, tmp_path: Path):
    path = live.write_video(tmp_path / "clip.avi", frames, fps=10)
    source = live.VideoFileSource(path, realtime=True, loop=True)  # would run for ever
    stop = threading.Event()
    seen = []

    def on_result(result, frame):
        seen.append(result.state)
        if len(seen) == 3:
            stop.set()

    started = time.monotonic()
    live.run(source, live.LivePipeline(plain), on_result=on_result, stop=stop)
    assert len(seen) == 3 and time.monotonic() - started < 5  # paced at 10 fps, stopped after 3


def test_open_source_understands_every_spec(tmp_path: Path):
    assert live.open_source(None) is None and live.open_source("browser") is None
    cam = live.open_source("camera:3")
    assert isinstance(cam, live.CameraSource) and cam.index == 3
    assert isinstance(live.open_source("demo-video"), live.VideoFileSource)
    with pytest.raises(live.SourceError, match="neither"):
        live.open_source(tmp_path / "missing.mp4")


def test_a_missing_camera_says_no_camera():
    with pytest.raises(live.SourceError) as err:
        next(live.CameraSource(index=97).frames())
    assert err.value.state == "no_camera" and "no camera at index 97" in err.value.message


# ----------------------------------------------------------------------------- the panel, kernel side

class Sent(list):
    def __call__(self, content, buffers=None):
        self.append((content, buffers or []))


def test_the_panel_acks_every_browser_frame(plain, frames):
    from facekit.widget import LiveWidget

    panel = LiveWidget(plain)
    panel.send = sent = Sent()
    assert panel.source == "browser" and panel.calibration == "unavailable"
    panel._on_msg(panel, {"type": "start"}, [])
    assert panel.running
    for i in range(4):
        panel._on_msg(panel, {"type": "frame", "id": f"v:{i}", "t": 1000 + 66.7 * i, "fps": 15.0},
                      [memoryview(jpeg(frames[i]))])
    panel._on_msg(panel, {"type": "frame", "id": "v:bad", "t": 1300.0}, [memoryview(b"\xff\xd8broken")])
    panel._on_msg(panel, {"type": "frame", "id": "v:5", "t": 1400.0}, [memoryview(jpeg(frames[5]))])
    acks = [(c, b) for c, b in sent if c.get("type") == "ack"]
    assert [c["id"] for c, _ in acks] == ["v:0", "v:1", "v:2", "v:3", "v:bad", "v:5"]
    assert acks[4][0]["state"] == "corrupt_frame" and acks[4][1] == [b""]
    for content, buffers in acks[:4] + acks[5:]:
        assert content["state"] == "ok" and 0 <= content["score"] <= 100 and content["label"] in plain.classes
        assert len(buffers[0]) == 478 * 2 * 4  # the landmarks to draw, float32 x/W, y/H
        assert set(content["timings"]) == set(live.STAGES)
    assert acks[-1][0]["frames"] == 6 and acks[-1][0]["faces"] == 5
    assert acks[1][0]["t"] == pytest.approx(1.0667)  # the browser's frame time, in seconds
    panel._on_msg(panel, {"type": "calibrate"}, [])
    assert panel.calibration == "unavailable" and "personal-neutral" in panel.calibration_message
    panel._on_msg(panel, {"type": "stop"}, [])
    assert not panel.running and panel.state == "stopped" and panel.frames == 6
    assert ({"type": "stop-camera"}, []) in sent
    panel._on_msg(panel, {"type": "camera", "state": "permission_denied", "message": "camera permission denied"}, [])
    assert panel.state == "permission_denied" and panel.message == "camera permission denied"


def test_rgb_frames_score_exactly_as_the_same_pixels_sent_as_an_array(plain, frames):
    """The browser's ``rgb`` frames (packed rows, no JPEG) go through the same path: same landmarks and scores
    as the decoded array, nothing decoded, and a buffer of the wrong size is a corrupt frame, not a crash."""
    from facekit.widget import LiveWidget

    rgbs = [live.decode_frame(jpeg(f)) for f in frames[:4]]
    reference = live.LivePipeline(plain)
    expected = [reference.process(rgb, t=i / 15) for i, rgb in enumerate(rgbs)]
    panel = LiveWidget(plain)
    assert panel.frame_format == "auto"  # the default; the browser sends rgb only when it is set to "rgb"
    panel.send = sent = Sent()
    panel._on_msg(panel, {"type": "start"}, [])
    for i, rgb in enumerate(rgbs):
        panel._on_msg(panel, {"type": "frame", "id": str(i), "t": 1000 * i / 15, "format": "rgb",
                              "width": rgb.shape[1], "height": rgb.shape[0]}, [memoryview(rgb.tobytes())])
    panel._on_msg(panel, {"type": "frame", "id": "short", "t": 400.0, "format": "rgb", "width": 640, "height": 480},
                  [memoryview(rgbs[0].tobytes()[:-3])])
    acks = [(c, b) for c, b in sent if c.get("type") == "ack"]
    assert [c["id"] for c, _ in acks] == ["0", "1", "2", "3", "short"]
    for (content, buffers), want in zip(acks, expected):
        assert content["state"] == "ok" and want.state == "ok"
        assert content["score"] == pytest.approx(want.score, abs=0.01)  # the ack rounds to 2 decimals
        assert np.array_equal(np.frombuffer(buffers[0], np.float32), want.points().ravel())
        assert content["timings"]["decode"] < 5  # a view of the buffer, nothing decoded
    assert acks[-1][0]["state"] == "corrupt_frame"
    assert "921,600 bytes, got 921,597" in panel.pipeline.last.message
    with pytest.raises(PhotoError, match="needs 12 bytes, got 11"):
        live.rgb_frame(b"x" * 11, 2, 2)


# Standard colours as BT.601 / BT.709 encode them (limited: Y 16–235, U/V 16–240; full: 0–255): (Y, U, V) → RGB.
KNOWN_YUV = [
    (None, False, (235, 128, 128), (255, 255, 255)), (None, False, (16, 128, 128), (0, 0, 0)),
    (None, False, (81, 90, 240), (255, 0, 0)), ("smpte170m", False, (145, 54, 34), (0, 255, 0)),
    ("bt470bg", False, (41, 240, 110), (0, 0, 255)), ("bt709", False, (63, 102, 240), (255, 0, 0)),
    ("bt709", False, (173, 42, 26), (0, 255, 0)), ("bt709", False, (32, 240, 118), (0, 0, 255)),
    (None, True, (76, 85, 255), (255, 0, 0)), ("bt709", True, (54, 99, 255), (255, 0, 0)),
    ("bt709", True, (255, 128, 128), (255, 255, 255)),
]


@pytest.mark.parametrize("layout", live.YUV_LAYOUTS)
@pytest.mark.parametrize("matrix, full_range, yuv, rgb", KNOWN_YUV)
def test_yuv_frames_convert_by_their_colour_space(layout, matrix, full_range, yuv, rgb):
    """The browser's ``yuv`` frames: the standards' own colours come out right, for both layouts."""
    y, u, v = (np.full((2, 4), c, np.uint8) for c in yuv)  # a 4×2 frame of one colour
    chroma = np.stack([u[:1, :2], v[:1, :2]], -1)
    tail = chroma.tobytes() if layout == "NV12" else chroma[..., 0].tobytes() + chroma[..., 1].tobytes()
    out = live.YUVFrame(y.tobytes() + tail, 4, 2, layout, matrix, full_range).to_rgb()
    assert out.shape == (2, 4, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.array(rgb)).max() <= 2, (out[0, 0], rgb)


def test_yuv_frames_round_trip_a_real_photo_and_refuse_bad_buffers(frames):
    rgb = live.decode_frame(jpeg(frames[0]))
    for layout in live.YUV_LAYOUTS:
        for matrix, full_range in ((None, False), ("bt709", False), ("bt470bg", True), ("bt709", True)):
            back = live.yuv_from_rgb(rgb, layout, matrix, full_range).to_rgb()
            err = np.abs(back.astype(int) - rgb)
            assert err.mean() < 2 and np.percentile(err, 99) <= 12, (layout, matrix, full_range)  # chroma is 4:2:0
    # OpenCV's own I420 path (BT.601, limited) and the standards' formulas agree to one level
    frame = live.yuv_from_rgb(rgb)
    general = live.YUVFrame(frame.data, frame.width, frame.height, "I420", "bt709", False).to_rgb()
    assert np.abs(general.astype(int) - frame.to_rgb()).mean() > 0.5  # another matrix is another colour
    with pytest.raises(PhotoError, match="needs 12 bytes, got 11"):
        live.YUVFrame(b"x" * 11, 4, 2).to_rgb()
    with pytest.raises(PhotoError, match="even sides"):
        live.YUVFrame(b"x" * 22, 5, 3).to_rgb()
    with pytest.raises(PhotoError, match="'bt2020-ncl' is not one the kit converts"):
        live.YUVFrame(b"x" * 12, 4, 2, matrix="bt2020-ncl").to_rgb()
    with pytest.raises(PhotoError, match="layout 'YUY2'"):
        live.YUVFrame(b"x" * 12, 4, 2, "YUY2").to_rgb()


def test_yuv_frames_score_as_their_pixels(plain, frames):
    """The browser's ``yuv`` frames (the default from a localhost page) through the panel: the same landmarks
    and scores as the converted pixels sent as an array, converted in the decode stage; a short buffer is a
    corrupt frame and the stream goes on."""
    from facekit.widget import LiveWidget

    sent_frames = [live.yuv_from_rgb(live.decode_frame(jpeg(f)), layout)
                   for f, layout in zip(frames[:4], ("I420", "NV12", "I420", "NV12"))]
    reference = live.LivePipeline(plain)
    expected = [reference.process(f.to_rgb(), t=i / 15) for i, f in enumerate(sent_frames)]
    panel = LiveWidget(plain)
    panel.send = sent = Sent()
    panel._on_msg(panel, {"type": "start"}, [])
    for i, f in enumerate(sent_frames):
        panel._on_msg(panel, {"type": "frame", "id": str(i), "t": 1000 * i / 15, "format": "yuv", "width": f.width,
                              "height": f.height, "layout": f.layout, "matrix": None, "full_range": None},
                      [memoryview(f.data)])
    panel._on_msg(panel, {"type": "frame", "id": "short", "t": 400.0, "format": "yuv", "width": 640, "height": 480,
                          "layout": "I420", "matrix": None, "full_range": None}, [memoryview(sent_frames[0].data[:-1])])
    acks = [(c, b) for c, b in sent if c.get("type") == "ack"]
    assert [c["id"] for c, _ in acks] == ["0", "1", "2", "3", "short"]
    for (content, buffers), want in zip(acks, expected):
        assert content["state"] == "ok" and want.state == "ok"
        assert content["score"] == pytest.approx(want.score, abs=0.01)
        assert np.array_equal(np.frombuffer(buffers[0], np.float32), want.points().ravel())
        assert content["timings"]["decode"] > 0  # converted in the path
    assert acks[-1][0]["state"] == "corrupt_frame"
    assert "needs 460,800 bytes, got 460,799" in panel.pipeline.last.message


def test_the_panel_calibrates_with_a_personal_model(plain, personal, frames):
    from facekit.widget import LiveWidget

    panel = LiveWidget(plain, personal=personal,
                       settings=live.LiveSettings(calibrate_s=0.3, min_calibration_frames=2))
    panel.send = Sent()
    assert panel.calibration == "off"
    panel._on_msg(panel, {"type": "calibrate"}, [])
    assert panel.calibration == "collecting"
    for i in range(6):
        panel._on_msg(panel, {"type": "frame", "id": str(i), "t": 100.0 * i}, [memoryview(jpeg(frames[i]))])
    panel._sync()
    assert panel.calibration == "on" and panel.pipeline.active_kind == "personal-neutral"
    panel._on_msg(panel, {"type": "reset"}, [])
    assert panel.calibration == "off" and panel.pipeline.active_kind == "plain" and panel.score is None


def test_a_kernel_source_runs_in_the_background(plain, frames, tmp_path: Path):
    from facekit.widget import LiveWidget

    path = live.write_video(tmp_path / "clip.avi", frames, fps=8)
    panel = LiveWidget(plain, source=path)
    panel.send = sent = Sent()
    assert panel.source == "video file clip.avi"
    started = time.monotonic()
    panel.play()
    assert panel.running and time.monotonic() - started < 0.5  # returns at once: the kernel stays free
    summary = panel.wait(timeout=120)
    assert not panel.running and panel.state == "finished" and "12 frames" in panel.message
    assert summary["frames"] == 12 and summary["states"] == {"ok": 12}
    assert panel.frames == 12 and panel.faces == 12 and 0 <= panel.score <= 100 and panel.label
    results = [(c, b) for c, b in sent if c.get("type") == "result"]
    assert results and all(len(b[0]) == 478 * 2 * 4 for _, b in results)
    assert results[0][1][1][:2] == b"\xff\xd8"  # a JPEG preview of the frame for the panel


def test_stop_releases_a_kernel_camera_like_source(plain, frames, tmp_path: Path):
    from facekit.widget import LiveWidget

    path = live.write_video(tmp_path / "clip.avi", frames, fps=10)
    panel = LiveWidget(plain, source=live.VideoFileSource(path, realtime=True, loop=True))
    panel.send = Sent()
    panel._on_msg(panel, {"type": "start"}, [])  # the Start button
    deadline = time.monotonic() + 30
    while panel.pipeline.frames < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    panel._on_msg(panel, {"type": "stop"}, [])   # the Stop button
    assert not panel._thread.is_alive() and not panel.running and panel.state == "stopped"
    frames_at_stop = panel.pipeline.frames
    time.sleep(0.3)
    assert panel.pipeline.frames == frames_at_stop


def test_benchmark_reports_the_breakdown(plain):
    bench = live.benchmark(plain, n_frames=8, repeats=1)
    assert bench["frames"] == 8 and bench["size"] == "640x480" and bench["faces_found"] == 8
    assert set(bench["stages_ms"]) == set(live.STAGES)
    assert bench["facemesh_alone_ms"] > 0 and bench["pipeline_ms"] > 0 and bench["ratio"] > 0
    # the lower reference: the same graph driven as find_faces drives it (mediapipe is pinned, so it is there)
    assert bench["facemesh_graph_ms"] > 0 and bench["ratio_vs_graph"] > 0
    rgb = live.benchmark(plain, n_frames=8, repeats=1, frame_format="rgb")
    assert rgb["frame_format"] == "rgb" and rgb["faces_found"] == 8 and rgb["ratio"] > 0
    assert rgb["facemesh_graph_ms"] > 0 and rgb["ratio_vs_graph"] > 0
    assert rgb["stages_ms"]["decode"] < bench["stages_ms"]["decode"]  # a view of the bytes against a JPEG decode
    yuv = live.benchmark(plain, n_frames=8, repeats=1, frame_format="yuv")
    assert yuv["frame_format"] == "yuv" and yuv["faces_found"] == 8 and yuv["ratio"] > 0
    assert yuv["stages_ms"]["decode"] < bench["stages_ms"]["decode"]  # a colour conversion against a JPEG decode
