// The live wall: every live conversation in the user's scope, from the /v1/live socket
// (a snapshot, then updates). Updates are applied once per animation frame and rows are
// re-sorted at most once a second, so a busy contact center does not freeze the page.
import { LiveSocket, el, me, sparkline, tone, duration, score } from "./app.js";

const HISTORY = 40;  // sentiment points kept per conversation for its sparkline
const SEVERITY = { high: 3, medium: 2, low: 1 };
const rows = new Map();  // id -> {summary, history, tr}
const pending = new Map();  // id -> summary (or null: removed), applied on the next frame
const body = document.querySelector("#wall tbody");
const filter = document.getElementById("filter");
const sort = document.getElementById("sort");
const alertsOnly = document.getElementById("alerts-only");
const count = document.getElementById("count");
let framed = false, order = [], sortedAt = 0;

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

function cells(row) {
  const s = row.summary, alert = openAlert(s);
  const link = me.can("manager-monitor")
    ? el("a", { href: `/console/monitor/${encodeURIComponent(s.id)}`, "aria-label": `Monitor ${s.id}` }, s.id)
    : s.id;
  const monitors = (s.monitors || []).map((m) => m.username).join(", ");
  return [
    el("td", {}, link, s.customer?.name ? el("div", { class: "note" }, s.customer.name) : null),
    el("td", {}, s.agent_id ?? "–"),
    el("td", {}, s.queue),
    el("td", {}, s.channel),
    el("td", { class: "num", dataset: { started: s.started_at } }, duration(Date.now() / 1000 - s.started_at)),
    el("td", { class: "num" }, el("span", { class: `tone ${tone(s.sentiment.window)}`, "aria-hidden": "true" }),
       score(s.sentiment.window), " ", sparkline(row.history, { label: `sentiment trend of ${s.id}` })),
    el("td", {}, alert ? [el("span", { class: `badge ${alert.severity}` }, alert.severity), " ", alert.status] : "–"),
    el("td", {}, monitors || "–"),
  ];
}

function apply(id, summary) {
  let row = rows.get(id);
  if (summary === null || summary.status === "ended") {
    if (row) { row.tr.remove(); rows.delete(id); }
    return;
  }
  if (!row) {
    row = { summary, history: [], tr: el("tr", { dataset: { id } }) };
    rows.set(id, row);
  }
  const keepMonitors = summary.monitors === undefined ? row.summary.monitors : summary.monitors;
  row.summary = { ...summary, monitors: keepMonitors };
  const value = summary.sentiment.window;
  if (value !== null && value !== undefined && value !== row.history.at(-1)) {
    row.history.push(value);
    if (row.history.length > HISTORY) row.history.shift();
  }
  row.tr.replaceChildren(...cells(row));
  row.tr.classList.toggle("attention", Boolean(openAlert(row.summary)));
}

function render(force = false) {
  framed = false;
  for (const [id, summary] of pending) apply(id, summary);
  pending.clear();
  const now = performance.now();
  if (!force && now - sortedAt < 1000 && order.length === rows.size) return;
  sortedAt = now;
  const shown = [...rows.values()].filter((r) => visible(r.summary))
    .sort((a, b) => ORDER[sort.value](a.summary, b.summary));
  const next = shown.map((r) => r.tr);
  if (next.length !== order.length || next.some((tr, i) => tr !== order[i])) {
    body.replaceChildren(...next);
    order = next;
  }
  count.textContent = `${shown.length} of ${rows.size} live conversations`;
}

function soon(id, summary) {
  pending.set(id, summary);
  if (!framed) { framed = true; requestAnimationFrame(() => render()); }
}

new LiveSocket(() => "/v1/live", {
  onMessage(message) {
    if (message.type === "snapshot") {
      pending.clear();
      for (const row of rows.values()) row.tr.remove();
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
setInterval(() => {  // durations tick
  const now = Date.now() / 1000;
  for (const cell of body.querySelectorAll("td[data-started]")) {
    cell.textContent = duration(now - Number(cell.dataset.started));
  }
}, 1000);
