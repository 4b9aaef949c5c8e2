"""How long a message of the live demo's sizes takes from the page to the kernel and back, with nothing else to do:
the floor under notebook 05's round trip per frame (TRAINING_DETAIL section 6.5).

Two paths, each in headless Chromium (Debian's, as ``./kit test`` installs it), each message answered at once:

- **JupyterLab**: an anywidget in a notebook sends ``model.send(..., [buffer])`` as the live panel does; the
  kernel's handler answers with a small comm message (page → JupyterLab server → kernel → server → page). The
  server is started as ``./kit lab`` starts it (``facekit.browser.Lab``).
- **raw websocket**: the same buffers sent by the page over a plain websocket to a tornado server in this
  process, answered at once: what Chromium's websocket alone costs.

Per size (16 B; 40 kB, a JPEG frame; 460,800 B, a 640×480 YUV frame; 921,600 B, packed RGB), the median of
``--messages`` round trips and, on the JupyterLab path, of its two halves (page clock against kernel clock, one
machine):

    .venv/bin/python tools/comm_roundtrip.py [--messages 30]
"""
import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from facekit import browser

SIZES = [16, 40_000, 460_800, 921_600]

# The page's side, shared by both paths: send(buffer, sentAtEpochMs) returns a promise of the answer.
MEASURE = """
async function measure(sizes, messages, send) {
  const results = {};
  for (let rep = 0; rep < 2; rep++) {            // the first round warms up; the second is reported
    for (const n of sizes) {
      const rows = [];
      for (let i = 0; i < messages; i++) {
        const t0 = performance.now();
        const answer = await send(new ArrayBuffer(n), performance.timeOrigin + t0);
        const t1 = performance.now();
        rows.push([t1 - t0, answer.got ? answer.got - (performance.timeOrigin + t0) : null,
                   answer.left ? performance.timeOrigin + t1 - answer.left : null]);
      }
      const med = (k) => {
        const v = rows.map((r) => r[k]).filter((x) => x !== null).sort((a, b) => a - b);
        return v.length ? Math.round(v[Math.floor(v.length / 2)] * 10) / 10 : null;
      };
      results[n] = {round_trip_ms: med(0), page_to_kernel_ms: med(1), kernel_to_page_ms: med(2)};
    }
  }
  return results;
}
"""

CELL = '''
import time

import anywidget
import traitlets


class Echo(anywidget.AnyWidget):
    _esm = """%s
    export default { async render({ model, el }) {
      let pending = null;
      model.on("msg:custom", (msg) => { if (pending) { const r = pending; pending = null; r(msg); } });
      const send = (buffer, sent) => new Promise((resolve) => {
        pending = resolve;
        model.send({type: "ping", sent}, undefined, [buffer]);
      });
      const results = await measure(%s, %d, send);
      el.textContent = JSON.stringify(results);
      model.set("results", JSON.stringify(results));
      model.save_changes();
    } };
    """
    results = traitlets.Unicode("").tag(sync=True)

    def __init__(self):
        super().__init__()
        self.on_msg(self._answer)

    def _answer(self, _widget, content, buffers):
        got = time.time() * 1000
        self.send({"type": "pong", "got": got, "left": time.time() * 1000})


echo = Echo()
echo
'''

PAGE = """<html><body><script>%s
(async () => {
  const ws = new WebSocket("ws://127.0.0.1:%d/ws");
  ws.binaryType = "arraybuffer";
  await new Promise((resolve) => { ws.onopen = resolve; });
  let pending = null;
  ws.onmessage = () => { if (pending) { const r = pending; pending = null; r({}); } };
  const send = (buffer) => new Promise((resolve) => { pending = resolve; ws.send(buffer); });
  window.results = await measure(%s, %d, send);
})();
</script></body></html>"""


def through_jupyterlab(tmp: Path, messages: int) -> dict:
    import nbformat
    from playwright.sync_api import sync_playwright

    notebooks = tmp / "notebooks"
    notebooks.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(CELL % (MEASURE, json.dumps(SIZES), messages))]
    nbformat.write(nb, notebooks / "echo.ipynb")
    lab = browser.Lab(tmp, notebooks, {})
    try:
        lab.wait_ready()
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=browser.CHROMIUM, headless=True, args=browser.CHROMIUM_ARGS)
            try:
                page = chromium.new_page()
                state = browser.open_notebook(page, lab, "echo.ipynb")
                if state["errors"]:
                    raise RuntimeError("\n".join(state["errors"]))
                done = browser.wait(page, browser.JS_EXECUTE, ["echo.ipynb", "print(echo.results)"],
                                    lambda r: r["out"].strip(), 300, "the widget's measurements", poll=0.5)
                return json.loads(done["out"])
            finally:
                chromium.close()
    finally:
        lab.close()


def raw_websocket(messages: int) -> dict:
    import tornado.ioloop
    import tornado.web
    import tornado.websocket
    from playwright.sync_api import sync_playwright

    port = browser.free_port()

    class Answer(tornado.websocket.WebSocketHandler):
        def on_message(self, message):
            self.write_message(b"ok", binary=True)

    class Page(tornado.web.RequestHandler):
        def get(self):
            self.write(PAGE % (MEASURE, port, json.dumps(SIZES), messages))

    def serve():
        asyncio.set_event_loop(asyncio.new_event_loop())
        app = tornado.web.Application([("/ws", Answer), ("/", Page)], websocket_max_message_size=2 ** 26,
                                      log_function=lambda handler: None)
        app.listen(port, "127.0.0.1")
        tornado.ioloop.IOLoop.current().start()

    threading.Thread(target=serve, daemon=True).start()
    time.sleep(0.5)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=browser.CHROMIUM, headless=True, args=browser.CHROMIUM_ARGS)
        try:
            page = chromium.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            return browser.wait(page, "() => window.results || null", None, bool, 300, "the page's measurements",
                                poll=0.5)
        finally:
            chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30, help="round trips per size (default 30)")
    args = parser.parse_args()
    missing = browser.missing_tools()
    if missing:
        sys.exit(f"{', '.join(missing)} not installed; ./kit test installs them")
    raw = raw_websocket(args.messages)
    with tempfile.TemporaryDirectory() as tmp:
        lab = through_jupyterlab(Path(tmp), args.messages)
    print("| message | raw websocket, round trip | JupyterLab comm, round trip | page → kernel | kernel → page |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        r, j = raw[str(n)], lab[str(n)]
        print(f"| {n:,} B | {r['round_trip_ms']} ms | {j['round_trip_ms']} ms | {j['page_to_kernel_ms']} ms | "
              f"{j['kernel_to_page_ms']} ms |")


if __name__ == "__main__":
    main()
