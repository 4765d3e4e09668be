/* stsweep dashboard charts (plotly.js, SVG only: no WebGL, so they draw fast without a GPU too). Each chart's
   div carries data-trace-count (traces drawn), data-items (trials or params drawn) and data-ready. Uses the
   helpers of app.js (el, fmt, $, api, view), which is loaded after this file and calls these functions. */
"use strict";

const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const baseLayout = (extra) => ({
  margin: { l: 56, r: 16, t: 8, b: 44 }, font: { family: "-apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 12, color: "#1f2933" },
  paper_bgcolor: "#fff", plot_bgcolor: "#fff", hovermode: "closest",
  xaxis: { gridcolor: "#eef1f5", zeroline: false }, yaxis: { gridcolor: "#eef1f5", zeroline: false }, ...extra,
});

function baselineShape(y) {
  if (y === null || y === undefined) return { shapes: [], annotations: [] };
  return {
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: y, y1: y, line: { color: "#7c3aed", width: 1.5, dash: "dash" } }],
    annotations: [{ xref: "paper", x: 1, y, xanchor: "right", yanchor: "bottom", text: `baseline ${fmt(y)}`, showarrow: false, font: { color: "#7c3aed", size: 11 } }],
  };
}

function plot(id, traces, layout, note, items) {
  const div = document.getElementById(id);
  if (!div) return;
  $(`#${id}-note`).textContent = note || "";
  const started = performance.now();
  if (!traces.length) {
    Plotly.purge(div);
    div.replaceChildren(el("div", { class: "chart-empty", text: layout.empty || "No data yet." }));
  } else {
    if (div.querySelector(".chart-empty")) div.replaceChildren();
    Plotly.react(div, traces, baseLayout(layout), PLOT_CONFIG);
  }
  div.dataset.traceCount = String(traces.length);
  if (items !== undefined) div.dataset.items = String(items);
  div.dataset.renderMs = String(Math.round(performance.now() - started));
  div.dataset.ready = "1";
}

function drawHistory(v) {
  const entries = [...v.history.entries()].sort((a, b) => a[0] - b[0]);
  const maximize = v.summary.objective.direction === "maximize";
  const bx = [], by = [];
  let best = null;
  for (const [n, y] of entries) {
    if (best === null || (maximize ? y > best : y < best)) best = y;
    bx.push(n); by.push(best);
  }
  const traces = entries.length ? [
    { type: "scatter", mode: "markers", name: "Trial value", x: entries.map((e) => e[0]), y: entries.map((e) => e[1]),
      marker: { color: "#60a5fa", size: 6, opacity: 0.75 }, hovertemplate: "Trial #%{x}<br>%{y:.4f}<extra></extra>" },
    { type: "scatter", mode: "lines", name: "Best so far", x: bx, y: by, line: { color: "#1d4ed8", width: 2.5, shape: "hv" }, hoverinfo: "skip" },
  ] : [];
  const m = v.historyMeta;
  const note = m.sampled ? `${m.shown.toLocaleString()} of ${m.total.toLocaleString()} complete trials shown (every improvement kept)` : `${entries.length} complete trials`;
  plot("chart-history", traces, { xaxis: { title: { text: "Trial" }, gridcolor: "#eef1f5" }, yaxis: { title: { text: v.summary.objective.metric }, gridcolor: "#eef1f5" },
    legend: { orientation: "h", y: 1.12, x: 0 }, ...baselineShape(v.historyMeta.baseline), empty: "No trial has completed yet." }, note, entries.length);
}

// One trace per group (best, complete, running, pruned, failed; trials separated by nulls) and one for the
// "pruned here" marks: a few SVG paths instead of hundreds of traces, so redraws on live updates stay cheap.
const CURVE_GROUPS = [
  ["failed", "Failed", { color: "#dc2626", width: 1 }, 0.45],
  ["pruned", "Pruned", { color: "#9aa3af", width: 1 }, 0.6],
  ["complete", "Complete", { color: "#7aa7f5", width: 1.2 }, 0.8],
  ["running", "Running", { color: "#ea8a00", width: 2 }, 0.95],
  ["best", "Best trial", { color: "#1d4ed8", width: 3 }, 1],
];

function joinSeries(list, key) {
  const x = [], y = [], text = [];
  for (const t of list) {
    const xs = key(t);
    for (let i = 0; i < xs.x.length; i++) { x.push(xs.x[i]); y.push(xs.y[i]); text.push(`#${t.number}`); }
    x.push(null); y.push(null); text.push("");
  }
  return { x, y, text };
}

function drawCurves(v) {
  const list = [...v.curves.values()].filter((t) => t.x.length).sort((a, b) => a.number - b.number);
  const bestNo = v.summary.best ? v.summary.best.trial_number : null;
  const group = (t) => (t.number === bestNo ? "best" : t.state);
  const traces = [];
  for (const [key, label, line, opacity] of CURVE_GROUPS) {
    const members = list.filter((t) => group(t) === key);
    if (!members.length) continue;
    const xy = joinSeries(members, (t) => t);
    const marked = key === "best" || key === "running" || members.length <= 50; // markers cost an SVG node each
    traces.push({ type: "scatter", mode: marked ? "lines+markers" : "lines", name: key === "best" ? `Best (#${bestNo})` : label, ...xy, line, opacity,
      marker: { size: key === "best" ? 6 : 4, color: line.color }, connectgaps: false,
      hovertemplate: `Trial %{text} (${label.toLowerCase()})<br>%{x} examples<br>%{y:.4f}<extra></extra>` });
  }
  const pruned = list.filter((t) => t.pruned_at !== null && t.pruned_at !== undefined);
  if (pruned.length) {
    traces.push({ type: "scatter", mode: "markers", name: "Pruned here", x: pruned.map((t) => t.pruned_at), y: pruned.map((t) => t.y[t.y.length - 1]),
      marker: { symbol: "x-thin", size: 10, line: { width: 2, color: "#dc2626" }, color: "#dc2626" },
      text: pruned.map((t) => `#${t.number}`), hovertemplate: "Trial %{text} pruned at %{x} examples<extra></extra>" });
  }
  const m = v.curvesMeta;
  const note = m.sampled ? `${list.length} of ${m.total.toLocaleString()} started trials: ${m.selection}` : `${list.length} trials`;
  plot("chart-curves", traces, { xaxis: { title: { text: "Examples seen" }, gridcolor: "#eef1f5" }, yaxis: { title: { text: v.summary.objective.metric }, gridcolor: "#eef1f5" },
    legend: { orientation: "h", y: 1.14, x: 0 }, ...baselineShape(m.baseline), empty: "No intermediate values reported yet." }, note, list.length);
}

// Parallel coordinates drawn with SVG lines (not plotly's WebGL parcoords: without a GPU, software WebGL takes
// seconds to start). Each axis is scaled to [0, 1]; trials are binned by objective value into a few coloured
// traces, the best drawn last (on top).
const SCALE = ["#d5deec", "#a9bfe3", "#6e98d8", "#2f64c4", "#0b2f7a"]; // worst .. best

function niceNumber(x) { return Math.abs(x) >= 1000 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(1) : String(+x.toPrecision(3)); }

function parallelAxis(p, values) {
  const label = p.name.replace(/^per_device_train_/, "").replace(/_/g, " ");
  if (p.type === "categorical") {
    const labels = p.choices.map(String);
    const at = (i) => (labels.length === 1 ? 0.5 : i / (labels.length - 1));
    return { label, pos: values.map((x) => at(labels.indexOf(String(x)))), ticks: labels.map((t, i) => [at(i), t]) };
  }
  const f = p.log ? Math.log10 : (x) => x;
  const lo = f(p.low), hi = f(p.high), span = hi - lo || 1;
  const norm = (x) => (f(x) - lo) / span;
  let ticks;
  if (p.log) {
    ticks = [];
    for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) ticks.push([(e - lo) / span, `1e${e}`]);
  } else {
    ticks = [0, 0.25, 0.5, 0.75, 1].map((q) => [q, niceNumber(p.low + q * (p.high - p.low))]);
  }
  return { label, pos: values.map(norm), ticks };
}

function drawParallel(v) {
  const rows = [...v.parallelRows.entries()].sort((a, b) => a[0] - b[0]).map(([number, r]) => ({ number, ...r }))
    .filter((r) => v.parallel.params.every((p) => r.params[p.name] !== undefined && r.params[p.name] !== null));
  const maximize = v.summary.objective.direction === "maximize";
  const values = rows.map((r) => r.value);
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const axes = v.parallel.params.map((p) => parallelAxis(p, rows.map((r) => r.params[p.name])));
  axes.push({ label: v.summary.objective.metric, pos: values.map((x) => (hi === lo ? 0.5 : (x - lo) / span)),
    ticks: [0, 0.25, 0.5, 0.75, 1].map((q) => [q, (lo + q * span).toFixed(4)]), objective: true });
  const quality = (x) => (hi === lo ? 1 : maximize ? (x - lo) / span : (hi - x) / span);
  const bins = SCALE.map(() => []);
  rows.forEach((r, i) => bins[Math.min(SCALE.length - 1, Math.floor(quality(r.value) * SCALE.length))].push(i));
  const traces = [];
  bins.forEach((members, b) => {
    if (!members.length) return;
    const x = [], y = [], text = [];
    for (const i of members) {
      axes.forEach((a, d) => { x.push(d); y.push(a.pos[i]); text.push(`#${rows[i].number}: ${fmt(rows[i].value)}`); });
      x.push(null); y.push(null); text.push("");
    }
    const top = b === SCALE.length - 1;
    const opacity = rows.length <= 100 ? 0.8 : rows.length <= 400 ? 0.35 : 0.14;
    traces.push({ type: "scatter", mode: "lines", x, y, text, showlegend: false, line: { color: SCALE[b], width: top ? 1.5 : 1 },
      opacity: top ? Math.max(0.6, opacity) : opacity, hovertemplate: "Trial %{text}<extra></extra>" });
  });
  if (rows.length) {
    traces.push({ type: "scatter", mode: "markers", x: [null], y: [null], showlegend: false, hoverinfo: "skip",
      marker: { color: [lo, hi], cmin: lo, cmax: hi, colorscale: SCALE.map((c, i) => [i / (SCALE.length - 1), c]), reversescale: !maximize,
        showscale: true, colorbar: { thickness: 10, len: 0.9, x: 1.02, tickfont: { size: 10 } } } });
  }
  const n = axes.length;
  const shapes = axes.map((_, d) => ({ type: "line", x0: d, x1: d, y0: 0, y1: 1, line: { color: "#94a3b8", width: 1 }, layer: "below" }));
  const annotations = axes.flatMap((a, d) => [
    { x: d, y: 1.04, yanchor: "bottom", text: `<b>${a.label}</b>`, showarrow: false, font: { size: 11 } },
    ...a.ticks.map(([pos, t]) => ({ x: d, y: pos, xanchor: "right", xshift: -3, text: t, showarrow: false, font: { size: 9, color: "#4b5563" }, bgcolor: "rgba(255,255,255,0.85)", borderpad: 1 })),
  ]);
  const m = v.parallel;
  const note = m.sampled ? `the ${rows.length.toLocaleString()} most recent of ${m.total.toLocaleString()} complete trials` : `${rows.length} complete trials · colour: ${v.summary.objective.metric}`;
  plot("chart-parallel", traces, {
    margin: { l: 40, r: 40, t: 28, b: 12 }, shapes, annotations, hovermode: "closest",
    xaxis: { range: [-0.45, n - 1 + 0.15], visible: false, fixedrange: true }, yaxis: { range: [-0.04, 1.04], visible: false, fixedrange: true },
    empty: "No trial has completed yet.",
  }, note, rows.length);
}

async function loadImportance(v, pending) {
  v.importanceAt = Date.now();
  const data = await (pending || api(`/v1/studies/${encodeURIComponent(v.id)}/charts/importance`));
  if (view !== v) return;
  v.importanceComplete = data.n_complete;
  const entries = Object.entries(data.importances).sort((a, b) => a[1] - b[1]);
  const traces = entries.length ? [{ type: "bar", orientation: "h", x: entries.map((e) => e[1]), y: entries.map((e) => e[0]),
    marker: { color: "#2563eb" }, text: entries.map((e) => `${(e[1] * 100).toFixed(1)}%`), textposition: "outside", cliponaxis: false,
    hovertemplate: "%{y}: %{x:.3f}<extra></extra>" }] : [];
  const note = entries.length ? `${data.evaluator.replace("ImportanceEvaluator", "")} over ${data.n_trials_used.toLocaleString()} of ${data.n_complete.toLocaleString()} complete trials` : "";
  plot("chart-importance", traces, { margin: { l: 170, r: 48, t: 8, b: 40 }, xaxis: { title: { text: "Importance" }, gridcolor: "#eef1f5", rangemode: "tozero" },
    yaxis: { automargin: true }, empty: data.reason || "Not enough trials yet." }, note, entries.length);
}

