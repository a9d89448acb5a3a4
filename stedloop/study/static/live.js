// Live view: the server pushes the session snapshot (server-sent events); polling if SSE fails.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0b7285"];
const SVG = "http://www.w3.org/2000/svg";
let lastFrameKey = null;
let lastOverviewKey = null;

function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v).toPrecision(digits);
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A small line/scatter plot: series = [{name, points: [[x, y]], colour, dots, line}].
function plot(svg, series, xLabel, yLabel, highlight) {
  svg.replaceChildren();
  const w = svg.clientWidth || 360, h = svg.clientHeight || 220;
  const m = { l: 48, r: 12, t: 10, b: 34 };
  const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && Number.isFinite(p[1]));
  if (!all.length) {
    svg.append(el("text", { x: w / 2, y: h / 2, "text-anchor": "middle", fill: "#5b6673" }, "no data yet"));
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const sy = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  svg.append(el("line", { x1: m.l, y1: h - m.b, x2: w - m.r, y2: h - m.b, stroke: "#8b949e" }));
  svg.append(el("line", { x1: m.l, y1: m.t, x2: m.l, y2: h - m.b, stroke: "#8b949e" }));
  for (const [v, y] of [[y0, h - m.b], [y1, m.t + 8]]) {
    svg.append(el("text", { x: m.l - 4, y, "text-anchor": "end", "font-size": 10, fill: "#5b6673" }, fmt(v)));
  }
  for (const [v, x] of [[x0, m.l], [x1, w - m.r]]) {
    svg.append(el("text", { x, y: h - m.b + 12, "text-anchor": "middle", "font-size": 10, fill: "#5b6673" }, fmt(v)));
  }
  svg.append(el("text", { x: (w + m.l) / 2, y: h - 4, "text-anchor": "middle", "font-size": 11 }, xLabel));
  svg.append(el("text", { x: 12, y: (h - m.b) / 2, "font-size": 11, transform: `rotate(-90 12 ${(h - m.b) / 2})`, "text-anchor": "middle" }, yLabel));
  series.forEach((s, i) => {
    const colour = s.colour || COLOURS[i % COLOURS.length];
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (s.line !== false && pts.length > 1) {
      svg.append(el("polyline", { points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none", stroke: colour, "stroke-width": 1.6 }));
    }
    for (const p of pts) {
      const big = highlight && highlight.has(p[2]);
      svg.append(el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: big ? 4.5 : 2.6, fill: big ? "#d9480f" : colour, "data-frame": p[2] ?? "" }));
    }
  });
  if (series.length > 1) {  // legend: one line per series, on a pale backing
    const legend = el("g", {});
    legend.append(el("rect", { x: m.l + 4, y: m.t, width: 190, height: 13 * series.length + 4, fill: "#fff", opacity: 0.85 }));
    series.forEach((s, i) => {
      legend.append(el("text", { x: m.l + 8, y: m.t + 12 + 13 * i, "font-size": 10, fill: s.colour || COLOURS[i % COLOURS.length] }, s.name));
    });
    svg.append(legend);
  }
}

function rows(table, pairs) {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const [k, v] of pairs) {
    const tr = document.createElement("tr");
    const th = document.createElement("th"); th.textContent = k;
    const td = document.createElement("td"); td.textContent = v;
    tr.append(th, td);
    body.append(tr);
  }
}

function frameRows(f) {
  if (!f) return [["", "–"]];
  return [
    ["frame", String(f.frame)],
    ...Object.entries(f.values || {}).map(([k, v]) => [k, fmt(v)]),
    ["combined", fmt(f.combined)],
    ...Object.entries(f.params || {}).map(([k, v]) => [k, fmt(v)]),
  ];
}

// Where the session's first settings came from: earlier sessions (warm start) or nothing.
function warmLine(sess, warm) {
  if (!sess) return "";
  if (!warm) return "Cold start: no earlier sessions.";
  const from = (warm.sessions || []).join(", ") || "–";
  return `Warm-started from ${from}${warm.auto ? " (auto)" : ""}: ${warm.observations ?? 0} earlier frames, ` +
    `${(warm.prior_points || []).length} prior setting(s).`;
}

// One row per frame, newest first: its optimizer step and, for a prior frame, its origin.
function frameTable(frames) {
  const body = $("frames-table").querySelector("tbody");
  body.replaceChildren(...frames.slice().reverse().map((f) => {
    const tr = document.createElement("tr");
    tr.dataset.frame = String(f.frame);
    for (const v of [String(f.frame), f.status || "–", f.source || "–", f.prior_from || "–", fmt(f.combined)]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    return tr;
  }));
}

// The latest overview, redrawn when a frame lands on one of its regions.
function overview(sess, overviews) {
  const latest = sess && overviews && overviews.length ? overviews[overviews.length - 1] : null;
  const img = $("overview");
  if (!latest) {
    img.hidden = true;
    lastOverviewKey = null;
    $("overview-caption").textContent = "No overview: regions come from the tiling.";
    return;
  }
  const key = `${sess.id}/${latest.overview}/${(latest.frames || []).join(",")}`;
  if (key !== lastOverviewKey) {
    lastOverviewKey = key;
    img.src = `/api/live/overview/${encodeURIComponent(sess.id)}/${latest.overview}.png?frames=${(latest.frames || []).length}`;
    img.hidden = false;
  }
  const a = latest.area || {};
  $("overview-caption").textContent = `overview ${latest.overview} (before frame ${latest.before_frame ?? "–"}), ` +
    `${fmt(a.width_um)} x ${fmt(a.height_um)} µm at (${fmt(a.x_um)}, ${fmt(a.y_um)}) µm: ` +
    `${latest.regions_picked} regions picked (dashed), frames imaged on them: ${(latest.frames || []).join(", ") || "none yet"}` +
    (overviews.length > 1 ? ` (${overviews.length} overviews so far)` : "");
}

function render(s) {
  document.body.dataset.version = String(s.version);
  $("conn").textContent = s.connected ? `connected to ${s.address}` : `not connected: ${s.error || "…"}`;
  const sess = s.session;
  $("session-line").textContent = sess
    ? `Session ${sess.id} — ${sess.state} — ${sess.frames_done ?? s.frames.length}${sess.budget_frames ? " of " + sess.budget_frames : ""} frames`
    : "No session yet.";
  $("session-line").dataset.state = sess ? sess.state : "";
  $("warm-line").textContent = warmLine(sess, s.warm_start);
  const pct = sess && sess.budget_frames ? (100 * (sess.frames_done || 0)) / sess.budget_frames : 0;
  $("progress-bar").style.width = `${pct}%`;
  rows($("latest"), frameRows(s.latest));
  rows($("best"), frameRows(s.best));
  if (s.latest && sess) {
    const key = `${sess.id}/${s.latest.frame}`;
    if (key !== lastFrameKey) {
      lastFrameKey = key;
      $("frame").src = `/api/live/frame/${encodeURIComponent(sess.id)}/${s.latest.frame}.png`;
      $("frame-caption").textContent = `frame ${s.latest.frame}`;
    }
  }
  const frames = s.frames;
  frameTable(frames);
  overview(sess, s.overviews);
  const names = Object.keys(s.directions || {});
  const pareto = new Set(s.pareto || []);
  // Objectives have their own units: each is scaled to its own range (shown in the legend).
  const scaled = (getter, label, colour) => {
    const vals = frames.map(getter).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    const lo = Math.min(...vals), hi = Math.max(...vals);
    return {
      name: vals.length ? `${label} [${fmt(lo)} – ${fmt(hi)}]` : label,
      colour,
      points: frames.map((f) => {
        const v = getter(f);
        return [f.frame, v === null || v === undefined ? null : hi > lo ? (v - lo) / (hi - lo) : 0.5, f.frame];
      }),
    };
  };
  plot($("plot-objectives"), [
    ...names.map((n, i) => scaled((f) => (f.values || {})[n], `${n} (${s.directions[n] || "?"})`, COLOURS[i % COLOURS.length])),
    scaled((f) => f.combined, "combined", "#14181f"),
  ], "frame", "scaled to range", pareto);
  const paramNames = frames.length ? Object.keys(frames[frames.length - 1].params || {}) : [];
  plot($("plot-params"), paramNames.map((n, i) => scaled((f) => (f.params || {})[n], n, COLOURS[(i + 3) % COLOURS.length])),
    "frame", "scaled to range");
  if (names.length >= 2) {
    const [a, b] = names;
    plot($("plot-pareto"), [
      { name: "frames", points: frames.map((f) => [f.values?.[a], f.values?.[b] ?? null, f.frame]).filter((p) => p[0] !== undefined && p[0] !== null), line: false },
    ], a, b, pareto);
    $("pareto-note").textContent = `${pareto.size} frame(s) on the front (orange): ${[...pareto].join(", ")}`;
  } else {
    plot($("plot-pareto"), [{ name: "combined", points: frames.map((f) => [f.frame, f.combined, f.frame]), line: false }], "frame", names[0] || "combined", pareto);
    $("pareto-note").textContent = names.length === 1
      ? `One objective: the front is the best frame (${[...pareto].join(", ") || "–"}).`
      : "No objectives yet.";
  }
  const logs = $("logs");
  logs.replaceChildren(...(s.logs || []).slice(-12).map((l) => {
    const p = document.createElement("div");
    p.textContent = `${l.level || ""}: ${l.message || ""}`;
    return p;
  }));
}

function poll() {
  fetch("/api/live/state", { cache: "no-store" }).then((r) => r.json()).then(render)
    .catch(() => {}).finally(() => setTimeout(poll, 1000));
}

if (window.EventSource) {
  const source = new EventSource("/api/live/events");
  source.addEventListener("state", (ev) => render(JSON.parse(ev.data)));
  source.onerror = () => { $("conn").textContent = "reconnecting…"; };
} else {
  poll();
}
