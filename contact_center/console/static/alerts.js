// Alerts as they happen: the alert stream (resumed from the last event seen when the
// socket drops), with each alert's evidence, and acknowledge / assign / resolve /
// reopen as the user's permissions allow (the server checks them again).
import { LiveSocket, api, clock, el, highlighted, me, score, showStatus } from "./app.js";

const alerts = new Map();  // id -> alert (the highest version seen)
const list = document.getElementById("alerts");
const showResolved = document.getElementById("show-resolved");
const count = document.getElementById("alert-count");
const RANK = { open: 0, acknowledged: 1, resolved: 2 };
let lastEvent = null;  // the stream's cursor
let framed = false;

function keep(alert) {
  const known = alerts.get(alert.id);
  if (!known || alert.version >= known.version) alerts.set(alert.id, alert);
}

/** Each matched word marked in a turn's text. */
function marked(text, words) {
  const spans = [];
  const lower = text.toLowerCase();
  for (const word of words || []) {
    const needle = String(word).toLowerCase();
    if (!needle) continue;
    for (let at = lower.indexOf(needle); at >= 0; at = lower.indexOf(needle, at + needle.length)) {
      spans.push([at, at + needle.length]);
    }
  }
  return highlighted(text, spans);
}

function evidence(hit) {
  const found = hit.evidence || {};
  const words = [...(found.matched || []), ...Object.values(found.signals || {}).flat()];
  return el("div", {},
    el("p", {}, el("strong", {}, hit.rule_name || hit.rule_id), ` (${hit.severity}): ${hit.reason}`),
    ...(found.segments || []).map((turn) => el("blockquote", {},
      el("span", { class: "note" }, `${turn.role} · compound ${score(turn.scores?.compound)} · `),
      turn.text === null || turn.text === undefined
        ? el("em", {}, "(not recorded)") : marked(turn.text, words))));
}

async function change(alert, action, extra = {}) {
  try {
    keep(await api(`/v1/alerts/${alert.id}/${action}`, { method: "POST",
      json: { version: alert.version, ...extra } }));
    draw();
  } catch (error) {
    showStatus(error.code === "version_conflict"
      ? "Someone changed this alert meanwhile: it is shown as it is now; try again."
      : `Could not ${action}: ${error.message}`, "error");
    try { keep(await api(`/v1/alerts/${alert.id}`)); draw(); } catch { /* gone from scope */ }
  }
}

function actions(alert) {
  const manage = me.can("alerts-manage");
  const buttons = [];
  if (alert.status === "open" && (manage || me.can("alerts-own"))) {
    buttons.push(el("button", { type: "button", onclick: () => change(alert, "acknowledge") }, "Acknowledge"));
  }
  if (manage && alert.status !== "resolved") {
    const who = el("input", { "aria-label": `Assign alert on ${alert.conversation_id} to`, placeholder: "username",
                              size: 10, value: alert.assignee || "" });
    buttons.push(who, el("button", { type: "button", class: "quiet",
      onclick: () => change(alert, "assign", { username: who.value.trim() || null }) }, "Assign"));
    buttons.push(el("button", { type: "button", class: "quiet", onclick: () => change(alert, "resolve") }, "Resolve"));
  }
  if (manage && alert.status === "resolved") {
    buttons.push(el("button", { type: "button", class: "quiet", onclick: () => change(alert, "reopen") }, "Reopen"));
  }
  return buttons.length ? el("div", { class: "actions" }, ...buttons) : null;
}

function card(alert) {
  const monitor = me.can("manager-monitor") && alert.status !== "resolved"
    ? el("a", { href: `/console/monitor/${encodeURIComponent(alert.conversation_id)}` }, "Monitor") : null;
  const who = [
    alert.acknowledged_by && `acknowledged by ${alert.acknowledged_by}`,
    alert.assignee && `assigned to ${alert.assignee}`,
    alert.resolution && `resolved (${alert.resolution}${alert.resolved_by ? ` by ${alert.resolved_by}` : ""})`,
    alert.notifications > 1 && `notified ${alert.notifications} times, last at ${clock(alert.notified_at)}`,
  ].filter(Boolean).join(" · ");
  return el("li", { class: `alert ${alert.severity} ${alert.status}`, dataset: { id: alert.id, status: alert.status } },
    el("div", {},
      el("span", { class: `badge ${alert.severity}` }, alert.severity), " ",
      el("strong", {}, alert.conversation_id), ` · ${alert.status} · agent ${alert.agent_id ?? "–"} · queue ${alert.queue}`,
      ` · raised ${clock(alert.first_raised_at)}`, monitor ? [" · ", monitor] : null),
    who ? el("p", { class: "note" }, who) : null,
    ...alert.hits.slice(-3).map(evidence),
    actions(alert));
}

function draw() {
  framed = false;
  const shown = [...alerts.values()]
    .filter((a) => showResolved.checked || a.status !== "resolved")
    .sort((a, b) => RANK[a.status] - RANK[b.status] || b.notified_at - a.notified_at);
  list.replaceChildren(...shown.map(card));
  const open = [...alerts.values()].filter((a) => a.status === "open").length;
  count.textContent = `${open} open, ${shown.length} shown`;
}

function soon() {
  if (!framed) { framed = true; requestAnimationFrame(draw); }
}

const LOAD_AT_MOST = 1000;  // unresolved alerts of each status read when the page opens

async function loadUnresolved() {
  for (const status of ["open", "acknowledged"]) {
    let cursor = null, read = 0;
    do {
      const page = await api(`/v1/alerts?status=${status}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      page.alerts.forEach(keep);
      read += page.alerts.length;
      cursor = page.next_cursor;
    } while (cursor && read < LOAD_AT_MOST);
  }
  draw();
}

const whisperBox = document.getElementById("whispers-box");
const whispers = document.getElementById("whispers");

new LiveSocket(() => lastEvent === null ? "/v1/alerts/stream" : `/v1/alerts/stream?after=${lastEvent}`, {
  onMessage(message) {
    if (message.type === "subscribed") {
      // Resuming, the events missed follow: the cursor moves as each is handled (taking
      // this one's would skip them if the socket dropped again meanwhile).
      if (lastEvent === null) {
        lastEvent = message.event_id;
        loadUnresolved().catch((e) => showStatus(e.message, "error"));
      }
    } else if (message.type === "resync") {
      if (message.alerts) {
        alerts.clear();
        message.alerts.forEach(keep);
        lastEvent = message.event_id;
        soon();
      }
    } else if (message.type === "whisper") {
      whisperBox.hidden = false;
      whispers.prepend(el("li", { class: "alert" }, el("strong", {}, message.by), ` on ${message.conversation_id}: `, message.text));
    } else if (message.alert) {
      lastEvent = message.event_id ?? lastEvent;
      keep(message.alert);
      soon();
    }
  },
});

showResolved.addEventListener("input", draw);
