// facekit server's live page: the browser's camera → this server's /predict/image → score, label, landmarks.
// No libraries, nothing fetched from elsewhere.  One frame in flight: the next is captured only after the
// answer to the last, so frames never pile up.  The server is stateless (every photo is scored alone); the
// smoothing over time and the Calibrate reference live here, in the page, as in the notebook's panel.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const panel = $("fk-panel"), video = $("fk-video"), view = $("fk-view"), overlay = $("fk-overlay");
  const banner = $("fk-banner"), labelEl = $("fk-label"), badge = $("fk-badge"), fill = $("fk-fill");
  const thresholdMark = $("fk-threshold"), scoreEl = $("fk-score"), rawEl = $("fk-raw"), topEl = $("fk-top");
  const statsEl = $("fk-stats"), startBtn = $("fk-start"), stopBtn = $("fk-stop"), calibBtn = $("fk-calibrate");
  const resetBtn = $("fk-reset"), tauInput = $("fk-tau"), calibEl = $("fk-calibration"), modelEl = $("fk-model");

  const JPEG_QUALITY = 0.8;
  const ANSWER_TIMEOUT_MS = 10000;
  const CALIBRATE_S = 3;
  const MIN_CALIBRATION_FRAMES = 5;
  const MESSAGES = {
    idle: "press Start and allow the camera",
    stopped: "stopped",
    no_model: "no model loaded: the server does not answer; start it with python -m facekit serve and reload",
  };

  let model = null;          // GET /model
  let stream = null;
  let runId = 0;
  let frames = 0, faces = 0;
  let smoothed = null, smoothedT = null;  // exponential smoothing in seconds of frame time
  let reference = null;      // personal-neutral: the mean normalised neutral shape
  let calibration = null;    // {until, shapes} while Calibrate collects
  const answers = [];        // times of recent answers (frames per second)
  const trips = [];          // round trips (ms)
  const grab = document.createElement("canvas");

  function setState(state, message) {
    panel.dataset.state = state;
    banner.textContent = message || MESSAGES[state] || "";
    banner.className = "fk-banner " + (state === "ok" || state === "multiple_faces" ? "fk-ok" : "fk-warn");
  }

  function fmt(v, digits = 0) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits); }
  function median(values) {
    if (!values.length) return null;
    const v = [...values].sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)];
  }
  function fps() {
    const now = performance.now();
    while (answers.length && now - answers[0] > 2000) answers.shift();
    return answers.length < 2 ? 0 : (answers.length - 1) / ((answers[answers.length - 1] - answers[0]) / 1000);
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- the model
  async function loadModel() {
    try {
      const r = await fetch("/model", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      model = await r.json();
    } catch (err) {
      model = null;
      setState("no_model", `no model loaded: the server did not answer /model (${err.message}); start it with ` +
        "python -m facekit serve and reload this page");
      modelEl.textContent = "no model";
      return;
    }
    const norm = model.normalization || {};
    const data = model.training_data || {};
    const source = data.source || data.description || "";
    modelEl.textContent = `${model.weights.split("/").pop()}: ${model.task} ${JSON.stringify(model.classes)}, ` +
      `normalisation ${norm.mode}${norm.align ? "+align" : ""} v${norm.version}, threshold ${fmt(model.threshold * 100)}` +
      (model.needs_reference ? ", personal-neutral (press Calibrate)" : "") + (source ? `\ntrained on ${source}` : "");
    modelEl.classList.toggle("fk-synthetic", /synthetic/i.test(JSON.stringify(data)));
    thresholdMark.style.left = `${model.threshold * 100}%`;
    thresholdMark.title = `decision threshold ${fmt(model.threshold * 100)}`;
    calibEl.textContent = model.needs_reference ? "this model compares your face with your own neutral face: " +
      "press Start, then Calibrate" : "";
    calibBtn.classList.toggle("fk-unavailable", !model.needs_reference);
  }

  // ---- drawing
  function drawOverlay(answer) {
    const w = view.width, h = view.height;
    if (overlay.width !== w || overlay.height !== h) { overlay.width = w; overlay.height = h; }
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!answer) return;
    const r = Math.max(1.5, w / 260);
    const points = answer.landmarks || [];
    ctx.fillStyle = "rgba(60, 255, 170, 0.95)";
    for (const [x, y] of points) ctx.fillRect(x - r / 2, y - r / 2, r, r);
    if (points.length > 1) {  // the nose tip (landmark 1), the origin of the normalised face
      ctx.fillStyle = "#ff5050";
      ctx.beginPath(); ctx.arc(points[1][0], points[1][1], 2 * r, 0, 2 * Math.PI); ctx.fill();
    }
    if (answer.box && answer.others && answer.others.length) {  // outline the scored face among several
      const [x0, y0, x1, y1] = answer.box;
      ctx.strokeStyle = "rgba(80, 230, 160, 0.9)"; ctx.lineWidth = 2 * r;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    ctx.strokeStyle = "rgba(200, 200, 200, 0.8)"; ctx.lineWidth = r; ctx.setLineDash([6, 4]);
    for (const [x0, y0, x1, y1] of answer.others || []) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }

  function labelFor(answer) {
    // A binary model's label follows the smoothed score at the checkpoint's threshold, as in the notebook panel.
    if (!answer.label || smoothed === null || !model || model.classes.length !== 2 || !answer.score_class) {
      return answer.label;
    }
    const other = model.classes.find((c) => c !== answer.score_class);
    return smoothed >= model.threshold * 100 ? answer.score_class : other;
  }

  function show(answer, raw) {
    const ok = answer.state === "ok" || answer.state === "multiple_faces";
    const score = smoothed;
    panel.dataset.score = score === null ? "" : score.toFixed(2);
    const label = labelFor(answer);
    panel.dataset.label = label || "";
    panel.dataset.frames = String(frames);
    panel.dataset.faces = String(faces);
    panel.dataset.fps = fmt(fps(), 2);
    if (label) { labelEl.textContent = label; labelEl.className = "fk-label fk-label-" + label; }
    labelEl.style.opacity = ok ? "1" : "0.45";  // no face now: the last label, dimmed
    scoreEl.textContent = fmt(score);
    rawEl.textContent = fmt(raw);
    fill.style.width = `${score === null ? 0 : Math.max(0, Math.min(100, score))}%`;
    fill.style.opacity = ok ? "1" : "0.35";
    const top = answer.top || [];
    topEl.textContent = model && model.classes.length > 2 && top.length ?
      "top: " + top.map(([n, p]) => `${n} ${fmt(p)}`).join(" · ") : "";
    const t = answer.timings_ms || {};
    const server = Object.values(t).reduce((a, b) => a + b, 0);
    statsEl.textContent = `${fmt(fps(), 1)} frames/s · round trip ${fmt(median(trips))} ms (server ${fmt(server, 1)} ms: ` +
      `decode ${fmt(t.decode, 1)} · FaceMesh ${fmt(t.facemesh, 1)} · normalise ${fmt(t.normalise, 1)} · ` +
      `model ${fmt(t.model, 1)}) · frames ${frames} · with a face ${faces}`;
    badge.textContent = reference ? "calibrated" : calibration ? "calibrating…" : "";
  }

  // ---- one frame
  function smooth(x, t) {
    const tau = Math.max(0, parseFloat(tauInput.value) || 0);
    if (smoothed === null || smoothedT === null || t < smoothedT) smoothed = x;
    else smoothed += (tau <= 0 ? 1 : 1 - Math.exp(-(t - smoothedT) / tau)) * (x - smoothed);
    smoothedT = t;
  }

  function collect(answer, t) {
    // Calibrate: the shapes of the frames with a face during CALIBRATE_S seconds, then their mean.
    if (!calibration) return;
    if (t < calibration.until) {
      if (answer.shape) calibration.shapes.push(answer.shape);
      calibEl.textContent = `hold a neutral face: ${fmt(calibration.until - t, 1)} s left, ` +
        `${calibration.shapes.length} frames with a face`;
      return;
    }
    const shapes = calibration.shapes;
    calibration = null;
    if (shapes.length < MIN_CALIBRATION_FRAMES) {
      calibEl.textContent = `calibration failed: only ${shapes.length} frames with a face in ${CALIBRATE_S} s ` +
        `(need ${MIN_CALIBRATION_FRAMES}); face the camera and press Calibrate again`;
      return;
    }
    reference = shapes[0].map((_, i) => shapes.reduce((sum, s) => sum + s[i], 0) / shapes.length);
    smoothed = null;
    calibEl.textContent = `calibrated on ${shapes.length} frames: scoring relative to your neutral face`;
  }

  async function send(blob) {
    const form = new FormData();
    form.append("file", blob, "frame.jpg");
    if (reference) form.append("reference", JSON.stringify(reference));
    const query = "landmarks=true" + (calibration ? "&shape=true" : "");
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ANSWER_TIMEOUT_MS);
    try {
      return await fetch(`/predict/image?${query}`, { method: "POST", body: form, signal: abort.signal });
    } finally { clearTimeout(timer); }
  }

  async function capture(myRun) {
    while (myRun === runId && (video.readyState < 2 || !video.videoWidth)) await sleep(20);
    if (myRun !== runId) return null;
    const w = video.videoWidth, h = video.videoHeight;
    if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
    grab.getContext("2d").drawImage(video, 0, 0, w, h);
    const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    return blob ? { blob, w, h, t: performance.now() / 1000 } : null;
  }

  async function loop(myRun) {
    while (myRun === runId) {
      const frame = await capture(myRun);
      if (!frame || myRun !== runId) continue;
      const sent = performance.now();
      let response;
      try {
        response = await send(frame.blob);
      } catch (err) {
        if (myRun !== runId) break;
        setState("no_model", `no model: the server did not answer (${err.name === "AbortError" ? "10 s passed" :
          err.message}); start python -m facekit serve again: this page keeps trying`);
        await sleep(1000);
        continue;
      }
      let answer;
      try { answer = await response.json(); } catch (err) { answer = { detail: `not JSON (HTTP ${response.status})` }; }
      if (myRun !== runId) break;
      if (!response.ok) {
        setState(response.status >= 500 ? "no_model" : "corrupt_frame",
          `the server refused a frame (HTTP ${response.status}: ${answer.detail}); the stream goes on`);
        await sleep(response.status >= 500 ? 1000 : 100);
        continue;
      }
      const now = performance.now();
      trips.push(now - sent); if (trips.length > 30) trips.shift();
      answers.push(now);
      frames += 1;
      if (answer.face) faces += 1;
      if (view.width !== frame.w || view.height !== frame.h) { view.width = frame.w; view.height = frame.h; }
      view.getContext("2d").drawImage(grab, 0, 0);  // the analysed frame, under its landmarks
      if (answer.score !== null && answer.score !== undefined) smooth(answer.score, frame.t);
      collect(answer, frame.t);
      let message = answer.message;
      if (answer.state === "multiple_faces") {  // the server's "left"/"right" are the camera's; this view is mirrored
        message = `${answer.n_faces} faces in view: scoring the largest (outlined); the others (dashed) are ignored`;
      } else if (answer.state === "needs_calibration") {
        message = calibration ? "calibrating: hold a neutral face" :
          "this model compares your face with your own neutral face: press Calibrate";
      }
      setState(answer.state, message);
      drawOverlay(answer);
      show(answer, answer.score);
    }
  }

  // ---- camera
  async function start() {
    if (stream) return;
    if (!model) await loadModel();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setState("no_camera", "this page cannot use a camera: browsers offer cameras only to pages from localhost " +
        "or https (open http://localhost:PORT/ or http://127.0.0.1:PORT/)");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false });
    } catch (err) {
      stream = null;
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
        setState("permission_denied", "camera permission denied: allow the camera for this page (the camera " +
          "icon in the address bar), then press Start");
      } else if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
        setState("no_camera", "no camera found: connect one and press Start");
      } else if (name === "NotReadableError" || name === "TrackStartError") {
        setState("no_camera", "the camera cannot be read: is another program using it?");
      } else {
        setState("no_camera", `the camera could not be started (${name || err})`);
      }
      return;
    }
    video.srcObject = stream;
    try { await video.play(); } catch (err) { /* a muted video may autoplay; frames flow all the same */ }
    startBtn.disabled = true; stopBtn.disabled = false;
    panel.dataset.running = "true";
    setState("starting", "starting the camera…");
    loop(++runId);
  }

  function stop() {
    runId++;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    calibration = null;
    startBtn.disabled = false; stopBtn.disabled = true;
    panel.dataset.running = "false";
    drawOverlay(null);
    setState("stopped");
  }

  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  calibBtn.addEventListener("click", () => {
    if (!model || !model.needs_reference) {
      calibEl.textContent = "Calibrate needs a personal-neutral checkpoint (a model trained on faces relative to " +
        "each person's own neutral face, such as weights/demo_binary_personal.pt): start the server with " +
        "--weights on one; the plain model stays in use";
      return;
    }
    if (!stream) { calibEl.textContent = "press Start first: Calibrate uses the camera's next seconds"; return; }
    reference = null;
    calibration = { until: performance.now() / 1000 + CALIBRATE_S, shapes: [] };
    calibEl.textContent = `hold a neutral face for ${CALIBRATE_S} s`;
  });
  resetBtn.addEventListener("click", () => {
    reference = null; calibration = null; smoothed = null; smoothedT = null;
    calibEl.textContent = model && model.needs_reference ? "not calibrated: press Calibrate" : "";
    scoreEl.textContent = "–"; rawEl.textContent = "–"; fill.style.width = "0%";
    panel.dataset.score = "";
  });

  panel.dataset.running = "false";
  setState("idle");
  loadModel();
})();
