// The live wall: every live conversation in the user's scope, from the /v1/live socket
// (a snapshot, then updates). Built to stay fluid with a thousand conversations changing
// thousands of times a second: updates are applied once per animation frame, a row on
// screen has its cells changed in place (never rebuilt), rows are re-sorted at most four
// times a second and only those that moved are moved, rows scrolled out of view are not
// laid out (CSS content-visibility), and at most SHOWN rows are on the page (the worst
// first: filter to see others).
import { LiveSocket, el, me, sparkline, tone, duration, score } from "./app.js";

const SHOWN = 200;  // rows on the page at most
const HISTORY = 40;  // sentiment points kept per conversation for its sparkline
const SORT_EVERY_MS = 250;
const SEVERITY = { high: 3, medium: 2, low: 1 };
const rows = new Map();  // id -> {summary, history, view (when on the page), dirty}
const pending = new Map();  // id -> summary (null: removed), applied on the next frame
const body = document.getElementById("wall-rows");
const filter = document.getElementById("filter");
const sort = document.getElementById("sort");
const alertsOnly = document.getElementById("alerts-only");
const count = document.getElementById("count");
let framed = false, order = [], sortedAt = 0, reorder = true;

function openAlert(s) {
  return s.alert && s.alert.status !== "resolved" ? s.alert : null;
}

function attention(s) {  // higher first: an open alert by severity, then the angriest
  const alert = openAlert(s);
  return (alert ? 10 * SEVERITY[alert.severity] + (alert.status === "open" ? 5 : 0) : 0)
    - (s.sentiment.window ?? 0);
}

const ORDER = {
  attention: (a, b) => attention(b) - attention(a),
  sentiment: (a, b) => (a.sentiment.window ?? 2) - (b.sentiment.window ?? 2),
  duration: (a, b) => a.started_at - b.started_at,
  agent: (a, b) => String(a.agent_id).localeCompare(String(b.agent_id)),
};

function visible(s) {
  const words = filter.value.trim().toLowerCase();
  if (alertsOnly.checked && !openAlert(s)) return false;
  return !words || [s.id, s.agent_id, s.queue].some((v) => String(v ?? "").toLowerCase().includes(words));
}

/** A row's element and the cells that change, made when it first comes on the page. */
function view(row) {
  const s = row.summary;
  const link = me.can("manager-monitor")
    ? el("a", { href: `/console/monitor/${encodeURIComponent(s.id)}`, "aria-label": `Monitor ${s.id}` }, s.id)
    : s.id;
  const cell = (attributes = {}, ...children) => el("span", { role: "cell", ...attributes }, ...children);
  const cells = {
    agent: cell(), queue: cell(), channel: cell({}, s.channel),
    duration: cell({ class: "num" }), tone: el("span", { "aria-hidden": "true" }),
    score: el("span"), chart: el("span"), alert: cell(), monitors: cell(),
    customer: el("span", { class: "note" }),
  };
  const tr = el("div", { role: "row", class: "wall-row", dataset: { id: s.id } },
    cell({}, link, " ", cells.customer), cells.agent, cells.queue, cells.channel, cells.duration,
    cell({ class: "num" }, cells.tone, cells.score, " ", cells.chart), cells.alert, cells.monitors);
  return { tr, cells, shown: {} };
}

function set(v, key, node, value, draw) {  // change a cell only when its value changed
  if (v.shown[key] === value) return;
  v.shown[key] = value;
  if (draw) draw(); else node.textContent = value;
}

function refresh(row) {
  const s = row.summary, v = row.view, c = v.cells, alert = openAlert(s);
  set(v, "agent", c.agent, s.agent_id ?? "–");
  set(v, "queue", c.queue, s.queue);
  set(v, "customer", c.customer, s.customer?.name ?? "");
  set(v, "score", c.score, score(s.sentiment.window));
  set(v, "tone", c.tone, tone(s.sentiment.window), () => { c.tone.className = `tone ${tone(s.sentiment.window)}`; });
  set(v, "chart", c.chart, row.history.join(), () =>
    c.chart.replaceChildren(sparkline(row.history, { label: `sentiment trend of ${s.id}` })));
  const alertKey = alert ? `${alert.severity} ${alert.status}` : "";
  set(v, "alert", c.alert, alertKey, () => c.alert.replaceChildren(...(alert
    ? [el("span", { class: `badge ${alert.severity}` }, alert.severity), " ", alert.status] : ["–"])));
  set(v, "monitors", c.monitors, (s.monitors || []).map((m) => m.username).join(", ") || "–");
  set(v, "attention", null, Boolean(alert), () => v.tr.classList.toggle("attention", Boolean(alert)));
  set(v, "duration", c.duration, duration(Date.now() / 1000 - s.started_at));
}

function apply(id, summary) {
  let row = rows.get(id);
  if (summary === null || summary.status === "ended") {
    if (row) { rows.delete(id); reorder = true; }
    return;
  }
  if (!row) {
    row = { summary, history: [] };
    rows.set(id, row);
    reorder = true;
  }
  const monitors = summary.monitors === undefined ? row.summary.monitors : summary.monitors;
  const was = openAlert(row.summary);
  const now = openAlert(summary);
  if ((was && `${was.severity}${was.status}`) !== (now && `${now.severity}${now.status}`)) {
    reorder = true;  // (an alert raised, escalated, acknowledged or resolved: its rank)
  }
  row.summary = { ...summary, monitors };
  const value = summary.sentiment.window;
  if (value !== null && value !== undefined && value !== row.history.at(-1)) {
    row.history.push(value);
    if (row.history.length > HISTORY) row.history.shift();
  }
  row.dirty = true;
}

function render(force = false) {
  framed = false;
  for (const [id, summary] of pending) apply(id, summary);
  pending.clear();
  const now = performance.now();
  if (force || now - sortedAt >= (reorder ? SORT_EVERY_MS : 1000)) {
    sortedAt = now;
    reorder = false;
    const matching = [...rows.values()].filter((r) => visible(r.summary))
      .sort((a, b) => ORDER[sort.value](a.summary, b.summary));
    const next = matching.slice(0, SHOWN);
    for (const row of next) if (!row.view) { row.view = view(row); row.dirty = true; }
    for (const row of order) if (!next.includes(row)) row.view = undefined;  // (off the page)
    if (next.length !== order.length || next.some((row, i) => row !== order[i])) {
      place(next);
      order = next;
    }
    count.textContent = matching.length > SHOWN
      ? `${SHOWN} shown of ${matching.length} matching (${rows.size} live): filter to narrow`
      : `${matching.length} of ${rows.size} live conversations`;
  }
  for (const row of order) if (row.dirty) { row.dirty = false; refresh(row); }
  if (reorder && !framed) soonFrame();  // (new or ended conversations: re-sort soon)
}

/** Put the rows in ``next`` order, moving only those out of place. */
function place(next) {
  const wanted = new Set(next.map((row) => row.view.tr));
  for (const tr of [...body.children]) if (!wanted.has(tr)) tr.remove();
  let at = body.firstElementChild;
  for (const row of next) {
    if (row.view.tr === at) at = at.nextElementSibling;
    else body.insertBefore(row.view.tr, at);
  }
}

function soonFrame() {
  framed = true;
  requestAnimationFrame(() => render());
}

function soon(id, summary) {
  pending.set(id, summary);
  if (!framed) soonFrame();
}

new LiveSocket(() => "/v1/live", {
  onMessage(message) {
    if (message.type === "snapshot") {
      pending.clear();
      rows.clear();
      for (const s of message.conversations) apply(s.id, s);
      render(true);
    } else if (message.type === "conversation.updated") {
      soon(message.conversation.id, message.conversation);
    } else if (message.type === "conversation.removed") {
      soon(message.conversation_id, null);
    } else if (message.type === "monitors.updated") {
      const row = rows.get(message.conversation_id);
      if (row) soon(row.summary.id, { ...(pending.get(row.summary.id) || row.summary), monitors: message.monitors });
    }
  },
});

for (const control of [filter, sort, alertsOnly]) control.addEventListener("input", () => render(true));
setInterval(() => {  // durations tick (rows on the page only)
  for (const row of order) row.dirty = true;
  if (!framed) soonFrame();
}, 1000);
