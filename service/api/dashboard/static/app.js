/* stsweep dashboard: one page, vanilla JS, plotly.js for charts. Routes: #/ (studies), #/studies/{id},
   #/workers. The study page loads once, then polls /changes?cursor= every 2 s and applies the delta.
   Signing in reads the token's own record (GET /v1/tokens/me): the top bar shows its project and role, the pages
   list what the API returns for it, and controls its role may not use are not drawn (the API refuses them anyway). */
"use strict";

const TOKEN_KEY = "stsweep.token";
const POLL_MS = 2000;
const LIST_POLL_MS = 5000;
const PAGE_SIZE = 50;
const STATES = ["complete", "running", "pruned", "failed", "queued"];
const STUDY_STATUSES = ["queued", "running", "paused", "stopped", "completed", "failed"];
const COLORS = { complete: "#2563eb", running: "#ea8a00", pruned: "#9aa3af", failed: "#dc2626" };
const ROLE_RANK = { viewer: 0, member: 1, admin: 2 };

const $ = (sel, root = document) => root.querySelector(sel);
let view = null; // the current page's state; replaced on every route change
let timer = null;
let me = null; // the token's own record (GET /v1/tokens/me): its name, project and role

// Whether the signed-in token's role is `role` or above (viewer < member < admin).
const can = (role) => me !== null && ROLE_RANK[me.role] >= ROLE_RANK[role];

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

const fmt = (v, d = 4) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(d));

function fmtDuration(sec) {
  if (sec === null || sec === undefined) return "—";
  sec = Math.max(0, Math.round(sec));
  const d = Math.floor(sec / 86400), h = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

// The study's ETA, with "(timeout)" when budget.timeout_seconds, not the remaining trials, bounds it.
function fmtEta(p) {
  if (p.eta_seconds === null || p.eta_seconds === undefined) return "—";
  return `${fmtDuration(p.eta_seconds)}${p.eta_bound === "timeout" ? " (timeout)" : ""}`;
}

// The baseline, or its status while it has no value: "pending" (computed after a trial, never before the
// first) or "failed" (it could not be computed).
function fmtBaseline(s) {
  const base = s.baseline ? (s.baseline.value ?? s.baseline.subset_value) : null;
  if ((base === null || base === undefined) && s.baseline && s.baseline.status !== "ready") return s.baseline.status;
  return fmt(base);
}

function fmtParam(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return Math.abs(v) < 1e-3 ? v.toExponential(2) : String(+v.toPrecision(4));
  return String(v);
}

function fmtExamples(n) {
  if (n === null || n === undefined) return "—";
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : String(n);
}

function badge(text) { return el("span", { class: `badge ${text}`, text }); }

function toast(message, isError = false) {
  const t = $("#toast");
  t.textContent = message;
  t.className = isError ? "toast error" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

// ------------------------------------------------------------------ auth and fetching

const token = () => sessionStorage.getItem(TOKEN_KEY);

class AuthError extends Error {}

async function api(path, { method = "GET", raw = false } = {}) {
  const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token()}` } });
  if (res.status === 401) { signOut("Your token was refused; sign in again."); throw new AuthError("unauthorized"); }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return raw ? res : res.json();
}

function showSignIn(message) {
  stopTimer();
  view = null;
  $("#app").hidden = true;
  $("#app").replaceChildren();
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#live").hidden = true;
  $("#whoami").hidden = true;
  $("#sign-in").hidden = false;
  const err = $("#sign-in-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("#token-input").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  const res = await fetch("/v1/tokens/me", { headers: { Authorization: `Bearer ${value}` } });
  if (!res.ok) {
    showSignIn(res.status === 401 ? "That token was not accepted." : `Sign-in failed: ${res.status}`);
    return;
  }
  me = await res.json();
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#token-input").value = "";
  route();
}

// The top bar's "project P (role)" of the signed-in token.
function showWhoami() {
  const w = $("#whoami");
  w.replaceChildren(el("span", { class: "muted", text: "project " }), el("strong", { text: me.project }),
    el("span", { class: "role", text: me.role }));
  w.title = `token "${me.name}": a ${me.role} of project ${me.project}`;
  Object.assign(w.dataset, { project: me.project, role: me.role });
  w.hidden = false;
}

// ------------------------------------------------------------------ routing

function stopTimer() { if (timer) clearTimeout(timer); timer = null; }

function schedule(fn, ms) {
  stopTimer();
  const owner = view;
  timer = setTimeout(async () => {
    if (view !== owner) return;
    try { await fn(); setLive(true); } catch (e) { if (!(e instanceof AuthError)) setLive(false, e.message); }
    if (view === owner) schedule(fn, ms);
  }, ms);
}

function setLive(ok, message) {
  const live = $("#live");
  live.hidden = false;
  live.classList.toggle("stale", !ok);
  live.textContent = ok ? `Live · updated ${new Date().toLocaleTimeString()}` : `Not updating: ${message}`;
}

function route() {
  if (!token()) { showSignIn(); return; }
  if (!me) { // a reload: the token is kept for the session, who it is is asked again
    api("/v1/tokens/me").then((m) => { me = m; route(); },
      (e) => { if (!(e instanceof AuthError)) showSignIn(`Could not read the token: ${e.message}`); });
    return;
  }
  stopTimer();
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  showWhoami();
  const app = $("#app");
  app.hidden = false;
  app.replaceChildren();
  const hash = location.hash || "#/";
  const study = hash.match(/^#\/studies\/([^/?]+)/);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.classList.toggle("active", (a.dataset.nav === "workers") === hash.startsWith("#/workers"));
  });
  const page = study ? studyPage(decodeURIComponent(study[1])) : hash.startsWith("#/workers") ? workersPage() : studiesPage();
  page.catch((e) => { if (!(e instanceof AuthError)) app.replaceChildren(el("div", { class: "card empty error", text: e.message })); });
}

// ------------------------------------------------------------------ studies page

function progressBar(p, id) {
  const partial = p.running.reduce((a, r) => a + (r.planned_examples ? Math.min(1, r.examples_seen / r.planned_examples) : 0), 0);
  const total = Math.max(1, p.n_trials);
  const done = Math.min(100, (100 * p.trials_finished) / total);
  const part = Math.min(100 - done, (100 * partial) / total);
  const running = p.running.map((r) => `#${r.number} ${fmtExamples(r.examples_seen)}/${fmtExamples(r.planned_examples)} ex`);
  return el("div", { dataset: id ? { progress: id } : {} },
    el("div", { class: "progress", title: `${(p.fraction * 100).toFixed(1)}%` },
      el("div", { class: "done", style: `width:${done}%` }), el("div", { class: "partial", style: `width:${part}%` })),
    el("div", { class: "progress-label" }, `${p.trials_finished} / ${p.n_trials} trials`,
      running.length ? ` · ${running.slice(0, 2).join(", ")}${running.length > 2 ? " …" : ""}` : ""));
}

function counts(c) {
  return el("div", { class: "counts" },
    STATES.filter((s) => c[s]).map((s) => el("span", { class: `c-${s}`, title: s, dataset: { count: s } }, `${c[s]} ${s}`)));
}

function bestVsBaseline(s) {
  const best = s.best ? s.best.value : null;
  const base = s.baseline ? (s.baseline.value ?? s.baseline.subset_value) : null;
  const children = [el("strong", { text: fmt(best) })];
  if (base !== null && base !== undefined) {
    children.push(el("span", { class: "muted small" }, ` vs ${fmt(base)}`));
    if (best !== null) {
      const d = best - base, better = s.objective.direction === "maximize" ? d >= 0 : d <= 0;
      children.push(el("div", { class: `small ${better ? "delta-up" : "delta-down"}` }, `${d >= 0 ? "+" : ""}${fmt(d)} vs baseline`));
    }
  }
  return children;
}

const STUDY_SORTS = {
  created: (a, b) => (a.created_at < b.created_at ? 1 : -1),
  name: (a, b) => a.name.localeCompare(b.name),
  status: (a, b) => STUDY_STATUSES.indexOf(a.status) - STUDY_STATUSES.indexOf(b.status),
  progress: (a, b) => b.progress.fraction - a.progress.fraction,
  best: (a, b) => (b.best ? b.best.value : -Infinity) - (a.best ? a.best.value : -Infinity),
};

async function studiesPage() {
  const admin = can("admin"); // every project's studies: a Project column and filter
  view = { page: "studies", sort: sessionStorage.getItem("stsweep.sort") || "created", status: sessionStorage.getItem("stsweep.status") || "",
    project: admin ? sessionStorage.getItem("stsweep.project") || "" : "" };
  const v = view;
  const projectSel = admin ? el("select", { id: "project-filter", onchange: (e) => { v.project = e.target.value; sessionStorage.setItem("stsweep.project", v.project); refresh(); } },
    el("option", { value: "" }, "All projects"), v.project ? el("option", { value: v.project, selected: true }, v.project) : null) : null;
  const heads = ["Study", ...(admin ? ["Project"] : []), "Status", "Progress", "Best vs baseline", "Trials", "Workers", "Elapsed", "ETA"];
  const statusSel = el("select", { id: "status-filter", onchange: (e) => { v.status = e.target.value; sessionStorage.setItem("stsweep.status", v.status); refresh(); } },
    el("option", { value: "" }, "All statuses"), STUDY_STATUSES.map((s) => el("option", { value: s, selected: s === v.status }, s)));
  const sortSel = el("select", { id: "study-sort", onchange: (e) => { v.sort = e.target.value; sessionStorage.setItem("stsweep.sort", v.sort); draw(); } },
    Object.keys(STUDY_SORTS).map((s) => el("option", { value: s, selected: s === v.sort }, `Sort: ${s}`)));
  const body = el("tbody");
  const total = el("span", { class: "muted" });
  $("#app").append(el("div", { class: "stack" },
    el("div", { class: "row" }, el("h1", { text: "Studies" }), total, el("div", { class: "spacer" }), projectSel, statusSel, sortSel),
    el("div", { class: "card table-card" }, el("div", { class: "table-scroll" }, el("table", { id: "studies-table" },
      el("thead", {}, el("tr", {}, heads.map((h) => el("th", { text: h })))),
      body)))));

  function draw() {
    const items = [...v.items].sort(STUDY_SORTS[v.sort]);
    total.textContent = `${v.total} ${v.total === 1 ? "study" : "studies"}`;
    body.replaceChildren(...(items.length ? items.map((s) => el("tr", { dataset: { studyId: s.id } },
      el("td", {}, el("a", { href: `#/studies/${s.id}`, class: "study-link" }, el("strong", { text: s.name })), el("div", { class: "muted small", text: s.id })),
      admin ? el("td", { dataset: { project: s.project } }, s.project) : null,
      el("td", {}, badge(s.status)),
      el("td", {}, progressBar(s.progress, s.id)),
      el("td", {}, bestVsBaseline(s)),
      el("td", {}, counts(s.counts)),
      el("td", { class: "num", dataset: { workers: s.id } }, String(v.workers[s.id] || 0)),
      el("td", { class: "num" }, fmtDuration(s.progress.elapsed_seconds)),
      el("td", { class: "num", dataset: { etaBound: s.progress.eta_bound || "" } }, fmtEta(s.progress)),
    )) : [el("tr", {}, el("td", { colspan: heads.length, class: "empty", text: "No studies yet. Submit one with `stsweep submit`." }))]));
  }

  async function refresh() {
    const q = (v.status ? `&status=${v.status}` : "") + (v.project ? `&project=${encodeURIComponent(v.project)}` : "");
    const [page, workers] = await Promise.all([api(`/v1/studies?limit=500${q}`), api("/v1/workers")]);
    if (view !== v) return;
    v.items = page.items;
    v.total = page.total;
    v.workers = {};
    for (const w of workers.items) if (w.current_trial && w.status === "busy") v.workers[w.current_trial.study_id] = (v.workers[w.current_trial.study_id] || 0) + 1;
    draw();
  }

  if (admin) { // the filter's choices: every project (fetched once per visit)
    api("/v1/projects").then((list) => {
      if (view !== v) return;
      projectSel.replaceChildren(el("option", { value: "" }, "All projects"),
        ...list.items.map((p) => el("option", { value: p.name, selected: p.name === v.project }, p.name)));
    }, () => {});
  }
  await refresh();
  setLive(true);
  schedule(refresh, LIST_POLL_MS);
}

// ------------------------------------------------------------------ workers page

async function workersPage() {
  view = { page: "workers" };
  const v = view;
  const body = el("tbody");
  $("#app").append(el("div", { class: "stack" }, el("h1", { text: "Workers" }),
    el("div", { class: "card table-card" }, el("div", { class: "table-scroll" }, el("table", { id: "workers-table" },
      el("thead", {}, el("tr", {}, ["Host", "Device", "Scheduler job", "Status", "Current trial", "Last heartbeat", "Trials done", "Up since"].map((h) => el("th", { text: h })))),
      body)))));
  async function refresh() {
    const data = await api("/v1/workers");
    if (view !== v) return;
    body.replaceChildren(...(data.items.length ? data.items.map((w) => el("tr", { dataset: { workerId: w.id } },
      el("td", {}, el("strong", { text: w.host }), el("div", { class: "muted small", text: `pid ${w.pid}` })),
      el("td", { class: "device" }, el("code", { text: w.device }),
        w.bf16 ? el("div", { class: "muted small", text: w.bf16 === "none" ? "no native bf16" : `bf16: ${w.bf16}` }) : null),
      el("td", { class: "scheduler" }, w.scheduler_job ? [el("code", { text: w.scheduler_task != null ? `${w.scheduler_job}_${w.scheduler_task}` : w.scheduler_job }),
        el("div", { class: "muted small", text: w.scheduler === "slurm" ? "SLURM" : String(w.scheduler || "") })] : el("span", { class: "muted", text: "—" })),
      el("td", {}, badge(w.status)),
      el("td", {}, w.current_trial ? [el("a", { href: `#/studies/${w.current_trial.study_id}` }, `${w.current_trial.study_id} #${w.current_trial.number}`),
        el("div", { class: "muted small", text: `${fmtExamples(w.current_trial.examples_seen)} / ${fmtExamples(w.current_trial.planned_examples)} examples` })] : el("span", { class: "muted", text: "—" })),
      el("td", { class: w.heartbeat_age_seconds > 60 && w.status !== "stopped" ? "error" : "" }, `${fmtDuration(w.heartbeat_age_seconds)} ago`),
      el("td", { class: "num" }, String(w.trials_done)),
      el("td", { class: "small muted" }, new Date(w.started_at).toLocaleString()),
    )) : [el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No workers registered. Start one with `stsweep worker`." }))]));
  }
  await refresh();
  setLive(true);
  schedule(refresh, LIST_POLL_MS);
}

// ------------------------------------------------------------------ study page

async function studyPage(id) {
  view = {
    page: "study", id, cursor: null, prevCursor: null,
    // Paged by keyset cursor: `cursors[i]` starts page i (null: the first), so Next and Prev cost one page however deep.
    table: { offset: 0, limit: PAGE_SIZE, sort: "number", order: "asc", state: "", items: [], total: 0, stale: false, lastFetch: 0, cursors: [null], next: null },
    history: new Map(), curves: new Map(), parallel: null, importanceAt: 0, importanceComplete: -1,
  };
  const v = view;
  const app = $("#app");
  app.append(el("div", { class: "empty", text: "Loading…" }));
  const base = `/v1/studies/${encodeURIComponent(id)}`;
  const importance = api(`${base}/charts/importance`); // the slowest when not cached: asked first, drawn when it comes
  importance.catch(() => {});
  const [summary, history, curves, parallel, trials] = await Promise.all([
    api(base), api(`${base}/charts/history`), api(`${base}/charts/curves`), api(`${base}/charts/parallel`), fetchTable(v),
  ]);
  if (view !== v) return;
  v.summary = summary;
  v.cursor = v.prevCursor = Math.min(history.cursor, curves.cursor, parallel.cursor);
  app.replaceChildren(studySkeleton(v));
  renderSummary(v);
  history.trials.number.forEach((n, i) => v.history.set(n, history.trials.value[i]));
  v.historyMeta = history;
  for (const t of curves.trials) v.curves.set(t.number, t);
  v.curvesMeta = curves;
  v.parallel = parallel;
  v.parallelRows = new Map(parallel.trials.number.map((n, i) => [n, { value: parallel.trials.value[i], params: Object.fromEntries(parallel.params.map((p) => [p.name, parallel.trials.params[p.name][i]])) }]));
  drawHistory(v); drawCurves(v); drawParallel(v);
  v.table.items = trials.items; v.table.total = trials.total; v.table.next = trials.next_cursor;
  drawTable(v);
  loadImportance(v, importance);
  setLive(true);
  schedule(() => tick(v), POLL_MS);
}

function fetchTable(v) {
  const t = v.table;
  const q = new URLSearchParams({ limit: t.limit, sort: t.sort, order: t.order });
  if (t.state) q.set("state", t.state);
  const cursor = t.cursors[Math.floor(t.offset / t.limit)];
  if (cursor) q.set("cursor", cursor);
  t.lastFetch = Date.now();
  return api(`/v1/studies/${encodeURIComponent(v.id)}/trials?${q}`);
}

async function reloadTable(v) {
  const page = await fetchTable(v);
  if (view !== v) return;
  v.table.items = page.items; v.table.total = page.total; v.table.stale = false; v.table.next = page.next_cursor;
  drawTable(v);
}

// Back to the first page (a new sort or filter: the cursors were made for the old one).
function firstPage(t) { t.offset = 0; t.cursors = [null]; t.next = null; }

function turnPage(v, step) {
  const t = v.table, page = Math.floor(t.offset / t.limit);
  if (step > 0) { if (!t.next) return; t.cursors[page + 1] = t.next; }
  else if (page === 0) return;
  t.offset = Math.max(0, t.offset + step * t.limit);
  reloadTable(v);
}

function studySkeleton(v) {
  const s = v.summary;
  const action = (verb, label, cls) => el("button", { class: `btn ${cls || ""}`, id: `btn-${verb}`, onclick: () => changeStatus(v, verb) }, label);
  const stateFilter = el("select", { id: "trial-state-filter", onchange: (e) => { v.table.state = e.target.value; firstPage(v.table); reloadTable(v); } },
    el("option", { value: "" }, "All states"), STATES.map((st) => el("option", { value: st }, st)));
  return el("div", { class: "stack" },
    el("div", {},
      el("div", { class: "crumbs" }, el("a", { href: "#/" }, "Studies"), " / ", s.name),
      el("div", { class: "study-head" },
        el("h1", { id: "study-name", text: s.name }), el("span", { id: "study-status" }), el("span", { class: "id", text: s.id }),
        el("span", { class: "project-tag", id: "study-project", title: "project", text: s.project }),
        el("div", { class: "spacer" }),
        // A viewer reads and pulls; changing a study's status takes a member (the API answers 403 otherwise).
        can("member") ? [action("pause", "Pause"), action("resume", "Resume"), action("stop", "Stop", "btn-danger")] : null,
        el("button", { class: "btn btn-primary", id: "btn-download", onclick: () => downloadBest(v) }, "Download best checkpoint")),
      el("div", { id: "status-reason", class: "status-reason", hidden: true })),
    el("div", { class: "cards", id: "summary-cards" }),
    el("div", { class: "two" },
      el("div", { class: "card" }, el("h2", { text: "Best trial" }), el("div", { id: "best-params" })),
      el("div", { class: "card" }, el("details", { id: "definition" }, el("summary", { text: "Study definition" }),
        el("pre", { text: JSON.stringify(s.spec, null, 2) })),
        el("div", { class: "small muted", style: "margin-top:10px" }, `Objective: ${s.objective.metric} (${s.objective.direction}) · `,
          `created ${new Date(s.created_at).toLocaleString()}`))),
    el("div", { class: "charts" },
      chartCard("chart-history", "Optimization history"), chartCard("chart-curves", "Learning curves"),
      chartCard("chart-parallel", "Parallel coordinates"), chartCard("chart-importance", "Hyperparameter importance")),
    el("div", { class: "card table-card" },
      el("div", { class: "row toolbar" }, el("h2", { text: "Trials", style: "margin:0" }), el("span", { id: "trials-total", class: "muted" }),
        el("div", { class: "spacer" }), stateFilter),
      el("div", { class: "table-scroll" }, el("table", { id: "trials-table" }, el("thead", {}, el("tr", { id: "trials-head" })), el("tbody", {}))),
      el("div", { class: "pager" },
        el("button", { class: "btn", id: "page-prev", onclick: () => turnPage(v, -1) }, "‹ Prev"),
        el("button", { class: "btn", id: "page-next", onclick: () => turnPage(v, 1) }, "Next ›"),
        el("span", { id: "page-info", class: "muted small" }))));
}

function chartCard(id, title) {
  return el("div", { class: "card chart-card" }, el("h2", { text: title }), el("div", { class: "note", id: `${id}-note` }),
    el("div", { class: "chart", id, dataset: { traceCount: "0", ready: "0" } }));
}

// A confirmed winner (several runs of one configuration) as "mean ± std"; null for a single best trial.
function confirmedWinner(s) {
  const w = s.winner;
  if (!w || w.runs < 2) return null;
  return w.std === null ? fmt(w.mean) : `${fmt(w.mean)} ± ${fmt(w.std)}`;
}

function renderSummary(v) {
  const s = v.summary;
  $("#study-status").replaceChildren(badge(s.status));
  $("#study-status").dataset.status = s.status;
  const reason = $("#status-reason");
  reason.hidden = !s.status_reason; reason.textContent = s.status_reason || "";
  for (const [verb, from] of [["pause", ["queued", "running"]], ["resume", ["paused", "stopped"]], ["stop", ["queued", "running", "paused"]]]) {
    const button = $(`#btn-${verb}`); // absent for a viewer
    if (button) button.disabled = !from.includes(s.status);
  }
  $("#btn-download").disabled = !s.best;
  const stat = (label, value, sub, extra) => el("div", { class: "card stat" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null, extra || null);
  $("#summary-cards").replaceChildren(
    stat("Best", fmt(s.best && s.best.value), s.best ? `trial #${s.best.trial_number}` : "no complete trial yet"),
    ...(confirmedWinner(s) ? [stat("Winner", confirmedWinner(s), `mean over ${s.winner.runs} runs: trials ${s.winner.trial_numbers.map((n) => `#${n}`).join(", ")}`)] : []),
    stat("Baseline", fmtBaseline(s), s.test ? `test ${s.test.metric}: ${fmt(s.test.value)}${s.test.rescoring ? " (scoring the new winner)" : ""}` : "base model, no fine-tuning"),
    stat("Progress", `${Math.round(s.progress.fraction * 100)}%`, null, progressBar(s.progress, "study")),
    stat("Elapsed", fmtDuration(s.progress.elapsed_seconds), `ETA ${fmtEta(s.progress)}`),
    el("div", { class: "card stat", id: "study-counts" }, el("div", { class: "label", text: "Trials" }), el("div", { class: "value" }, String(Object.values(s.counts).reduce((a, b) => a + b, 0))), el("div", { class: "sub" }, counts(s.counts))),
  );
  const best = $("#best-params");
  if (!s.best) { best.replaceChildren(el("p", { class: "muted", text: "No trial has completed yet." })); return; }
  best.replaceChildren(el("table", { class: "kv" }, el("tbody", {},
    el("tr", {}, el("td", { text: "Trial" }), el("td", {}, el("strong", { text: `#${s.best.trial_number}` }))),
    el("tr", {}, el("td", { text: s.objective.metric }), el("td", {}, el("strong", { text: fmt(s.best.value) }))),
    Object.entries(s.best.params || {}).map(([k, val]) => el("tr", {}, el("td", { text: k }), el("td", {}, el("code", { text: fmtParam(val) })))))));
}

async function changeStatus(v, verb) {
  try {
    v.summary = { ...(await api(`/v1/studies/${encodeURIComponent(v.id)}/${verb}`, { method: "POST" })), spec: v.summary.spec };
    renderSummary(v);
    toast(`Study ${v.summary.status}.`);
  } catch (e) { if (!(e instanceof AuthError)) toast(`Could not ${verb}: ${e.message}`, true); }
}

async function downloadFrom(path, fallbackName) {
  try {
    const res = await api(path, { raw: true });
    const blob = await res.blob();
    const cd = res.headers.get("Content-Disposition") || "";
    const m = cd.match(/filename\*?=(?:UTF-8'')?"?([^";]+)"?/i);
    const a = el("a", { href: URL.createObjectURL(blob), download: m ? decodeURIComponent(m[1]) : fallbackName });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) { if (!(e instanceof AuthError)) toast(`Download failed: ${e.message}`, true); }
}

function downloadBest(v) { downloadFrom(`/v1/studies/${encodeURIComponent(v.id)}/best-checkpoint`, `${v.summary.name}-best-checkpoint.tar`); }

// ------------------------------------------------------------------ live updates

async function tick(v) {
  // Ask from the cursor before last: a write that got its seq earlier but committed later is still seen.
  let more = true;
  while (more && view === v) {
    const delta = await api(`/v1/studies/${encodeURIComponent(v.id)}/changes?cursor=${v.prevCursor}`);
    if (view !== v) return;
    applyDelta(v, delta);
    more = delta.more;
    v.prevCursor = more ? delta.cursor : v.cursor;
    v.cursor = delta.cursor;
  }
}

// The baseline lands after a study's first trial: the charts' baseline lines follow it without a reload (the
// history compares full-eval values, the curves eval-subset ones, as service/store/dashboard_reads.py serves them).
function syncBaseline(v, b) {
  if (!b) return;
  const full = b.value, subset = b.subset_value ?? b.value;
  if (v.historyMeta && v.historyMeta.baseline !== full) { v.historyMeta.baseline = full; drawHistory(v); }
  if (v.curvesMeta && v.curvesMeta.baseline !== subset) { v.curvesMeta.baseline = subset; drawCurves(v); }
}

function applyDelta(v, delta) {
  if (delta.study) { v.summary = { ...delta.study, spec: v.summary.spec }; renderSummary(v); syncBaseline(v, delta.study.baseline); }
  if (!delta.trials.length) return;
  let history = false, curves = false, parallel = false;
  const rows = new Map(v.table.items.map((t, i) => [t.number, i]));
  for (const t of delta.trials) {
    if (t.state === "complete" && t.value !== null && v.history.get(t.number) !== t.value) { v.history.set(t.number, t.value); history = true; }
    if (t.state === "complete" && t.value !== null && v.parallelRows && !v.parallelRows.has(t.number)) {
      v.parallelRows.set(t.number, { value: t.value, params: t.params || {} }); parallel = true;
    }
    const c = v.curves.get(t.number);
    if (c || t.intermediate.length) {
      const cur = c || { number: t.number, x: [], y: [] };
      const seen = new Map(cur.x.map((x, i) => [x, cur.y[i]]));
      for (const p of t.intermediate) seen.set(p.examples_seen, p.value);
      const xs = [...seen.keys()].sort((a, b) => a - b);
      const changed = !c || c.state !== t.state || xs.length !== cur.x.length;
      Object.assign(cur, { state: t.state, value: t.value, x: xs, y: xs.map((x) => seen.get(x)) });
      cur.pruned_at = t.state === "pruned" && xs.length ? xs[xs.length - 1] : null;
      v.curves.set(t.number, cur);
      curves = curves || changed;
    }
    if (rows.has(t.number)) {
      const old = v.table.items[rows.get(t.number)];
      v.table.items[rows.get(t.number)] = { ...t, intermediate: old.intermediate };
      if (v.table.state && t.state !== v.table.state) v.table.stale = true;
    } else if (!v.table.state || t.state === v.table.state) {
      v.table.stale = true; // a row that belongs on some page changed: refetch this page (one page, throttled)
    }
  }
  if (history) drawHistory(v);
  if (curves) drawCurves(v);
  if (parallel) drawParallel(v);
  drawTable(v);
  if (v.table.stale && Date.now() - v.table.lastFetch > 4000) reloadTable(v);
  if (v.summary.counts.complete !== v.importanceComplete && Date.now() - v.importanceAt > 10000) loadImportance(v);
}

// ------------------------------------------------------------------ trials table

const TRIAL_COLUMNS = [
  ["number", "#", true], ["state", "State", true], ["value", "Value", true], [null, "Params"], [null, "Examples"],
  ["attempts", "Attempts", true], ["duration", "Duration", true], [null, "Started"], [null, "Failure reason"], [null, "Checkpoint"],
];

// How each attempt of a trial ended (its history), one line each, for the Attempts cell's tooltip.
function attemptsTitle(r) {
  return (r.history || []).map((h) => {
    const trained = h.examples_seen !== null && h.examples_seen !== undefined ? `, ${fmtExamples(h.examples_seen)} examples` : "";
    return `attempt ${h.attempt}: ${h.event}${h.fault ? ` (${h.fault})` : ""}${trained}`;
  }).join("\n") || null;
}

function drawTable(v) {
  const t = v.table;
  $("#trials-head").replaceChildren(...TRIAL_COLUMNS.map(([key, label, sortable]) => el("th", {
    class: [sortable ? "sortable" : "", t.sort === key ? "sorted" : "", t.sort === key && t.order === "desc" ? "desc" : ""].join(" ").trim() || null,
    dataset: key ? { sort: key } : {},
    onclick: sortable ? () => { if (t.sort === key) t.order = t.order === "asc" ? "desc" : "asc"; else { t.sort = key; t.order = key === "value" && v.summary.objective.direction === "maximize" ? "desc" : "asc"; } firstPage(t); reloadTable(v); } : null,
  }, label)));
  const bestNo = v.summary.best ? v.summary.best.trial_number : null;
  $("#trials-table tbody").replaceChildren(...(t.items.length ? t.items.map((r) => el("tr", { dataset: { trial: r.number, state: r.state } },
    el("td", { class: "num" }, r.number === bestNo ? el("strong", { title: "best trial", text: `★ ${r.number}` }) : String(r.number)),
    el("td", {}, badge(r.state), r.kind === "confirm" ? el("span", { class: "small muted", title: `training seed ${r.train_seed}`, text: ` confirms #${r.confirm_of}` }) : null),
    el("td", { class: "num" }, fmt(r.value)),
    el("td", { class: "params", title: r.params ? JSON.stringify(r.params) : "" }, r.params ? Object.entries(r.params).map(([k, x]) => `${k.replace(/^per_device_train_/, "")}=${fmtParam(x)}`).join(", ") : el("span", { class: "muted", text: "not sampled yet" })),
    el("td", { class: "num small" }, r.state === "queued" ? "—" : `${fmtExamples(r.examples_seen)}${r.planned_examples ? ` / ${fmtExamples(r.planned_examples)}` : ""}`),
    el("td", { class: "num attempts", title: attemptsTitle(r) }, String(r.attempts),
      r.fault_count ? el("span", { class: "small muted", text: ` +${r.fault_count} given back` }) : null),
    el("td", { class: "num" }, fmtDuration(r.duration_seconds)),
    el("td", { class: "small muted" }, r.started_at ? new Date(r.started_at).toLocaleString() : "—"),
    el("td", { class: "reason" }, r.failure_reason || ""),
    el("td", {}, r.has_checkpoint ? el("a", { href: `/v1/studies/${v.id}/trials/${r.number}/checkpoint`, class: "checkpoint-link",
      onclick: (e) => { e.preventDefault(); downloadFrom(`/v1/studies/${encodeURIComponent(v.id)}/trials/${r.number}/checkpoint`, `${v.summary.name}-trial-${r.number}.tar`); } }, "download") : el("span", { class: "muted", text: "—" })),
  )) : [el("tr", {}, el("td", { colspan: TRIAL_COLUMNS.length, class: "empty", text: "No trials match." }))]));
  const end = Math.min(t.total, t.offset + t.items.length);
  $("#trials-total").textContent = `${t.total.toLocaleString()}${t.state ? ` ${t.state}` : ""}`;
  $("#page-info").textContent = t.total ? `${(t.offset + 1).toLocaleString()}–${end.toLocaleString()} of ${t.total.toLocaleString()}` : "";
  $("#page-prev").disabled = t.offset === 0;
  $("#page-next").disabled = !t.next;
}

// ------------------------------------------------------------------ start

$("#sign-in-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
