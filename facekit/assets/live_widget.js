// facekit live panel (anywidget ESM; no external libraries, nothing fetched).
//
// Browser source: getUserMedia video → YUV, JPEG or RGB frame → model.send({type: "frame"}, undefined, [buffer]);
// the next frame is sent only after the kernel's ack (frames never pile up).  The ack carries the
// scored face's 2-D landmarks (Float32 x/W, y/H pairs) and the frame's result; the synced traits
// carry the panel's numbers.  Kernel sources (OpenCV camera, video file, image folder) send
// {type: "result"} messages with the landmarks and a JPEG preview of the frame instead.

const STAGES = [["decode", "decode"], ["facemesh", "FaceMesh"], ["normalise", "normalise"],
                ["model", "model"], ["smoothing", "smoothing"]];
const CHART_SECONDS = 60;
const ACK_TIMEOUT_MS = 10000;

function make(tag, cls, parent, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function floats(view) {
  // DataView → Float32Array (copied: the message's buffer offset need not be 4-byte aligned)
  if (!view || !view.byteLength) return new Float32Array(0);
  return new Float32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function fmt(v, digits = 1) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits); }

function render({ model, el }) {
  const viewId = Math.random().toString(36).slice(2, 8);
  el.classList.add("fk-live");

  // ---- layout
  const stageBox = make("div", "fk-stage", el);
  const mirror = make("div", "fk-mirror", stageBox);
  const video = make("video", "fk-video", mirror);
  video.muted = true; video.playsInline = true; video.autoplay = true;
  const view = make("canvas", "fk-view", mirror);       // the frame the kernel analysed
  view.width = 640; view.height = 480;
  const overlay = make("canvas", "fk-overlay", mirror); // landmarks over either
  const banner = make("div", "fk-banner", stageBox);

  const side = make("div", "fk-side", el);
  const labelRow = make("div", "fk-label-row", side);
  const labelEl = make("span", "fk-label", labelRow, "–");
  const calibBadge = make("span", "fk-badge", labelRow, "");
  const bar = make("div", "fk-bar", side);
  const fill = make("div", "fk-bar-fill", bar);
  const thresholdMark = make("div", "fk-bar-threshold", bar);
  const scores = make("div", "fk-scores", side);
  make("span", "fk-caption", scores, "score ");
  const scoreEl = make("b", "fk-score", scores, "–");
  make("span", "fk-caption", scores, " smoothed · raw ");
  const rawEl = make("span", "fk-raw", scores, "–");
  make("span", "fk-caption", scores, " / 100");
  const topEl = make("div", "fk-top", side);
  const chart = make("canvas", "fk-chart", side);
  chart.width = 360; chart.height = 110;
  const statsEl = make("div", "fk-stats", side);
  const buttons = make("div", "fk-buttons", side);
  const startBtn = make("button", "fk-start", buttons, "Start");
  const stopBtn = make("button", "fk-stop", buttons, "Stop");
  const calibBtn = make("button", "fk-calibrate", buttons, "Calibrate");
  const resetBtn = make("button", "fk-reset", buttons, "Reset");
  const settings = make("label", "fk-setting", side, "smoothing τ ");
  const tauInput = make("input", "fk-tau", settings);
  tauInput.type = "number"; tauInput.min = "0"; tauInput.step = "0.1";
  settings.appendChild(document.createTextNode(" s"));
  const calibEl = make("div", "fk-calibration", side);
  const modelEl = make("div", "fk-model", side);

  // ---- state
  let stream = null;
  let runId = 0;
  let seq = 0;
  const pending = new Map();          // ack id → resolve
  const ackTimes = [];                // wall times of recent acks (fps)
  let roundTrip = null;
  const handlerMs = [];  // the kernel's whole time per frame message (pipeline, traits, ack)
  const tripMs = [];     // send → ack in the browser
  let points = new Float32Array(0);
  let others = [];
  let frameSize = [640, 480];
  let lastFormat = null;  // how the last frame travelled: "yuv", "jpeg" or "rgb"
  const history = [];                 // {t, s, r} for the chart
  let freshFrame = false;
  let frameWaiter = null;
  let chartDue = 0;
  let disposed = false;

  const isBrowser = () => model.get("source") === "browser";

  function fps() {
    const now = performance.now();
    while (ackTimes.length && now - ackTimes[0] > 2000) ackTimes.shift();
    if (ackTimes.length < 2) return 0;
    return (ackTimes.length - 1) / ((ackTimes[ackTimes.length - 1] - ackTimes[0]) / 1000);
  }

  // ---- drawing
  function drawOverlay() {
    const [w, h] = frameSize;
    if (overlay.width !== w || overlay.height !== h) { overlay.width = w; overlay.height = h; }
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (!model.get("running")) return;
    ctx.fillStyle = "rgba(60, 255, 170, 0.95)";
    const r = Math.max(1.5, w / 260);
    for (let i = 0; i + 1 < points.length; i += 2) {
      ctx.fillRect(points[i] * w - r / 2, points[i + 1] * h - r / 2, r, r);
    }
    if (points.length >= 4) {  // the nose tip (landmark 1), the origin of the normalised face
      ctx.fillStyle = "#ff5050";
      ctx.beginPath(); ctx.arc(points[2] * w, points[3] * h, 2 * r, 0, 2 * Math.PI); ctx.fill();
      if (others.length) {  // outline the scored face when there are several
        let x0 = 1, y0 = 1, x1 = 0, y1 = 0;
        for (let i = 0; i + 1 < points.length; i += 2) {
          x0 = Math.min(x0, points[i]); x1 = Math.max(x1, points[i]);
          y0 = Math.min(y0, points[i + 1]); y1 = Math.max(y1, points[i + 1]);
        }
        ctx.strokeStyle = "rgba(80, 230, 160, 0.9)"; ctx.lineWidth = 2 * r;
        ctx.strokeRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
      }
    }
    ctx.strokeStyle = "rgba(200, 200, 200, 0.8)"; ctx.lineWidth = r; ctx.setLineDash([6, 4]);
    for (const [x0, y0, x1, y1] of others) ctx.strokeRect(x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h);
    ctx.setLineDash([]);
  }

  function drawChart() {
    const ctx = chart.getContext("2d");
    const W = chart.width, H = chart.height, pad = 22;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "10px sans-serif"; ctx.fillStyle = "#888"; ctx.strokeStyle = "#ddd"; ctx.lineWidth = 1;
    for (const v of [0, 50, 100]) {
      const y = H - 12 - (v / 100) * (H - 20);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(W, y); ctx.stroke();
      ctx.fillText(String(v), 2, y + 3);
    }
    const thr = model.get("threshold");
    if (thr !== null && thr !== undefined) {
      const y = H - 12 - (thr / 100) * (H - 20);
      ctx.strokeStyle = "#e0a040"; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(W, y); ctx.stroke(); ctx.setLineDash([]);
    }
    ctx.fillStyle = "#888"; ctx.fillText(`last ${CHART_SECONDS} s`, W - 60, H - 1);
    const now = performance.now() / 1000;
    while (history.length && now - history[0].t > CHART_SECONDS) history.shift();
    const x = (t) => pad + (1 - (now - t) / CHART_SECONDS) * (W - pad);
    const y = (v) => H - 12 - (v / 100) * (H - 20);
    for (const [key, colour, width] of [["r", "rgba(120, 120, 220, 0.45)", 1], ["s", "#2255cc", 2]]) {
      ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
      let pen = false;
      for (const p of history) {
        if (p[key] === null || p[key] === undefined) { pen = false; continue; }
        if (!pen) { ctx.moveTo(x(p.t), y(p[key])); pen = true; } else ctx.lineTo(x(p.t), y(p[key]));
      }
      ctx.stroke();
    }
  }

  const recent = [];  // the last frames' kernel timings, for steady numbers
  function median(values) {
    if (!values.length) return null;
    const v = [...values].sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)];
  }
  function recentLatency() {
    const out = {};
    for (const [key] of STAGES) out[key] = median(recent.map((r) => r[key] || 0));
    out.total = median(recent.map((r) => STAGES.reduce((sum, [key]) => sum + (r[key] || 0), 0)));
    return out;
  }

  function showResult(msg, pointsView) {
    points = floats(pointsView);
    if (msg.timings && msg.timings.facemesh) { recent.push(msg.timings); if (recent.length > 30) recent.shift(); }
    others = msg.others || [];
    if (msg.width && msg.height) frameSize = [msg.width, msg.height];
    frameInfo = {};
    for (const key of FRAME_KEYS) if (key in msg) frameInfo[key] = msg[key];
    schedule();
    history.push({ t: performance.now() / 1000, s: msg.score, r: msg.raw_score });
    drawOverlay();
    const now = performance.now();
    if (now > chartDue) { drawChart(); chartDue = now + 100; }
  }

  // ---- the panel's text: from the latest frame's message, else from the synced traits
  // (the kernel syncs its traits a few times a second; every frame's own numbers come with its ack)
  const FRAME_KEYS = ["state", "message", "score", "raw_score", "label", "top", "calibration",
    "calibration_message", "frames", "faces"];
  let frameInfo = {};
  const cur = (key) => (key in frameInfo ? frameInfo[key] : model.get(key));
  function update() {
    const state = cur("state");
    const running = model.get("running");
    const score = cur("score");
    const raw = cur("raw_score");
    const label = cur("label");
    const calibration = cur("calibration");
    el.dataset.state = state;
    el.dataset.label = label || "";
    el.dataset.score = score === null ? "" : String(score);
    el.dataset.frames = String(cur("frames"));
    el.dataset.faces = String(cur("faces"));
    el.dataset.fps = fmt(model.get("fps"), 2);
    el.dataset.running = String(running);
    el.dataset.calibration = calibration;
    el.dataset.captureMs = fmt(median(captureMs), 1);
    el.dataset.frameFormat = lastFormat || "";
    el.dataset.roundTripMs = fmt(median(tripMs), 1);
    el.dataset.handlerMs = fmt(median(handlerMs), 1);
    el.dataset.cameraFps = fmt(videoFrames.length > 1 ? (videoFrames.length - 1) /
      ((videoFrames[videoFrames.length - 1] - videoFrames[0]) / 1000) : null, 1);

    const ok = state === "ok" || state === "multiple_faces";
    banner.textContent = cur("message") || "";
    banner.className = "fk-banner " + (ok ? "fk-ok" : "fk-warn");
    banner.style.display = banner.textContent ? "" : "none";
    labelEl.textContent = label || "–";
    labelEl.className = "fk-label fk-label-" + (label || "none");
    labelEl.style.opacity = ok ? "1" : "0.45";
    scoreEl.textContent = fmt(score, 0);
    rawEl.textContent = fmt(raw, 0);
    fill.style.width = `${score === null ? 0 : Math.max(0, Math.min(100, score))}%`;
    fill.style.opacity = ok ? "1" : "0.35";
    const thr = model.get("threshold");
    thresholdMark.style.left = `${thr}%`;
    thresholdMark.title = `decision threshold ${fmt(thr, 0)}`;
    const top = cur("top") || [];
    topEl.textContent = top.length > 2 ? "top: " + top.map(([n, p]) => `${n} ${fmt(p, 0)}`).join(" · ") : "";
    const lat = recent.length ? recentLatency() : (model.get("latency") || {});
    const parts = STAGES.map(([k, name]) => `${name} ${fmt(lat[k], 1)}`).join(" · ");
    el.dataset.latency = JSON.stringify(lat);  // the kernel's ms per stage, median of the last frames
    const kernelFps = model.get("fps");
    statsEl.textContent = `${fmt(kernelFps, 1)} fps · kernel ${fmt(lat.total, 1)} ms, median of the last frames (${parts})` +
      (roundTrip !== null && isBrowser() ? ` · round trip ${fmt(median(tripMs), 0)} ms (kernel handler ` +
        `${fmt(median(handlerMs), 1)} ms) · browser capture and ${{ yuv: "YUV", rgb: "RGB" }[lastFormat] || "JPEG"} ` +
        `${el.dataset.captureMs} ms · camera ${el.dataset.cameraFps} fps` : "") +
      ` · frames ${cur("frames")} · with a face ${cur("faces")}`;
    calibBadge.textContent = calibration === "on" ? "calibrated" : calibration === "collecting" ? "calibrating…" : "";
    calibEl.textContent = cur("calibration_message") || "";
    calibBtn.classList.toggle("fk-unavailable", calibration === "unavailable");
    calibBtn.title = calibration === "unavailable" ? cur("calibration_message") :
      `hold a neutral face for ${model.get("calibrate_s")} s; from then on the model sees your face relative to it`;
    modelEl.textContent = `${model.get("model_info")}\nsource: ${model.get("source")}`;
    startBtn.disabled = running;
    stopBtn.disabled = !running;
    if (document.activeElement !== tauInput) tauInput.value = String(model.get("smoothing_s"));
    mirror.classList.toggle("fk-browser", isBrowser());
    video.classList.toggle("fk-camera-feed", isBrowser());  // decoded, not shown: the panel shows analysed frames
    video.style.display = isBrowser() ? "" : "none";
    if (!running) drawOverlay();
  }

  // ---- browser camera
  function cameraProblem(state, message) {
    model.send({ type: "camera", state, message });
  }

  async function startBrowser() {
    if (stream) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      cameraProblem("no_camera", "this page cannot use a camera: the browser offers no camera here " +
        "(JupyterLab must be opened over https or from localhost); or use SOURCE = 'camera' (OpenCV)");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: model.get("width") }, height: { ideal: model.get("height") } }, audio: false });
    } catch (err) {
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
        cameraProblem("permission_denied", "camera permission denied: allow the camera for this page " +
          "(the camera icon in the address bar), then press Start; VS Code blocks cameras in notebook output: " +
          "there, use SOURCE = 'camera' (OpenCV)");
      } else if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
        cameraProblem("no_camera", "no camera found: connect one, or use a local camera (SOURCE = 'camera') " +
          "or a video file");
      } else if (name === "NotReadableError" || name === "TrackStartError") {
        cameraProblem("no_camera", "the camera cannot be read: is another program using it?");
      } else {
        cameraProblem("no_camera", `the camera could not be started (${name || err})`);
      }
      return;
    }
    if (disposed) { stopTracks(); return; }
    video.srcObject = stream;
    try { await video.play(); } catch (err) { /* autoplay of a muted video is allowed; frames still flow */ }
    model.send({ type: "start" });
    loop(++runId);
  }

  function stopTracks() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    view.getContext("2d").clearRect(0, 0, view.width, view.height);
  }

  function stopBrowser(tellKernel = true) {
    runId++;
    stopTracks();
    for (const resolve of pending.values()) resolve(null);
    pending.clear();
    if (tellKernel) model.send({ type: "stop" });
  }

  const videoFrames = [];  // when the camera presented frames (its frame rate, for the diagnostics)
  const captureMs = [];   // browser-side time per frame: waiting for the camera, drawing, RGB packing or JPEG encoding
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = () => {
      freshFrame = true;
      const now = performance.now();
      videoFrames.push(now);
      while (videoFrames.length && now - videoFrames[0] > 2000) videoFrames.shift();
      if (frameWaiter) { const w = frameWaiter; frameWaiter = null; freshFrame = false; w(); }
      if (!disposed) video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    freshFrame = true;
  }

  function nextVideoFrame() {
    // Send each camera frame once: wait for a frame not sent yet (at most 100 ms).
    if (freshFrame || !("requestVideoFrameCallback" in HTMLVideoElement.prototype)) {
      freshFrame = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      frameWaiter = resolve;
      setTimeout(() => { if (frameWaiter === resolve) { frameWaiter = null; resolve(); } }, 100);
    });
  }

  // How a frame travels to the kernel (the frame_format trait; README, *Live webcam demo*): "yuv", the camera's
  // own frame as WebCodecs hands it over (4:2:0 planes, 0.46 MB at 640x480: nothing to encode here, 0.1-0.2
  // ms to convert in the kernel); "jpeg" (about 40 kB, encoded here, decoded in the kernel in 0.7 ms);
  // "rgb", packed 8-bit RGB rows (0.9 MB: the round trip through JupyterLab doubles on this project's
  // machine).  "auto": "yuv" where the page comes from this machine, so the frames only cross loopback;
  // "jpeg" where they cross a network.
  function isLoopback(host) {
    host = String(host || "").toLowerCase().replace(/^\[|\]$/g, "");
    return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127\./.test(host);
  }
  function frameFormat() {
    const wanted = model.get("frame_format");
    if (wanted === "rgb" || wanted === "jpeg" || wanted === "yuv") return wanted;
    return isLoopback(window.location.hostname) ? "yuv" : "jpeg";
  }
  // The camera's frame as YUV 4:2:0 planes, tightly packed, with what the kernel needs to convert it;
  // null where this frame cannot travel so (no WebCodecs, another pixel format or colour matrix, a rotated
  // frame, odd or other sizes): it then goes as JPEG.
  const YUV_LAYOUTS = ["I420", "NV12"];
  const YUV_MATRICES = [null, "smpte170m", "bt470bg", "bt709"];  // those the kernel converts (facekit.live.YUVFrame)
  async function copyYUV(w, h) {
    if (typeof VideoFrame === "undefined") return null;
    let frame;
    try { frame = new VideoFrame(video); } catch (err) { return null; }
    try {
      const space = frame.colorSpace || {};
      const matrix = space.matrix ?? null;
      const rect = frame.visibleRect;
      if (!YUV_LAYOUTS.includes(frame.format) || !YUV_MATRICES.includes(matrix) || !rect || rect.width !== w ||
          rect.height !== h || (w % 2) || (h % 2) || frame.rotation || frame.flip) return null;
      const n = w * h;
      const layout = frame.format === "I420"
        ? [{ offset: 0, stride: w }, { offset: n, stride: w / 2 }, { offset: n + n / 4, stride: w / 2 }]
        : [{ offset: 0, stride: w }, { offset: n, stride: w }];
      const buffer = new ArrayBuffer(n + n / 2);
      await frame.copyTo(buffer, { rect: { x: rect.x, y: rect.y, width: w, height: h }, layout });
      const bitmap = await createImageBitmap(frame);
      return { buffer, bitmap, format: "yuv", layout: frame.format, matrix, fullRange: space.fullRange ?? null };
    } catch (err) {
      return null;
    } finally {
      frame.close();
    }
  }
  // RGBA pixels (getImageData) → packed RGB.  On little-endian machines (all current ones) four pixels,
  // three 32-bit words, per step.  Also the worker's code (toRGB.toString() below): no eval anywhere.
  function toRGB(rgba) {
    const n = rgba.length >> 2;
    const out = new Uint8Array(n * 3);
    let i = 0;
    if (new Uint8Array(new Uint32Array([1]).buffer)[0] === 1) {
      const src = new Uint32Array(rgba.buffer, rgba.byteOffset, n);
      const words = new Uint32Array(out.buffer, 0, (n * 3) >> 2);
      for (let j = 0; i + 3 < n; i += 4, j += 3) {  // a pixel word is 0xAABBGGRR
        const p0 = src[i], p1 = src[i + 1], p2 = src[i + 2], p3 = src[i + 3];
        words[j] = (p0 & 0xffffff) | (p1 << 24);
        words[j + 1] = ((p1 >>> 8) & 0xffff) | (p2 << 16);
        words[j + 2] = ((p2 >>> 16) & 0xff) | (p3 << 8);
      }
    }
    for (let k = i * 3; i < n; i++, k += 3) { out[k] = rgba[4 * i]; out[k + 1] = rgba[4 * i + 1]; out[k + 2] = rgba[4 * i + 2]; }
    return out.buffer;
  }

  // Encoding runs in a worker when the browser can (OffscreenCanvas), so that the page's own thread stays
  // free to handle the kernel's answers; else on the page.
  const ENCODER = `${toRGB.toString()}
  self.onmessage = async (e) => {
    const { bitmap, quality, id, format } = e.data;
    try {
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext("2d", { willReadFrequently: format === "rgb" });
      ctx.drawImage(bitmap, 0, 0);
      const w = bitmap.width, h = bitmap.height;
      bitmap.close();
      const buffer = format === "rgb" ? toRGB(ctx.getImageData(0, 0, w, h).data)
        : await (await canvas.convertToBlob({ type: "image/jpeg", quality })).arrayBuffer();
      self.postMessage({ id, buffer }, [buffer]);
    } catch (err) { self.postMessage({ id, error: String(err) }); }
  };`;
  let encoder = null;
  const encoding = new Map();
  try {
    if (typeof OffscreenCanvas !== "undefined" && typeof Worker !== "undefined" && typeof createImageBitmap !== "undefined") {
      const url = URL.createObjectURL(new Blob([ENCODER], { type: "text/javascript" }));
      encoder = new Worker(url);
      URL.revokeObjectURL(url);
      encoder.onmessage = (e) => {
        const resolve = encoding.get(e.data.id);
        encoding.delete(e.data.id);
        if (resolve) resolve(e.data.buffer || null);
      };
      encoder.onerror = () => { encoder = null; for (const r of encoding.values()) r(null); encoding.clear(); };
    }
  } catch (err) { encoder = null; }
  let encodeSeq = 0;

  const grab = document.createElement("canvas");
  async function encode(w, h, format) {
    // → {buffer: the frame, format: how it travels, bitmap: the same frame, shown when its answer comes back}
    if (format === "yuv") {
      const planes = await copyYUV(w, h);
      if (planes) return planes;
      format = "jpeg";
    }
    const bitmap = await createImageBitmap(video);
    if (encoder) {
      const id = ++encodeSeq;
      const buffer = await new Promise((resolve) => {
        encoding.set(id, resolve);
        encoder.postMessage({ bitmap, quality: model.get("jpeg_quality"), id, format });  // a copy: the page keeps its own
      });
      if (buffer) return { buffer, bitmap, format };
    }
    if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
    const ctx = grab.getContext("2d", { willReadFrequently: format === "rgb" });
    ctx.drawImage(bitmap, 0, 0, w, h);
    if (format === "rgb") return { buffer: toRGB(ctx.getImageData(0, 0, w, h).data), bitmap, format };
    const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", model.get("jpeg_quality")));
    if (!blob) { bitmap.close(); return null; }
    return { buffer: await blob.arrayBuffer(), bitmap, format };
  }

  function showFrame(bitmap) {
    // The frame the kernel analysed, so that its landmarks sit exactly on it.
    if (view.width !== bitmap.width || view.height !== bitmap.height) { view.width = bitmap.width; view.height = bitmap.height; }
    view.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
  }

  async function capture(myRun) {
    // The next camera frame not sent yet, as the frame format says (null when stopped).
    const began = performance.now();
    while (myRun === runId && !disposed) {
      if (video.readyState < 2 || !video.videoWidth) { await sleep(20); continue; }
      await nextVideoFrame();
      if (myRun !== runId) return null;
      const w = video.videoWidth, h = video.videoHeight;
      const t = performance.now();  // the frame's timestamp: the kernel smooths in this time
      const encoded = await encode(w, h, frameFormat());
      if (!encoded) continue;
      captureMs.push(performance.now() - began);
      if (captureMs.length > 30) captureMs.shift();
      if (myRun !== runId) { encoded.bitmap.close(); return null; }
      return { t, w, h, ...encoded };
    }
    return null;
  }

  async function loop(myRun) {
    // One frame in flight: the next is sent only after the kernel's ack.  The browser's own work on the
    // next frame (waiting for the camera, drawing, JPEG encoding) overlaps the kernel's work on this one.
    let next = capture(myRun);
    while (myRun === runId && !disposed) {
      const frame = await next;
      if (!frame || myRun !== runId) break;
      const id = `${viewId}:${++seq}`;
      const reply = new Promise((resolve) => {
        pending.set(id, resolve);
        setTimeout(() => { if (pending.get(id) === resolve) { pending.delete(id); resolve(null); } }, ACK_TIMEOUT_MS);
      });
      const sent = performance.now();
      model.send({ type: "frame", id, t: frame.t, width: frame.w, height: frame.h, format: frame.format, fps: fps(),
                   layout: frame.layout, matrix: frame.matrix, full_range: frame.fullRange }, undefined,
                 [frame.buffer]);
      next = capture(myRun);
      const ack = await reply;
      if (!ack) {
        frame.bitmap.close();
        if (myRun === runId) banner.textContent = "the kernel has not answered for 10 s (busy with a cell?); still trying";
        continue;
      }
      showFrame(frame.bitmap);
      const now = performance.now();
      roundTrip = now - sent;
      handlerMs.push(ack.msg.handler_ms || 0);
      tripMs.push(roundTrip);
      if (handlerMs.length > 30) { handlerMs.shift(); tripMs.shift(); }
      ackTimes.push(now);
      frameSize = [frame.w, frame.h];
      lastFormat = frame.format;
      showResult(ack.msg, ack.buffers[0]);
    }
  }

  // ---- messages from the kernel
  async function onMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "ack") {
      const resolve = pending.get(msg.id);
      if (resolve) { pending.delete(msg.id); resolve({ msg, buffers: buffers || [] }); }
    } else if (msg.type === "result") {  // a kernel source's frame
      if (buffers && buffers.length > 1 && buffers[1].byteLength) {
        try {
          const bytes = buffers[1].buffer.slice(buffers[1].byteOffset, buffers[1].byteOffset + buffers[1].byteLength);
          const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/jpeg" }));
          if (view.width !== msg.width || view.height !== msg.height) { view.width = msg.width; view.height = msg.height; }
          view.getContext("2d").drawImage(bitmap, 0, 0, msg.width, msg.height);
        } catch (err) { /* a preview that cannot be shown is skipped */ }
      }
      showResult(msg, buffers && buffers[0]);
    } else if (msg.type === "stop-camera") {  // panel.stop() in Python
      stopBrowser(false);
    } else if (msg.type === "start-camera") {  // panel.start() in Python
      if (isBrowser()) startBrowser();
    }
  }
  model.on("msg:custom", onMessage);

  // ---- controls
  startBtn.addEventListener("click", () => {
    if (isBrowser()) startBrowser(); else model.send({ type: "start" });
  });
  stopBtn.addEventListener("click", () => {
    if (isBrowser()) stopBrowser(true); else model.send({ type: "stop" });
  });
  calibBtn.addEventListener("click", () => model.send({ type: "calibrate" }));
  resetBtn.addEventListener("click", () => { history.length = 0; model.send({ type: "reset" }); drawChart(); });
  tauInput.addEventListener("change", () => {
    const v = parseFloat(tauInput.value);
    if (!Number.isNaN(v) && v >= 0) { model.set("smoothing_s", v); model.save_changes(); }
  });

  const keys = ["state", "message", "score", "raw_score", "label", "top", "threshold", "latency", "fps", "frames",
    "faces", "calibration", "calibration_message", "model_info", "source", "running", "smoothing_s"];
  let scheduled = false;
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    // the text at most 10 times a second: the page's thread is needed for the frames
    setTimeout(() => { scheduled = false; if (!disposed) update(); }, 100);
  };
  const onChange = {};
  for (const key of keys) {
    onChange[key] = () => { delete frameInfo[key]; schedule(); };  // a newer value from the kernel
    model.on(`change:${key}`, onChange[key]);
  }
  update();
  drawChart();

  return () => {
    disposed = true;
    stopBrowser(false);
    if (encoder) encoder.terminate();
    model.off("msg:custom", onMessage);
    for (const key of keys) model.off(`change:${key}`, onChange[key]);
  };
}

export default { render };
