"""The inference server (facekit.server), run as a user runs it: ``python -m facekit serve`` in its own process.

Everything talks HTTP to a real server on a loopback port (httpx, and raw
sockets where a client library would not send what is being tested): every
endpoint, every kind of bad input (a 4xx with a message, never a 500), the body
and photo limits, CORS, the Host check, a bad weights file stopping start-up, the
same photo giving the same answer as the notebook's in-process path, a load test,
a fuzz test of ``/predict/landmarks``, and the web page in headless Chromium with
a fake camera playing real faces.

Real photos: the scikit-image astronaut (always there) and JAFFE from
``../shared/datasets`` where present (skipped with a reason where absent).
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from builders import CHROMIUM, require_browser_tools

from facekit import demo, live
from facekit.checkpoint import load
from facekit.paths import PROJECT_ROOT, shared_datasets
from facekit.server import load_test, running_server

httpx = pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")
pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi, uvicorn, python-multipart) is not installed")

WEIGHTS = PROJECT_ROOT / "weights" / "demo_binary.pt"
PERSONAL = PROJECT_ROOT / "weights" / "demo_binary_personal.pt"
RESULTS = PROJECT_ROOT / "test-results"
MAX_BYTES = 2_000_000
MAX_PIXELS = 4_000_000


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    return live.encode_jpeg(rgb, quality)


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def letterbox(rgb: np.ndarray, size=(640, 480)) -> np.ndarray:
    """A photo scaled to the frame's height, centred on a grey 640×480 canvas (a webcam's frame)."""
    w, h = size
    im = Image.fromarray(rgb).convert("RGB")
    im = im.resize((max(1, round(im.width * h / im.height)), h), Image.LANCZOS)
    canvas = Image.new("RGB", size, (96, 96, 110))
    canvas.paste(im, ((w - im.width) // 2, 0))
    return np.asarray(canvas)


def two_faces() -> np.ndarray:
    canvas = Image.new("RGB", (640, 480), (96, 96, 110))
    canvas.paste(Image.fromarray(demo.portrait(320)), (10, 80))     # large, on the left
    canvas.paste(Image.fromarray(demo.portrait(220)), (400, 120))   # smaller, on the right
    return np.asarray(canvas)


def empty_room() -> np.ndarray:
    return np.full((480, 640, 3), 96, np.uint8)


def jaffe_photos(root: Path, n: int = 4) -> list[np.ndarray]:
    """The first ``n`` JAFFE photos (256×256 grey TIFFs) as RGB arrays."""
    files = sorted(root.glob("*.tiff"))[:n]
    assert files, f"no .tiff photos in {root}"
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


# ----------------------------------------------------------------------------- the servers

@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="module")
def url(tmp_path_factory, server_log):
    """The server as a user starts it (no --weights: the default checkpoint from FACEKIT_WEIGHTS), tight limits."""
    folder = tmp_path_factory.mktemp("weights")
    shutil.copy(WEIGHTS, folder / "demo_binary.pt")
    env = dict(os.environ, FACEKIT_WEIGHTS=str(folder))
    with running_server(args=["--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS), "--threads", "2"],
                        log=server_log, env=env) as base:
        yield base


@pytest.fixture(scope="module")
def personal_url():
    """A personal-neutral checkpoint, with CORS on for one origin."""
    with running_server(PERSONAL, args=["--cors-origin", "http://allowed.example", "--threads", "1"]) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return jpeg(demo.portrait())


def predict(client, data: bytes, kind: str = "image/jpeg", **params):
    return client.post("/predict/image", files={"file": ("photo", data, kind)}, params=params)


def assert_refused(r, status: int, *words: str) -> None:
    """A 4xx with a JSON ``detail`` that says what is wrong (each of ``words`` appears in it)."""
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail, r.text
    for word in words:
        assert word.lower() in detail.lower(), (word, detail)


# ----------------------------------------------------------------------------- endpoints

def test_health_model_and_defaults(client, server_log):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] and health["weights"] == "demo_binary.pt"
    info = client.get("/model").json()
    reference = load(WEIGHTS).describe()
    for key in ("task", "classes", "normalization", "features", "training_data", "threshold"):
        assert info[key] == reference[key], key
    assert info["weights"].endswith("demo_binary.pt") and not info["needs_reference"]
    assert info["score_class"] == "anxious" and info["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}
    log = server_log.read_text()
    assert "http://127.0.0.1:" in log and "CORS off" in log  # loopback and no CORS unless told


def test_command_line_defaults():
    import argparse

    from facekit.server import DEFAULT_MAX_BYTES, add_arguments, settings_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from(parser.parse_args([]))
    assert settings.host == "127.0.0.1" and settings.port == 8001 and settings.cors_origins == ()
    assert settings.max_bytes == DEFAULT_MAX_BYTES and settings.weights is None


def test_predict_image_every_way_gives_one_answer(client, astronaut):
    rgb = demo.portrait()
    first = predict(client, astronaut, landmarks="true", shape="true").json()
    assert first["state"] == "ok" and first["face"] and first["n_faces"] == 1
    assert first["label"] in ("neutral", "anxious") and 0 <= first["score"] <= 100
    assert abs(sum(first["probabilities"].values()) - 1) < 1e-4
    x0, y0, x1, y1 = first["box"]
    assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 480 and x1 - x0 > 150  # the face fills the portrait
    assert np.array(first["landmarks"]).shape == (478, 3) and len(first["shape"]) == 1434
    b64 = base64.b64encode(astronaut).decode()
    answers = [
        client.post("/predict/image", content=astronaut, headers={"Content-Type": "image/jpeg"}),
        client.post("/predict/image", json={"image": b64}),
        client.post("/predict/image", json={"image": "data:image/jpeg;base64," + b64}),
        client.post("/predict/image", json={"image": "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["probabilities"] == first["probabilities"]
    as_png = predict(client, png(rgb), "image/png").json()  # lossless: a slightly different picture
    assert as_png["state"] == "ok" and abs(as_png["score"] - first["score"]) < 15


def test_same_answer_as_the_notebook_path(client, astronaut):
    """/predict/image and /predict/landmarks agree with LivePipeline and Predictor run in this process."""
    predictor = load(WEIGHTS)
    answer = predict(client, astronaut, landmarks="true", shape="true").json()
    for settings in (live.LiveSettings(tracking=False), live.LiveSettings()):  # static, and notebook 05's own
        here = live.LivePipeline(predictor, settings=settings).process(astronaut, t=0.0)
        assert here.state == answer["state"] and here.label == answer["label"]
        assert here.raw_score == pytest.approx(answer["score"], abs=1e-3)
        assert np.allclose(np.array(answer["landmarks"]), here.landmarks, atol=0.01)
    prob = predictor.predict_landmarks(here.landmarks, here.width, here.height)
    assert [answer["probabilities"][c] for c in predictor.classes] == pytest.approx(prob.tolist(), abs=1e-5)
    by_pixels = client.post("/predict/landmarks", json={"units": "pixels", "landmarks": answer["landmarks"],
                                                        "width": answer["width"], "height": answer["height"]})
    by_shape = client.post("/predict/landmarks", json={"units": "normalised", "landmarks": answer["shape"]})
    for r in (by_pixels, by_shape):
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["label"] == answer["label"] and got["score"] == pytest.approx(answer["score"], abs=0.01)
    flat = client.post("/predict/landmarks", json={"units": "pixels", "landmarks": np.ravel(answer["landmarks"]).tolist(),
                                                   "width": answer["width"], "height": answer["height"]})
    assert flat.json()["probabilities"] == by_pixels.json()["probabilities"]


def test_phone_size_photo_gets_its_training_landmarks(client):
    """A large EXIF-rotated JPEG is decoded as training photos are (facekit.extract.decode, here at 1/2 scale),
    so the server answers with the landmarks the photo's extraction for training gives, in full-size upright
    pixels; a full-size decode (the live path's decode_frame) gives landmarks pixels away from them."""
    from facekit.bench import _STORED
    from facekit.extract import landmarks_from_bytes

    upright = np.asarray(Image.fromarray(demo.portrait()).resize((1536, 2048), Image.BICUBIC))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(upright).transpose(_STORED[6]).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    data = buf.getvalue()
    answer = predict(client, data, landmarks="true").json()
    assert answer["state"] == "ok", answer["message"]
    training, width, height = landmarks_from_bytes(data)
    assert (answer["width"], answer["height"]) == (width, height) == (1536, 2048)
    assert np.abs(np.array(answer["landmarks"]) - training).max() <= 0.006  # the answer's rounding
    assert answer["box"] == pytest.approx([*training[:, :2].min(0), *training[:, :2].max(0)], abs=0.06)
    full = live.LivePipeline(load(WEIGHTS), settings=live.LiveSettings(tracking=False)).process(data, t=0.0)
    assert (full.width, full.height) == (1536, 2048) and np.abs(full.landmarks - training).max() > 1.0


def test_same_answer_on_jaffe(client, jaffe_root):
    predictor = load(WEIGHTS)
    for rgb in jaffe_photos(jaffe_root):
        data = png(letterbox(rgb))
        answer = predict(client, data, "image/png").json()
        here = live.LivePipeline(predictor, settings=live.LiveSettings(tracking=False)).process(data, t=0.0)
        assert answer["state"] == here.state == "ok", answer["message"]
        assert answer["label"] == here.label and answer["score"] == pytest.approx(here.raw_score, abs=1e-3)


def test_no_face_and_two_faces(client):
    r = predict(client, jpeg(empty_room()))
    assert r.status_code == 200
    none = r.json()
    assert none["state"] == "no_face" and not none["face"] and none["score"] is None and none["box"] is None
    assert "no face" in none["message"]
    two = predict(client, jpeg(two_faces())).json()
    assert two["state"] == "multiple_faces" and two["n_faces"] == 2 and len(two["others"]) == 1
    assert two["box"][2] < 340 and two["others"][0][0] > 390  # the larger face on the left is scored
    assert "largest" in two["message"] and 0 <= two["score"] <= 100


# ----------------------------------------------------------------------------- bad input: a 4xx that says why

def _raw(url: str, request: bytes, body_chunks=(), timeout: float = 20) -> tuple[int, str, float]:
    """Send raw HTTP (what a client library would not send); → (status, response text, seconds to answer)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: what the limit is for
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 10:
            part = s.recv(65536)
            if not part:
                break
            data += part
    text = data.decode("latin-1")
    return int(text.split()[1]), text, time.monotonic() - t0


def test_body_limit_from_content_length_before_reading(url):
    request = (b"POST /predict/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
               b"Content-Length: 1000000000\r\n\r\n")
    status, text, seconds = _raw(url, request)  # the gigabyte never comes: the answer must not wait for it
    assert status == 413 and "--max-bytes" in text and f"{MAX_BYTES:,}" in text
    assert seconds < 10


def test_body_limit_on_a_streamed_body(url):
    request = (b"POST /predict/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"\xff" * 65536
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BYTES // len(chunk) + 4) + [b"0\r\n\r\n"]
    status, text, _ = _raw(url, request, chunks)
    assert status == 413 and "--max-bytes" in text


def test_bad_images(client, astronaut):
    big = png(np.zeros((2100, 2000, 3), np.uint8))  # 4.2 megapixels in a few kB
    gif = io.BytesIO()
    Image.fromarray(demo.portrait(64)).save(gif, "GIF")
    cases = [
        (predict(client, b"this is not a photo", "image/jpeg"), 415, "not an image"),
        (predict(client, gif.getvalue(), "image/gif"), 415, "GIF"),
        (predict(client, astronaut[: len(astronaut) // 3]), 422, "could not be decoded"),
        (predict(client, big, "image/png"), 413, "megapixels", "--max-pixels"),
        (predict(client, b""), 400, "empty"),
        (client.post("/predict/image", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty"),
        (client.post("/predict/image", content=astronaut, headers={"Content-Type": "text/plain"}), 415, "multipart"),
        (predict(client, astronaut, landmarks="perhaps"), 422, "query landmarks", "boolean"),
        (client.post("/predict/image", content=astronaut), 415, "content-type"),
        (client.post("/predict/image", files={"photo": ("x", astronaut)}), 422, "'file'"),
        (client.post("/predict/image", data={"file": "not a file"}, files={"other": ("x", b"1")}), 422, "'file'"),
        (client.post("/predict/image", json={"image": "@@@not base64@@@"}), 400, "base64"),
        (client.post("/predict/image", json={"image": ""}), 400, "empty"),
        (client.post("/predict/image", json={"image": 12}), 422, "base64 string"),
        (client.post("/predict/image", json={"picture": "abc"}), 422, "missing", "image"),
        (client.post("/predict/image", json={"image": base64.b64encode(astronaut).decode(), "x": 1}), 422, "unknown"),
        (client.post("/predict/image", json={"image": "data:image/jpeg,abc"}), 422, "base64"),
        (client.post("/predict/image", json=["image"]), 422, "JSON object"),
        (client.post("/predict/image", content=b"{not json", headers={"Content-Type": "application/json"}),
         400, "not valid JSON"),
        (client.post("/predict/image", content=b"", headers={"Content-Type": "application/json"}), 400, "empty"),
        (client.post("/predict/image", files={"file": ("p", astronaut)}, data={"reference": "[1, 2"}), 400,
         "reference"),
        (client.post("/predict/image", files={"file": ("p", astronaut)}, data={"reference": "[1, 2]"}), 422,
         "personal-neutral"),
    ]
    for r, status, *words in cases:
        assert_refused(r, status, *words)


def _landmarks_body(**fields) -> bytes:
    return json.dumps(fields).encode()  # Python's json writes NaN and Infinity as such, as a careless client might


@pytest.fixture(scope="module")
def face_pixels(client, astronaut) -> dict:
    return predict(client, astronaut, landmarks="true").json()


def test_bad_landmarks(client, face_pixels):
    lm = face_pixels["landmarks"]
    flat = np.ravel(lm).tolist()
    good = {"units": "pixels", "landmarks": lm, "width": 480, "height": 480}

    def post(body, content_type="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return client.post("/predict/landmarks", content=body, headers={"Content-Type": content_type})

    assert post(good).status_code == 200
    cases = [
        (post({**good, "landmarks": flat[:-3]}), 422, "1,431 numbers", "1,434"),
        (post({**good, "landmarks": flat + [1.0]}), 422, "1,435"),
        (post({**good, "landmarks": lm[:477]}), 422, "477 rows"),
        (post({**good, "landmarks": [row[:2] for row in lm]}), 422, "x, y, z"),
        (post({**good, "landmarks": []}), 422, "0 numbers"),
        (post(_landmarks_body(**{**good, "landmarks": flat[:5] + [float("nan")] + flat[6:]})), 422, "NaN", "index 5"),
        (post(_landmarks_body(**{**good, "landmarks": flat[:7] + [float("inf")] + flat[7:-1]})), 422, "infinity"),
        (post({**good, "landmarks": flat[:-1] + [1e300]}), 422, "out of range"),
        (post({**good, "landmarks": flat[:-1] + [10 ** 400]}), 422, "too large"),
        (post({**good, "landmarks": flat[:-1] + ["1.5"]}), 422, "a string, not a number"),
        (post({**good, "landmarks": flat[:-1] + [True]}), 422, "boolean"),
        (post({**good, "landmarks": "many numbers"}), 422, "array"),
        (post({**good, "landmarks": [[0.0, 0.0, 0.0]] * 478}), 422, "degenerate"),
        (post({"units": "pixels", "landmarks": lm}), 422, "width and height"),
        (post({**good, "width": 0}), 422, "width"),
        (post({**good, "height": "480"}), 422, "height"),
        (post({**good, "width": 1.5}), 422, "whole number"),
        (post({"landmarks": lm}), 422, "missing", "units"),
        (post({"units": "pixels"}), 422, "missing", "landmarks"),
        (post({**good, "units": "mediapipe"}), 422, "units"),
        (post({**good, "extra": 1}), 422, "unknown field", "extra"),
        (post({"units": "normalised", "landmarks": flat, "width": 480}), 422, "width"),
        (post({**good, "reference": flat}), 422, "personal-neutral"),
        (post(b"{\"units\": "), 400, "not valid JSON"),
        (post(b"{\"units\": \"\xc3\x28\"}"), 400, "not UTF-8"),
        (post(b"[" * 100_000), 400, "JSON"),
        (post(b""), 400, "empty"),
        (post(b"[1, 2, 3]"), 422, "JSON object"),
        (post(json.dumps(good).encode(), "text/plain"), 415, "application/json"),
    ]
    for r, status, *words in cases:
        assert_refused(r, status, *words)


def test_fuzz_landmarks_never_a_server_error(client, face_pixels):
    """Random mutations of a valid request (lengths, NaN/inf, huge values, wrong types, missing fields): 4xx or 200."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    flat = np.ravel(face_pixels["landmarks"]).tolist()
    junk = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 30, 10 ** 30),
                     st.sampled_from([1e308, -1e308, 1e-320, 0.0]), st.text(max_size=5), st.none(), st.booleans(),
                     st.lists(st.floats(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

    @st.composite
    def request(draw):
        body = {"units": draw(st.sampled_from(["pixels", "normalised", "normalized", "", 3, None])),
                "landmarks": list(flat), "width": draw(st.one_of(st.integers(-5, 10 ** 6), junk)),
                "height": draw(st.one_of(st.integers(-5, 10 ** 6), junk))}
        values = body["landmarks"]
        length = draw(st.sampled_from([None, 0, 1, 3, 477, 956, 1433, 1435, 3000]))
        if length is not None:
            values[:] = (values * 3)[:length]
        for _ in range(draw(st.integers(0, 4))):
            if values:
                values[draw(st.integers(0, len(values) - 1))] = draw(junk)
        if draw(st.booleans()):
            body["landmarks"] = [values[i:i + 3] for i in range(0, len(values), 3)]
        if draw(st.booleans()):
            body["landmarks"] = [v * draw(st.sampled_from([1e-30, 1e6, 1e30, -1.0])) for v in values
                                 if isinstance(v, float)] or values
        for key in draw(st.lists(st.sampled_from(["units", "landmarks", "width", "height"]), max_size=2)):
            body.pop(key, None)
        if draw(st.booleans()):
            body[draw(st.sampled_from(["reference", "extra"]))] = draw(st.one_of(junk, st.just(list(flat))))
        return body

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request())
    def check(body):
        text = json.dumps(body, allow_nan=True)
        r = client.post("/predict/landmarks", content=text.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text, text[:300])
        if r.status_code != 200:
            assert isinstance(r.json()["detail"], str) and r.json()["detail"]
        else:
            assert 0 <= r.json()["score"] <= 100

    check()


# ----------------------------------------------------------------------------- safe defaults

def test_host_check_and_cors_off(client):
    r = client.get("/health", headers={"Host": "evil.example"})
    assert_refused(r, 400, "evil.example", "loopback")
    r = client.get("/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = client.options("/predict/image", headers={"Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_for_listed_origins_only(personal_url):
    with httpx.Client(base_url=personal_url, timeout=30) as c:
        ok = c.options("/predict/landmarks", headers={"Origin": "http://allowed.example",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://allowed.example"
        other = c.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("content, words", [
    (b"certainly not a torch file", ["not a loadable facekit checkpoint"]),
    (None, ["does not exist"]),
])
def test_bad_weights_stop_start_up(tmp_path, content, words):
    weights = tmp_path / "broken.pt"
    if content is not None:
        weights.write_bytes(content)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "facekit", "serve", "--weights", str(weights), "--port", str(port)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done
    assert "cannot start" in done.stderr and str(weights) in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr
    assert "Uvicorn running" not in done.stderr + done.stdout


def test_missing_extra_is_explained(tmp_path):
    code = ("import sys; sys.modules['fastapi'] = None\n"  # as if the 'serve' extra were not installed
            "from facekit.cli import main; raise SystemExit(main(['serve']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "'serve' extra" in done.stderr and "fastapi" in done.stderr, done.stderr


def test_docs_are_served_without_a_cdn(client):
    spec = client.get("/openapi.json").json()
    assert {"/health", "/model", "/predict/landmarks", "/predict/image"} <= set(spec["paths"])
    assert "LandmarksRequest" in spec["components"]["schemas"]
    for path in ("/docs", "/"):
        r = client.get(path)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    for name in ("server_page.js", "server_docs.js", "server_page.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/canonical_face.npy").status_code == 404  # only the page's own files
    assert client.get("/redoc").status_code == 404


# ----------------------------------------------------------------------------- personal-neutral checkpoints

def test_personal_neutral_needs_and_takes_a_reference(personal_url, astronaut):
    predictor = load(PERSONAL)
    with httpx.Client(base_url=personal_url, timeout=60) as c:
        assert c.get("/model").json()["needs_reference"] is True
        first = predict(c, astronaut, shape="true", landmarks="true").json()
        assert first["state"] == "needs_calibration" and first["score"] is None and "reference" in first["message"]
        shape = np.array(first["shape"], np.float32).reshape(478, 3)
        assert np.allclose(shape, predictor.normalize(np.array(first["landmarks"], np.float32)[None], 480, 480)[0],
                           atol=1e-3)
        r = c.post("/predict/landmarks", json={"units": "normalised", "landmarks": first["shape"]})
        assert_refused(r, 422, "personal-neutral", "reference")
        # The photo itself as its own neutral reference: the model sees no change from neutral.
        reference = (shape * 1.0).tolist()
        scored = c.post("/predict/image", files={"file": ("p", astronaut)}, data={"reference": json.dumps(reference)})
        assert scored.status_code == 200, scored.text
        scored = scored.json()
        expected = predictor.predict_shapes(shape[None], shape)[0]
        assert scored["state"] == "ok" and scored["model"] == "personal-neutral"
        assert scored["score"] == pytest.approx(float(expected[1]) * 100, abs=0.05)
        by_json = c.post("/predict/image", json={"image": base64.b64encode(astronaut).decode(), "reference": reference})
        assert by_json.json()["score"] == pytest.approx(scored["score"], abs=1e-6)
        r = c.post("/predict/landmarks", json={"units": "normalised", "landmarks": first["shape"],
                                               "reference": reference})
        assert r.status_code == 200 and r.json()["score"] == pytest.approx(scored["score"], abs=0.05)
        bad = c.post("/predict/landmarks", json={"units": "normalised", "landmarks": first["shape"],
                                                 "reference": reference[:10]})
        assert_refused(bad, 422, "reference")


# ----------------------------------------------------------------------------- load

def test_load_test_200_requests_from_8_clients(url, shared_photos):
    result = load_test(url, shared_photos, n_requests=200, concurrency=8)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nload test: {result['requests']} requests, {result['concurrency']} clients, {result['photos']} photos: "
          f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, {result['requests_per_s']} requests/s, "
          f"{result['errors']} errors, states {result['states']}, load average {result['load_average']}")
    assert result["errors"] == 0, result["error_examples"]
    assert result["states"].get("ok", 0) > 0


@pytest.fixture(scope="module")
def shared_photos() -> list[bytes]:
    """Real faces as a webcam would send them: the astronaut, and four JAFFE photos where present."""
    photos = [jpeg(letterbox(demo.portrait()), 80)]
    jaffe = shared_datasets() / "jaffe"
    if jaffe.is_dir():
        photos += [jpeg(letterbox(rgb), 80) for rgb in jaffe_photos(jaffe)]
    return photos


# ----------------------------------------------------------------------------- the web page in a real browser

def _clip(frames: list[np.ndarray], seconds_each: float, path: Path, fps: int = 15) -> Path:
    """Still 640×480 frames, each held ``seconds_each`` → a .y4m that Chromium's fake camera loops."""
    folder = path.parent / "clip_frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-framerate", f"1/{seconds_each}", "-i",
                    str(folder / "f%03d.png"), "-vf", f"fps={fps},format=yuv420p", "-f", "yuv4mpegpipe", str(path)],
                   check=True, timeout=120)
    return path


PANEL = """() => { const p = document.getElementById("fk-panel");
  const v = document.getElementById("fk-video");
  return {...p.dataset, banner: document.getElementById("fk-banner").textContent,
          label_text: document.getElementById("fk-label").textContent,
          stats: document.getElementById("fk-stats").textContent,
          calibration: document.getElementById("fk-calibration").textContent,
          model: document.getElementById("fk-model").textContent,
          tracks: v.srcObject ? v.srcObject.getTracks().filter((t) => t.readyState === "live").length : 0}; }"""


def _wait(page, until, timeout: float, what: str):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = page.evaluate(PANEL)
        if until(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last}")


def test_web_page_in_a_real_browser(tmp_path, personal_url):
    """The page's camera plays real faces, an empty room and two faces; it shows the score and every state,
    and calibrates a personal-neutral model."""
    require_browser_tools()
    from playwright.sync_api import sync_playwright

    jaffe = shared_datasets() / "jaffe"
    faces = [letterbox(demo.portrait())] + ([letterbox(jaffe_photos(jaffe, 1)[0])] if jaffe.is_dir() else [])
    clip = _clip(faces + [empty_room(), two_faces()], 1.2, tmp_path / "clip.y4m")
    base_args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
    RESULTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=base_args + [
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip.resolve()}"])
        no_camera = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                       args=base_args + ["--use-fake-ui-for-media-stream"])
        try:
            with running_server(WEIGHTS, args=["--threads", "2"]) as base:
                context = browser.new_context(viewport={"width": 1000, "height": 700})
                context.grant_permissions(["camera"], origin=base)
                page = context.new_page()
                requests, console = [], []
                page.on("request", lambda r: requests.append(r.url))
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.goto(base + "/")
                _wait(page, lambda p: "demo_binary.pt" in p["model"], 30, "the model description")

                page.click("#fk-start")
                seen: dict[str, dict] = {}
                deadline = time.time() + 60
                while time.time() < deadline:
                    p = page.evaluate(PANEL)
                    seen.setdefault(p["state"], p)
                    if {"ok", "no_face", "multiple_faces"} <= set(seen) and int(p["frames"]) >= 20:
                        break
                    time.sleep(0.1)
                last = page.evaluate(PANEL)
                page.screenshot(path=str(RESULTS / "server_page.png"))
                print(f"\nweb page: {last['stats']}")
                assert {"ok", "no_face", "multiple_faces"} <= set(seen), (seen, last, console)
                scored = seen["ok"]
                assert 0 <= float(scored["score"]) <= 100 and scored["label"] in ("neutral", "anxious"), scored
                assert scored["label_text"] in ("neutral", "anxious")
                assert "no face" in seen["no_face"]["banner"] and "largest" in seen["multiple_faces"]["banner"]
                assert int(last["frames"]) >= 20 and float(last["fps"]) > 0, last

                page.click("#fk-calibrate")  # a plain model: Calibrate explains instead of pretending
                _wait(page, lambda p: "personal-neutral checkpoint" in p["calibration"], 10, "Calibrate to explain")
                page.click("#fk-stop")
                stopped = _wait(page, lambda p: p["state"] == "stopped" and p["tracks"] == 0, 10, "Stop")
                time.sleep(0.5)
                assert page.evaluate(PANEL)["frames"] == stopped["frames"], "frames kept going after Stop"

                denied = browser.new_context()  # no camera permission granted
                other = denied.new_page()
                other.goto(base + "/")
                other.click("#fk-start")
                _wait(other, lambda p: p["state"] == "permission_denied", 15, "permission denied")
                lonely = no_camera.new_page()
                lonely.goto(base + "/")
                lonely.click("#fk-start")
                _wait(lonely, lambda p: p["state"] == "no_camera", 15, "no camera")

                docs = context.new_page()
                docs.on("request", lambda r: requests.append(r.url))
                docs.goto(base + "/docs")
                docs.wait_for_selector("details.fk-op[data-path='/predict/image']", timeout=15_000)
                assert docs.locator("details.fk-op").count() >= 4

                calibrating = browser.new_context()  # a personal-neutral model: Calibrate builds the reference
                calibrating.grant_permissions(["camera"], origin=personal_url)
                personal = calibrating.new_page()
                personal.goto(personal_url + "/")
                _wait(personal, lambda p: "personal-neutral" in p["model"], 30, "the personal model's description")
                personal.click("#fk-start")
                _wait(personal, lambda p: p["state"] == "needs_calibration" and "Calibrate" in p["banner"], 30,
                      "the page to ask for Calibrate")
                personal.click("#fk-calibrate")
                done = _wait(personal, lambda p: "calibrated on" in p["calibration"] and p["score"] != ""
                             and p["state"] in ("ok", "multiple_faces"), 30, "Calibrate to finish and scores to come")
                assert 0 <= float(done["score"]) <= 100 and done["label"] in ("neutral", "anxious"), done
                personal.click("#fk-stop")

                page.click("#fk-start")
                _wait(page, lambda p: p["state"] in ("ok", "multiple_faces", "no_face"), 30, "frames again")
            # The server has stopped: the page says so instead of freezing.
            gone = _wait(page, lambda p: p["state"] == "no_model", 30, "the page to notice the server is gone")
            assert "server" in gone["banner"]
            outside = [u for u in requests if not u.startswith(base) and not u.startswith(("blob:", "data:"))]
            assert not outside, f"the pages loaded something from elsewhere: {outside}"
        finally:
            browser.close()
            no_camera.close()
