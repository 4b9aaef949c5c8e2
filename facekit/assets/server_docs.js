// facekit server's API page: renders /openapi.json (operations, parameters, bodies, answers) and lets you
// try each operation against this server.  No libraries, nothing fetched from elsewhere.
(() => {
  "use strict";
  const make = (tag, text, parent, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  };

  function resolve(spec, schema, depth = 0) {
    // Inline the $refs (a few levels: enough to read, never endless).
    if (!schema || typeof schema !== "object" || depth > 6) return schema;
    if (Array.isArray(schema)) return schema.map((s) => resolve(spec, s, depth + 1));
    if (schema.$ref) {
      const target = schema.$ref.replace(/^#\//, "").split("/").reduce((o, k) => (o ? o[k] : undefined), spec);
      return resolve(spec, target, depth + 1);
    }
    const out = {};
    for (const [k, v] of Object.entries(schema)) out[k] = resolve(spec, v, depth + 1);
    return out;
  }

  function tryIt(parent, path, method, op) {
    const box = make("div", null, parent, "fk-try");
    make("h4", "Try it", box);
    const content = Object.keys((op.requestBody || {}).content || {});
    let textarea = null, file = null, query = null;
    if ((op.parameters || []).some((p) => p.in === "query")) {
      const label = make("label", "query string ", box);
      query = make("input", null, label);
      query.placeholder = op.parameters.filter((p) => p.in === "query").map((p) => `${p.name}=…`).join("&");
    }
    if (content.includes("multipart/form-data")) {
      make("div", "a photo (sent as the multipart field 'file'):", box);
      file = make("input", null, box);
      file.type = "file"; file.accept = "image/jpeg,image/png";
    } else if (content.includes("application/json")) {
      make("div", "JSON body:", box);
      textarea = make("textarea", null, box);
      const schema = resolve(window.fkSpec, op.requestBody.content["application/json"].schema);
      textarea.value = JSON.stringify(schema && schema.example ? schema.example : {}, null, 1);
    }
    const button = make("button", `Send ${method.toUpperCase()} ${path}`, box);
    const out = make("pre", "", box);
    button.addEventListener("click", async () => {
      out.textContent = "…";
      const init = { method: method.toUpperCase() };
      if (file) {
        if (!file.files.length) { out.textContent = "choose a photo first"; return; }
        init.body = new FormData(); init.body.append("file", file.files[0]);
      } else if (textarea) {
        init.body = textarea.value; init.headers = { "Content-Type": "application/json" };
      }
      const started = performance.now();
      try {
        const r = await fetch(path + (query && query.value ? `?${query.value}` : ""), init);
        const text = await r.text();
        let body = text;
        try { body = JSON.stringify(JSON.parse(text), null, 1); } catch (err) { /* not JSON: shown as it is */ }
        out.textContent = `HTTP ${r.status} in ${(performance.now() - started).toFixed(0)} ms\n${body}`;
      } catch (err) { out.textContent = `no answer: ${err.message}`; }
    });
  }

  function render(spec) {
    window.fkSpec = spec;
    document.getElementById("fk-title").textContent = `${spec.info.title} ${spec.info.version}`;
    make("p", spec.info.description, document.getElementById("fk-description"));
    const ops = document.getElementById("fk-ops");
    ops.textContent = "";
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const details = make("details", null, ops, "fk-op");
        details.dataset.path = path; details.dataset.method = method;
        const summary = make("summary", null, details);
        make("span", method.toUpperCase(), summary, `fk-method fk-method-${method}`);
        make("span", path, summary);
        make("span", op.summary || "", summary, "fk-summary");
        const body = make("div", null, details, "fk-op-body");
        if (op.description) make("p", op.description, body);
        const params = op.parameters || [];
        if (params.length) {
          make("h4", "Parameters", body);
          const table = make("table", null, body);
          const head = make("tr", null, table);
          for (const h of ["name", "in", "type", "default", "description"]) make("th", h, head);
          for (const p of params) {
            const row = make("tr", null, table);
            const schema = resolve(spec, p.schema || {});
            for (const v of [p.name, p.in, schema.type || "", JSON.stringify(schema.default ?? ""),
              p.description || schema.description || ""]) make("td", v, row);
          }
        }
        if (op.requestBody) {
          make("h4", "Request body", body);
          for (const [type, media] of Object.entries(op.requestBody.content || {})) {
            make("div", type, body);
            make("pre", JSON.stringify(resolve(spec, media.schema), null, 1), body);
          }
        }
        make("h4", "Answers", body);
        for (const [code, answer] of Object.entries(op.responses || {})) {
          make("div", `${code}: ${answer.description || ""}`, body);
          const media = (answer.content || {})["application/json"];
          if (media && media.schema && Object.keys(media.schema).length) {
            make("pre", JSON.stringify(resolve(spec, media.schema), null, 1), body);
          }
        }
        tryIt(body, path, method, op);
      }
    }
  }

  fetch("/openapi.json").then((r) => r.json()).then(render).catch((err) => {
    document.getElementById("fk-ops").textContent = `could not read /openapi.json: ${err.message}`;
  });
})();
