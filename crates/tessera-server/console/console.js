// The Tessera console: plain modern JavaScript, no dependencies. It calls the
// server's own HTTP API, as any client does, with the API key the user gives
// (kept in sessionStorage: this tab only). Every text from the server is put
// in the page as text (never as HTML). docs/SERVER.md, "Console".
"use strict";

const KEY = "tessera-api-key";
const state = { key: sessionStorage.getItem(KEY) || "", access: null, timers: [] };

// ------------------------------------------------------------------ helpers

/** An element: attributes (on* are listeners), then children (strings are text). */
function h(tag, attrs, ...children) {
  const svg = ["svg", "line", "polyline", "circle", "rect", "text", "g", "title", "path"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** One API call: the JSON answer, or an ApiError with the server's message. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const e = data && data.error ? data.error : { message: String(text || r.statusText) };
    throw new ApiError(r.status, e.message + (e.limit ? ` [limit ${e.limit}]` : ""));
  }
  return data;
}

const enc = encodeURIComponent;
const path = (name, op) => `/v1/collections/${enc(name)}` + (op ? `/${op}` : "");
const canWrite = () => state.access === "write";
const fmt = (x, d = 2) => (typeof x === "number" ? (Number.isInteger(x) ? x.toLocaleString("en") : x.toFixed(d)) : x ?? "–");
const main = () => document.getElementById("main");

/** Shows a page — unless `token` is not the current route's: a page that
 * finished loading after the user moved on does not overwrite the new one. */
function show(token, ...nodes) {
  if (token !== state.token) return;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

/** Runs `f` every `ms` while the route of `token` is the current one. */
function every(token, ms, f) {
  if (token === state.token) state.timers.push(setInterval(f, ms));
}

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e));
}

/** A table of `rows` (arrays of cells) under `head`. */
function table(head, rows, attrs) {
  return h("div", { class: "scroll" },
    h("table", attrs || {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))))))));
}

function field(label, input) {
  return h("label", {}, label, input);
}

/** A button that asks again before it acts (no modal dialogs). */
function confirmButton(label, act) {
  const b = h("button", { type: "button", class: "danger" }, label);
  b.addEventListener("click", async () => {
    if (b.dataset.armed !== "1") {
      b.dataset.armed = "1";
      b.textContent = "really " + label + "?";
      return;
    }
    await act();
  });
  return b;
}

// ------------------------------------------------------------------ access

/** Asks for a key (after a 401), keeping it for this tab only. */
function keyForm(message) {
  const input = h("input", { type: "password", id: "api-key", autocomplete: "off", required: true, "aria-label": "API key" });
  return h("form", { id: "key-form", onsubmit: (ev) => {
      ev.preventDefault();
      state.key = input.value.trim();
      sessionStorage.setItem(KEY, state.key);
      state.access = null;
      route();
    } },
    h("p", {}, message || "This server needs an API key."),
    h("div", { class: "row" }, field("API key", input), h("button", { type: "submit" }, "Use key")),
    h("p", { class: "muted" }, "The key stays in this browser tab only (sessionStorage)."));
}

async function ensureAccess(t) {
  if (state.access) return true;
  try {
    const a = await api("GET", "/v1/access");
    state.access = a.access;
    const who = document.getElementById("who");
    who.replaceChildren(a.keys ? `${a.access === "write" ? "read-write" : "read-only"} key ` : "no keys configured ",
      a.keys ? h("button", { type: "button", class: "quiet", id: "forget-key", onclick: () => {
        sessionStorage.removeItem(KEY);
        state.key = "";
        state.access = null;
        route();
      } }, "forget key") : "");
    document.body.dataset.access = a.access;
    return true;
  } catch (e) {
    if (e.status === 401) {
      show(t, h("h1", {}, "Sign in"), keyForm(state.key ? "The server refused this key: " + e.message : null));
      return false;
    }
    show(t, errorBox(e));
    return false;
  }
}

// ------------------------------------------------------------------ collections

async function collectionsPage(t) {
  const [list, kernel] = await Promise.all([api("GET", "/v1/collections"), serverKernel()]);
  const rows = list.collections.map((c) => [
    h("td", {}, h("a", { href: `#/c/${enc(c.name)}`, class: "collection" }, c.name)),
    fmt(c.documents), fmt(c.tokens), fmt(c.segment_bytes_per_token || c.bytes_per_token, 1), fmt(c.segments),
    c.index, c.storage, c.screening, c.ranking ? c.ranking.rank : "–", c.model ? c.model.name : "–",
    canWrite() ? h("td", {}, h("div", { class: "row" },
      h("button", { type: "button", class: "quiet write", onclick: () => act(() => api("POST", path(c.name, "flush"), {})) }, "flush"),
      h("button", { type: "button", class: "quiet write", onclick: () => act(() => api("POST", path(c.name, "compact"), {})) }, "compact"),
      confirmButton("drop", () => act(() => api("DELETE", path(c.name)))))) : "",
  ]);
  const head = ["name", "documents", "tokens", "bytes/token", "segments", "index", "storage", "screening", "ranking", "model"];
  if (canWrite()) head.push("");
  show(t, h("h1", {}, "Collections"),
    h("p", { class: "muted", id: "kernel" }, "MaxSim kernel: ", kernel || "unknown"),
    table(head, rows, { id: "collections" }),
    list.collections.length ? null : h("p", { class: "muted" }, "No collections yet."),
    canWrite() ? createForm() : null);
}

async function act(f) {
  try {
    await f();
    route();
  } catch (e) {
    main().prepend(errorBox(e));
  }
}

function createForm() {
  const sel = (name, options) => h("select", { name }, options.map((o) => h("option", { value: o }, o)));
  const form = h("form", { id: "create", class: "write" },
    h("h2", {}, "Create a collection"),
    h("div", { class: "row" },
      field("name", h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}" })),
      field("dim", h("input", { name: "dim", type: "number", min: 1, max: 4096, required: true })),
      field("index", sel("index", ["pooled", "muvera", "centroids", "none"])),
      field("text", sel("text", ["english", "plain", "cjk", "none"])),
      field("storage", sel("storage", ["f16", "int8", "residual2", "residual4"])),
      field("screening", sel("screening", ["none", "binary"])),
      h("button", { type: "submit" }, "Create")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = Object.fromEntries(f.entries());
    body.dim = Number(body.dim);
    act(() => api("POST", "/v1/collections", body));
  });
  return form;
}

// ------------------------------------------------------------------ one collection

function tabs(name, current) {
  const link = (label, hash) => h("a", { href: hash, "aria-current": current === label ? "page" : null }, label);
  return h("nav", { class: "tabs", "aria-label": "collection" },
    link("overview", `#/c/${enc(name)}`), link("search", `#/c/${enc(name)}/search`), link("recall", `#/c/${enc(name)}/recall`));
}

function statsList(c) {
  const items = [
    ["documents", fmt(c.documents)], ["tokens", fmt(c.tokens)], ["segments", fmt(c.segments)],
    ["memtable documents", fmt(c.memtable_documents)], ["bytes on disk", fmt(c.bytes_on_disk)],
    ["bytes / token", fmt(c.bytes_per_token)], ["segment bytes / token", fmt(c.segment_bytes_per_token, 1)],
    ["dim", c.dim], ["index", c.index], ["storage", c.storage], ["screening", c.screening], ["text", c.text],
    ["ranking", c.ranking ? c.ranking.rank : "–"], ["model", c.model ? c.model.name : "–"],
  ];
  if (c.centroids) items.push(["centroids", fmt(c.centroids)]);
  const pool = c.settings ? c.settings.pool_factor : 1;
  if (pool > 1 || c.given_tokens > c.tokens) {
    items.push(["pooling", `factor ${pool}; ${fmt(c.given_tokens)} tokens given, ${(100 * c.tokens / Math.max(1, c.given_tokens)).toFixed(1)} % kept`]);
  }
  if (c.last_flush_error) items.push(["last flush error", c.last_flush_error]);
  if (c.quarantine) items.push(["quarantine", c.quarantine.join(", ")]);
  return h("dl", { class: "stats", id: "stats" }, items.map(([k, v]) => h("div", { "data-stat": k }, h("dt", {}, k), h("dd", {}, v))));
}

/** A small line plot of `series` ([{label, values, cls}]) over time. */
function sparkline(series) {
  const W = 360, H = 90, P = 6;
  const n = Math.max(...series.map((s) => s.values.length), 2);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const pts = (vs) => vs.map((v, i) => `${P + (i * (W - 2 * P)) / (n - 1)},${H - P - (v / max) * (H - 2 * P)}`).join(" ");
  return h("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": series.map((s) => s.label).join(", ") + " over time" },
    series.map((s) => h("polyline", { class: s.cls, points: pts(s.values) })),
    series.map((s, i) => h("text", { x: P, y: 12 + i * 12 }, `${s.label}: ${s.values[s.values.length - 1] ?? "–"}`)));
}

async function collectionPage(name, t) {
  const info = await api("GET", path(name));
  const history = { documents: [info.documents], segments: [info.segments], memtable: [info.memtable_documents] };
  const statsBox = h("div", {}, statsList(info));
  const spark = h("div", { id: "history" }, sparkline(series(history)));
  const segs = h("div", {}, segmentsPlot(info.segment_sizes));
  const docs = h("div", { id: "documents" });
  const lookup = h("div", { id: "lookup" });
  show(t, h("h1", {}, name), tabs(name, "overview"), statsBox,
    h("h2", {}, "While this page is open"), spark,
    h("h2", {}, "Segments"), segs,
    h("h2", {}, "Documents"), getForm(name, lookup), lookup, docs,
    h("h2", {}, "Settings"), h("pre", { id: "settings" }, JSON.stringify(info.settings, null, 2)));
  every(t, 2000, async () => {
    try {
      const c = await api("GET", path(name));
      history.documents.push(c.documents);
      history.segments.push(c.segments);
      history.memtable.push(c.memtable_documents);
      for (const k of Object.keys(history)) if (history[k].length > 90) history[k].shift();
      statsBox.replaceChildren(statsList(c));
      segs.replaceChildren(segmentsPlot(c.segment_sizes));
      spark.replaceChildren(sparkline(series(history)));
    } catch (_) { /* the next tick tries again */ }
  });
  await documentsPage(name, docs, null);
}

/** A bar per segment: its file's bytes, labelled with its live documents. */
function segmentsPlot(sizes) {
  if (!sizes || !sizes.length) return h("p", { class: "muted", id: "segments" }, "No segments yet: documents are in the memtable.");
  const W = 640, H = 180, L = 8, B = 28, T = 16;
  const max = Math.max(1, ...sizes.map((x) => x.bytes));
  const bw = (W - 2 * L) / sizes.length;
  return h("svg", { id: "segments", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "segment sizes" },
    sizes.map((x, i) => {
      const hgt = (x.bytes / max) * (H - T - B);
      return h("g", {},
        h("rect", { class: "bar", x: L + i * bw + 2, width: Math.max(1, bw - 4), y: H - B - hgt, height: hgt, "data-bytes": x.bytes, "data-documents": x.documents },
          h("title", {}, `segment ${i + 1}: ${fmt(x.documents)} documents, ${fmt(x.tokens)} tokens, ${fmt(x.bytes)} bytes`)),
        sizes.length <= 24 ? h("text", { x: L + i * bw + 2, y: H - B + 14 }, fmt(x.documents)) : null);
    }),
    h("text", { x: L, y: 12 }, `largest: ${fmt(max)} bytes; labels: live documents`));
}

function series(hist) {
  return [
    { label: "documents", values: hist.documents, cls: "line" },
    { label: "segments", values: hist.segments, cls: "line2" },
  ];
}

async function documentsPage(name, box, after) {
  const page = await api("POST", path(name, "scan"), after ? { limit: 20, after } : { limit: 20 });
  const rows = page.documents.map((d) => [
    h("td", {}, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); showDocument(name, d.id); } }, d.id)),
    fmt(d.n_tokens), h("td", { class: "wrap" }, d.text ?? ""), h("td", { class: "wrap" }, d.payload === undefined ? "" : JSON.stringify(d.payload)),
  ]);
  box.replaceChildren(table(["id", "tokens", "text", "payload"], rows, { id: "document-list" }),
    page.next ? h("button", { type: "button", class: "quiet", id: "next-page", onclick: () => documentsPage(name, box, page.next) }, "next page") : null);
}

function getForm(name, box) {
  const input = h("input", { name: "id", required: true, "aria-label": "document id" });
  return h("form", { id: "get", onsubmit: (ev) => { ev.preventDefault(); showDocument(name, input.value); } },
    h("div", { class: "row" }, field("document id", input), h("button", { type: "submit" }, "Get")));
}

async function showDocument(name, id) {
  const box = document.getElementById("lookup");
  try {
    const r = await api("POST", path(name, "get"), { ids: [id], tokens: "none" });
    if (!r.documents.length) {
      box.replaceChildren(h("p", { class: "muted" }, `No document ${JSON.stringify(id)}.`));
      return;
    }
    const d = r.documents[0];
    box.replaceChildren(h("div", { class: "panel", id: "document" },
      h("p", {}, h("strong", {}, d.id), ` — ${d.n_tokens} tokens`),
      d.text ? h("p", { class: "doc-text" }, d.text) : null,
      d.payload !== undefined ? h("pre", {}, JSON.stringify(d.payload, null, 2)) : null,
      canWrite() ? confirmButton("delete", async () => {
        await api("POST", path(name, "delete"), { ids: [d.id] });
        route();
      }) : null));
  } catch (e) {
    box.replaceChildren(errorBox(e));
  }
}

// ------------------------------------------------------------------ search playground

/** A JSON value as Python source. */
function toPy(v) {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (Array.isArray(v)) return "[" + v.map(toPy).join(", ") + "]";
  if (typeof v === "object") return "{" + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ": " + toPy(x)).join(", ") + "}";
  return JSON.stringify(v);
}

function curlOf(name, body) {
  const auth = state.key ? ` -H "Authorization: Bearer $TESSERA_API_KEY"` : "";
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  return `curl -s${auth} -H 'Content-Type: application/json' ${location.origin}${path(name, "search")} -d '${json}'`;
}

function pythonOf(name, body) {
  const { tokens, query_text, k, ...rest } = body;
  const query = tokens ? `np.array(${toPy(tokens)}, dtype=np.float32)` : query_text !== undefined ? toPy(query_text) : "None";
  const opts = Object.entries(rest).map(([key, v]) => `, ${key}=${toPy(v)}`).join("");
  return [
    "import os" + (tokens ? "\nimport numpy as np" : ""),
    "import tessera",
    "",
    `client = tessera.Client(${toPy(location.origin)}${state.key ? ', api_key=os.environ["TESSERA_API_KEY"]' : ""})`,
    `col = client.collection(${toPy(name)})`,
    `hits = col.search(${query}, k=${k ?? 10}${opts})`,
    "for h in hits:",
    "    print(h.id, h.score)",
  ].join("\n");
}

async function searchPage(name, t) {
  const info = await api("GET", path(name));
  const q = (n, attrs) => h("input", Object.assign({ name: n }, attrs || {}));
  const queryKind = h("select", { name: "kind" },
    info.model ? h("option", { value: "text" }, "text (the collection's model)") : null,
    h("option", { value: "tokens" }, "token matrix (JSON)"),
    info.text !== "none" ? h("option", { value: "bm25" }, "BM25 text only") : null);
  const form = h("form", { id: "search" },
    h("div", { class: "row" }, field("query", queryKind), field("k", q("k", { type: "number", min: 1, value: 10 })),
      field("candidates", q("candidates", { type: "number", min: 1, placeholder: "default" })),
      h("label", { class: "check" }, q("exact", { type: "checkbox" }), " exact")),
    field("query text, or tokens as [[…], …]", h("textarea", { name: "query", required: true, rows: 4 })),
    h("div", { class: "row" },
      field("BM25 text (hybrid)", q("text", { placeholder: "none" })),
      field("fusion", h("select", { name: "fusion" }, ["", "rrf", "weighted"].map((f) => h("option", { value: f }, f || "default")))),
      field("rank", h("select", { name: "rank" }, ["", "maxsim", "linear"].map((f) => h("option", { value: f }, f || "collection's")))),
      field("rank_norm", h("select", { name: "rank_norm" }, ["", "minmax", "zscore"].map((f) => h("option", { value: f }, f || "default"))))),
    field("filter (JSON)", h("textarea", { name: "filter", rows: 2, placeholder: '{"field": "lang", "eq": "en"}' })),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Search"),
      h("button", { type: "button", class: "quiet", id: "copy-curl" }, "copy as curl"),
      h("button", { type: "button", class: "quiet", id: "copy-python" }, "copy as Python")));
  const out = h("div", { id: "results" });
  const code = h("pre", { id: "code", hidden: true });
  show(t, h("h1", {}, name), tabs(name, "search"), form, code, out);

  /** The request the form describes, as the HTTP API spells it. */
  const request = () => {
    const f = new FormData(form);
    const body = { k: Number(f.get("k")) || 10 };
    const text = String(f.get("query") || "").trim();
    const kind = f.get("kind");
    if (kind === "tokens") {
      try { body.tokens = JSON.parse(text); } catch (e) { throw new Error("tokens: not JSON: " + e.message); }
    } else if (kind === "text") body.query_text = text;
    else body.text = text;
    if (f.get("candidates")) body.candidates = Number(f.get("candidates"));
    if (f.get("exact")) body.exact = true;
    if (f.get("text") && kind !== "bm25") body.text = String(f.get("text"));
    for (const k of ["fusion", "rank", "rank_norm"]) if (f.get(k)) body[k] = String(f.get(k));
    const filter = String(f.get("filter") || "").trim();
    if (filter) {
      try { body.filter = JSON.parse(filter); } catch (e) { throw new Error("filter: not JSON: " + e.message); }
    }
    return body;
  };
  const showCode = async (text) => {
    code.hidden = false;
    code.textContent = text;
    try { await navigator.clipboard.writeText(text); } catch (_) { /* shown, to copy by hand */ }
  };
  form.querySelector("#copy-curl").addEventListener("click", () => { try { showCode(curlOf(name, request())); } catch (e) { out.replaceChildren(errorBox(e)); } });
  form.querySelector("#copy-python").addEventListener("click", () => { try { showCode(pythonOf(name, request())); } catch (e) { out.replaceChildren(errorBox(e)); } });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = request();
      const t = performance.now();
      const r = await api("POST", path(name, "search"), body);
      const ms = performance.now() - t;
      const components = r.hits.some((x) => x.components && x.components.length);
      const head = ["#", "id", "score", "text", "payload"];
      if (components) head.push("components");
      out.replaceChildren(
        h("p", { class: "muted" }, `${r.hits.length} hits, ${r.mode}`, r.candidates !== undefined ? `, ${JSON.stringify(r.candidates)} candidates` : "", `, ${ms.toFixed(1)} ms`),
        table(head, r.hits.map((x, i) => {
          const row = [i + 1, h("td", { class: "hit-id" }, x.id), h("td", { class: "hit-score" }, String(x.score)),
            h("td", { class: "wrap" }, x.text ?? ""), h("td", { class: "wrap" }, x.payload === undefined ? "" : JSON.stringify(x.payload))];
          if (components) row.push(h("td", { class: "wrap" }, (x.components || []).map((c) => `${c.signal}: ${fmt(c.value, 3)}×${fmt(c.weight, 2)}`).join("; ")));
          return row;
        }), { id: "hits" }));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  });
}

// ------------------------------------------------------------------ recall

/** The recall curve: recall@k against candidates (log scale), one dot per setting. */
function recallPlot(curve) {
  const W = 640, H = 320, L = 48, R = 16, T = 16, B = 40;
  const xs = curve.points.map((p) => p.candidates);
  const lo = Math.log2(Math.min(...xs)), hi = Math.log2(Math.max(...xs));
  const x = (c) => L + (hi === lo ? (W - L - R) / 2 : ((Math.log2(c) - lo) / (hi - lo)) * (W - L - R));
  const y = (r) => T + (1 - r) * (H - T - B);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((r) => [
    h("line", { class: "grid", x1: L, x2: W - R, y1: y(r), y2: y(r) }),
    h("text", { x: 6, y: y(r) + 4 }, r.toFixed(2)),
  ]);
  const line = h("polyline", { class: "line", points: curve.points.map((p) => `${x(p.candidates)},${y(p.recall)}`).join(" ") });
  const dots = curve.points.map((p) => h("circle", { class: "dot", cx: x(p.candidates), cy: y(p.recall), r: 4,
    "data-candidates": p.candidates, "data-recall": p.recall, "data-nprobe": p.nprobe ?? null, "data-rerank": p.rerank ?? null },
    h("title", {}, `${p.candidates} candidates: recall ${p.recall.toFixed(4)}, p50 ${p.p50_ms.toFixed(2)} ms`)));
  const labels = curve.points.map((p) => h("text", { x: x(p.candidates) - 8, y: H - B + 16 }, String(p.candidates)));
  return h("svg", { id: "recall-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": `recall@${curve.k} of the exact top-${curve.k} against candidates` },
    grid, h("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }), line, dots, labels,
    h("text", { x: W / 2 - 30, y: H - 6 }, "candidates"));
}

async function recallPage(name, t) {
  const info = await api("GET", path(name));
  const input = (n, v, attrs) => h("input", Object.assign({ name: n, value: v }, attrs || {}));
  const form = h("form", { id: "recall" },
    h("p", { class: "muted" }, "Documents of this collection used as queries are searched exactly and at each candidate count; the plot is the share of the exact top-k each keeps."),
    h("div", { class: "row" },
      field("sample", input("sample", Math.min(100, Math.max(1, info.documents)), { type: "number", min: 1, max: 1000 })),
      field("k", input("k", 10, { type: "number", min: 1 })),
      field("candidates (comma-separated, empty: a ladder)", input("candidates", "")),
      info.index === "centroids" ? field("nprobe (comma-separated)", input("nprobe", "")) : null,
      info.screening === "binary" ? field("rerank (comma-separated)", input("rerank", "")) : null,
      field("query tokens", input("query_tokens", 32, { type: "number", min: 1 })),
      field("seed", input("seed", 0, { type: "number", min: 0 })),
      h("button", { type: "submit" }, "Measure")));
  const out = h("div", { id: "recall-out" });
  show(t, h("h1", {}, name), tabs(name, "recall"), form, out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const list = (k) => String(f.get(k) || "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    const body = { sample: Number(f.get("sample")), k: Number(f.get("k")), query_tokens: Number(f.get("query_tokens")), seed: Number(f.get("seed")) };
    for (const k of ["candidates", "nprobe", "rerank"]) if (list(k).length) body[k] = list(k);
    out.replaceChildren(h("p", { class: "muted" }, "Measuring…"));
    try {
      const c = await api("POST", path(name, "recall"), body);
      const rows = c.points.map((p) => [fmt(p.candidates), p.nprobe ?? "–", p.rerank ?? "–", p.recall.toFixed(4), p.p50_ms.toFixed(2), (c.exact_p50_ms / Math.max(p.p50_ms, 1e-9)).toFixed(1) + "×"]);
      out.replaceChildren(recallPlot(c),
        h("p", { class: "muted" }, `${c.queries.length} queries of ${c.query_tokens} tokens, k = ${c.k}, ${fmt(c.documents)} documents; exact search p50 ${c.exact_p50_ms.toFixed(2)} ms`),
        table(["candidates", "nprobe", "rerank", `recall@${c.k}`, "p50 ms", "faster than exact"], rows, { id: "recall-points" }));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  });
}

// ------------------------------------------------------------------ server

/** Prometheus text as [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function serverKernel() {
  try {
    const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
    const r = await fetch("/metrics", { headers });
    if (!r.ok) return null;
    const info = parseMetrics(await r.text()).find((m) => m.name === "tessera_build_info");
    return info ? `${info.labels.kernel} (int8: ${info.labels.int8_kernel}, chosen by ${info.labels.chosen_by})` : null;
  } catch (_) {
    return null;
  }
}

/** A bucket bound (`le`, in seconds) for an axis: 0.8ms, 51ms, 3.3s, ∞. */
function seconds(le) {
  if (le === "+Inf") return "∞";
  const s = Number(le);
  return s >= 1 ? `${+s.toPrecision(2)}s` : `${+(s * 1000).toPrecision(2)}ms`;
}

/** Bars of a latency histogram (cumulative buckets → counts per bucket). */
function histogramPlot(buckets) {
  const W = 640, H = 220, L = 40, B = 40, T = 12;
  const counts = buckets.map((b, i) => b.value - (i ? buckets[i - 1].value : 0));
  const max = Math.max(1, ...counts);
  const bw = (W - L - 8) / Math.max(1, counts.length);
  return h("svg", { id: "latency-plot", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "search latency histogram" },
    counts.map((c, i) => h("rect", { class: "bar", x: L + i * bw + 1, width: Math.max(1, bw - 2), y: T + (1 - c / max) * (H - T - B), height: (c / max) * (H - T - B), "data-le": buckets[i].labels.le, "data-count": c },
      h("title", {}, `≤ ${seconds(buckets[i].labels.le)}: ${c}`))),
    buckets.map((b, i) => (i % 3 === 0 ? h("text", { x: L + i * bw, y: H - B + 14 }, seconds(b.labels.le)) : null)),
    h("text", { x: 4, y: T + 8 }, String(max)));
}

/** Live recall per collection (`serve --live-recall-rate`), and its history while the page is open. */
function liveRecall(ms, history) {
  const by = (name) => Object.fromEntries(ms.filter((m) => m.name === name).map((m) => [m.labels.collection, m.value]));
  const queries = by("tessera_live_recall_queries_total"), sums = by("tessera_live_recall_sum_total"), skipped = by("tessera_live_recall_skipped_total");
  const names = Object.keys(queries).sort();
  if (!names.length) return h("p", { class: "muted", id: "live-recall" }, "Off: start the server with --live-recall-rate to check a share of the two-stage answers against exact search.");
  for (const n of names) {
    const hist = history[n] || (history[n] = { last: null, means: [] });
    if (hist.last && queries[n] > hist.last.q) hist.means.push(+((sums[n] - hist.last.s) / (queries[n] - hist.last.q)).toFixed(4));
    if (hist.means.length > 90) hist.means.shift();
    hist.last = { q: queries[n], s: sums[n] };
  }
  return h("div", { id: "live-recall" },
    table(["collection", "answers checked", "mean recall@k", "skipped (busy)"],
      names.map((n) => [n, fmt(queries[n]), h("td", { class: "live-mean", "data-collection": n }, queries[n] ? (sums[n] / queries[n]).toFixed(4) : "–"), fmt(skipped[n] || 0)])),
    names.filter((n) => history[n].means.length > 1).map((n) => sparkline([{ label: `${n}: recall per interval`, values: history[n].means, cls: "line" }])));
}

async function serverPage(t) {
  const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
  const live = {};
  let previous = null; // the last scrape's request counts, for rates
  const draw = async (box) => {
    const r = await fetch("/metrics", { headers });
    if (!r.ok) throw new ApiError(r.status, "metrics: " + r.status);
    const ms = parseMetrics(await r.text());
    const routes = [...new Set(ms.filter((m) => m.name === "tessera_request_duration_seconds_bucket").map((m) => `${m.labels.protocol} ${m.labels.route}`))].sort();
    const search = routes.find((r) => r.endsWith("/search")) || routes[0];
    const buckets = ms.filter((m) => m.name === "tessera_request_duration_seconds_bucket" && `${m.labels.protocol} ${m.labels.route}` === search);
    const requests = ms.filter((m) => m.name === "tessera_requests_total").sort((a, b) => b.value - a.value);
    const keyOf = (m) => `${m.labels.protocol} ${m.labels.route} ${m.labels.status}`;
    const now = performance.now();
    const rate = (m) => {
      if (!previous) return "–";
      const before = previous.counts[keyOf(m)] || 0;
      return ((m.value - before) / ((now - previous.at) / 1000)).toFixed(2);
    };
    const kernel = ms.find((m) => m.name === "tessera_build_info");
    box.replaceChildren(
      kernel ? h("p", { class: "muted" }, `version ${kernel.labels.version}, MaxSim kernel ${kernel.labels.kernel} (int8: ${kernel.labels.int8_kernel})`) : null,
      h("h2", {}, "Latency: ", search || "no requests yet"), buckets.length ? histogramPlot(buckets) : h("p", { class: "muted" }, "No requests yet."),
      h("h2", {}, "Live recall"), liveRecall(ms, live),
      h("h2", {}, "Requests"), table(["protocol", "route", "status", "count", "per second (since the last refresh)"],
        requests.map((m) => [m.labels.protocol, m.labels.route, m.labels.status, fmt(m.value), rate(m)]), { id: "requests" }));
    previous = { at: now, counts: Object.fromEntries(requests.map((m) => [keyOf(m), m.value])) };
  };
  const box = h("div", { id: "server" });
  show(t, h("h1", {}, "Server"), box);
  await draw(box);
  every(t, 5000, () => draw(box).catch(() => {}));
}

// ------------------------------------------------------------------ backups

async function backupsPage(t) {
  let list;
  try {
    list = await api("GET", "/v1/backups");
  } catch (e) {
    if (e.status === 400) {
      show(t, h("h1", {}, "Backups"), h("p", { class: "muted", id: "no-backups" }, e.message));
      return;
    }
    throw e;
  }
  const when = (secs) => new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const form = canWrite() ? h("form", { id: "take-backup", class: "write", onsubmit: (ev) => {
      ev.preventDefault();
      const name = new FormData(ev.target).get("name");
      act(() => api("POST", "/v1/backup", name ? { name } : {}));
    } },
    h("div", { class: "row" }, field("name (empty: backup-<time>)", h("input", { name: "name", pattern: "[A-Za-z0-9_\\-]{1,64}" })),
      h("button", { type: "submit" }, "Take a backup"))) : null;
  show(t, h("h1", {}, "Backups"),
    h("p", { class: "muted" }, "Consistent copies written while the server keeps serving (restore with `tessera restore`)."),
    form,
    table(["name", "written", "collections", "bytes"], list.backups.map((b) => [h("td", { class: "backup-name" }, b.name), when(b.modified), b.collections.join(", "), fmt(b.bytes)]), { id: "backups" }),
    list.backups.length ? null : h("p", { class: "muted" }, "No backups yet."));
}

// ------------------------------------------------------------------ routing

async function route() {
  const t = (state.token = {});
  if (!(await ensureAccess(t))) return;
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/c\/([^/]+)(?:\/(search|recall))?$/);
  try {
    if (m) {
      const name = decodeURIComponent(m[1]);
      await (m[2] === "search" ? searchPage(name, t) : m[2] === "recall" ? recallPage(name, t) : collectionPage(name, t));
    } else if (hash === "#/server") {
      await serverPage(t);
    } else if (hash === "#/backups") {
      await backupsPage(t);
    } else {
      await collectionsPage(t);
    }
    document.title = "Tessera console — " + (m ? decodeURIComponent(m[1]) : hash === "#/server" ? "server" : "collections");
  } catch (e) {
    if (e.status === 401) {
      state.access = null;
      show(t, h("h1", {}, "Sign in"), keyForm("The server refused this key: " + e.message));
    } else show(t, h("h1", {}, "Error"), errorBox(e));
  }
}

window.addEventListener("hashchange", route);
route();
