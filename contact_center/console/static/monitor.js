// Silent monitoring of one conversation: its catch-up, then every turn live, tinted by
// sentiment; a timeline of the customer's sentiment; the alert's evidence marked; who
// else is monitoring; whisper to the agent and barge in where the profile allows.
import { LiveSocket, api, clock, duration, el, me, score, showStatus, timeline, tone } from "./app.js";

const id = document.body.dataset.conversation;
const transcript = document.getElementById("transcript");
const chart = document.getElementById("chart");
const alertBox = document.getElementById("alert");
const monitorsList = document.getElementById("monitors");
const summaryLine = document.getElementById("summary");
const turns = new Map();  // segment id -> its list item (a partial is replaced by its final)
const points = [];  // [at, compound] of the customer's turns
let conversation = null, alert = null, ended = false;

function evidenceIds() {
  return new Set((alert?.hits || []).flatMap((h) => (h.evidence?.segments || []).map((s) => s.segment_id)));
}

function turnItem(m) {
  const compound = m.scores?.compound;
  const shown = el("span", { class: "words" }, m.text ?? "(not recorded)");
  const item = el("li", {
    class: `turn ${m.role} ${m.final === false ? "partial" : `tone-${tone(compound)}`}`,
    dataset: { segment: m.segment_id },
  },
  el("div", { class: "meta" }, `${m.role} · ${clock(m.at)}`,
     m.final === false ? " · speaking…" : ` · compound ${score(compound)}`,
     m.recorded === false ? " · not recorded" : ""),
  shown);
  if (m.text_unredacted) {  // (only for users with monitor-unredacted)
    const reveal = el("button", { type: "button", class: "quiet", "aria-pressed": "false" }, "Show as said");
    reveal.addEventListener("click", () => {
      const revealed = reveal.getAttribute("aria-pressed") === "true";
      shown.textContent = revealed ? m.text : m.text_unredacted;
      reveal.setAttribute("aria-pressed", String(!revealed));
      reveal.textContent = revealed ? "Show as said" : "Show redacted";
    });
    item.append(" ", reveal);
  }
  return item;
}

function addTurn(m) {
  const item = turnItem(m);
  const known = turns.get(m.segment_id);
  if (known) known.replaceWith(item); else transcript.append(item);
  turns.set(m.segment_id, item);
  if (m.final !== false && m.role === "customer" && m.scores) points.push([m.at, m.scores.compound]);
  if (m.final !== false) markEvidence();
  drawChart();
  item.scrollIntoView({ block: "nearest" });
}

function line(text, kind = "note") {
  transcript.append(el("li", { class: kind }, text));
}

function markEvidence() {
  const ids = evidenceIds();
  for (const [segment, item] of turns) item.classList.toggle("evidence", ids.has(segment));
}

function drawChart() {
  const marks = alert ? [[alert.first_raised_at, "alert"]] : [];
  chart.replaceChildren(timeline(points, { marks, label: `customer sentiment of ${id} over time` }));
}

function drawAlert() {
  if (!alert) { alertBox.textContent = "No alert."; return; }
  const acknowledge = alert.status === "open" && me.can("alerts-manage")
    ? el("button", { type: "button", onclick: async () => {
      try {
        alert = await api(`/v1/alerts/${alert.id}/acknowledge`, { method: "POST", json: { version: alert.version } });
        drawAlert();
      } catch (error) { showStatus(`Could not acknowledge: ${error.message}`, "error"); }
    } }, "Acknowledge") : null;
  alertBox.replaceChildren(
    el("p", {}, el("span", { class: `badge ${alert.severity}` }, alert.severity), ` ${alert.status}`),
    ...alert.hits.slice(-3).map((h) => el("p", {}, el("strong", {}, h.rule_name || h.rule_id), `: ${h.reason}`)),
    acknowledge);
  markEvidence();
  drawChart();
}

function drawMonitors(monitors) {
  monitorsList.replaceChildren(...(monitors.length ? monitors : [{ username: "only you" }])
    .map((m) => el("li", {}, m.username, m.mode ? ` (${m.mode}${m.since ? ` since ${clock(m.since)}` : ""})` : "")));
}

function drawSummary() {
  if (!conversation) return;
  const c = conversation;
  document.getElementById("title").textContent = `Monitor ${c.id}`;
  summaryLine.textContent = [
    `agent ${c.agent_id ?? "–"}`, `queue ${c.queue}`, c.channel,
    ended ? "ended" : `${duration(Date.now() / 1000 - c.started_at)} so far`,
    c.recording_paused ? "recording paused" : null,
  ].filter(Boolean).join(" · ");
}

// -- acting: whisper, barge, write, leave ---------------------------------------------

let barged = false;

function actForms() {
  const box = document.getElementById("acts");
  const forms = [];
  if (me.can("manager-whisper")) {
    forms.push(textForm("whisper", "Whisper to the agent", "Send whisper", async (text) => {
      // (The stream shows it once committed, to every monitor.)
      await api(`/v1/conversations/${encodeURIComponent(id)}/whisper`, { method: "POST", json: { text } });
    }));
  }
  if (me.can("manager-barge")) {
    const toggle = el("button", { type: "button", class: "quiet", id: "barge" }, "Barge in");
    const say = textForm("say", "Write to the customer", "Send", async (text) => {
      await api(`/v1/conversations/${encodeURIComponent(id)}/messages`, { method: "POST", json: { text } });
    });
    say.hidden = true;
    toggle.addEventListener("click", async () => {
      try {
        await api(`/v1/conversations/${encodeURIComponent(id)}/barge`, { method: barged ? "DELETE" : "POST" });
        barged = !barged;
        toggle.textContent = barged ? "Leave" : "Barge in";
        say.hidden = !barged;
      } catch (error) { showStatus(error.message, "error"); }
    });
    forms.push(el("h2", {}, "Join"), toggle, say);
  }
  box.replaceChildren(...forms);
}

function textForm(name, label, action, send) {
  const input = el("textarea", { id: `${name}-text`, rows: 2, maxlength: 2000 });
  const form = el("form", { class: "narrow" }, el("label", { for: `${name}-text` }, label), input,
                  el("button", { type: "submit" }, action));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    try { await send(text); input.value = ""; } catch (error) { showStatus(error.message, "error"); }
  });
  return form;
}

// -- the stream ----------------------------------------------------------------------

function apply(m) {
  switch (m.type) {
    case "catch_up":
      transcript.replaceChildren();
      turns.clear();
      points.length = 0;
      conversation = m.conversation;
      alert = null;
      for (const entry of m.transcript) apply(entry);
      drawMonitors(conversation.monitors || []);
      drawSummary();
      drawChart();
      // (Its alert's events may be older than the catch-up: read the alert itself.)
      if (conversation.alert && me.can("alerts-all", "alerts-own")) {
        api(`/v1/alerts/${encodeURIComponent(conversation.alert.id)}`)
          .then((found) => { if (!alert || found.version >= alert.version) { alert = found; drawAlert(); } })
          .catch(() => null);
      }
      break;
    case "segment": addTurn(m); break;
    case "whisper": line(`${m.by} whispered to the agent: ${m.text}`); break;
    case "monitor.started": case "monitor.ended": drawMonitors(m.monitors || []); break;
    case "participant.joined": line(`${m.participant?.id ?? "someone"} joined`); break;
    case "participant.left": line(`${m.participant_id ?? "someone"} left`); break;
    case "conversation.transferred": line(`Transferred to ${m.to_agent_id ?? "–"} in ${m.to_queue ?? "–"}`);
      conversation = { ...conversation, agent_id: m.to_agent_id ?? conversation.agent_id, queue: m.to_queue ?? conversation.queue };
      drawSummary(); break;
    case "recording.paused": line("Recording paused"); break;
    case "recording.resumed": line("Recording resumed"); break;
    case "conversation.ended": ended = true; line("The conversation ended."); drawSummary(); break;
    default:
      if (m.alert) { alert = m.alert; drawAlert(); }
  }
}

actForms();
new LiveSocket(() => `/v1/conversations/${encodeURIComponent(id)}/monitor`, {
  onMessage: apply,
  onRefused: (reason) => showStatus(`Monitoring stopped: ${reason}`, "error"),
});
setInterval(drawSummary, 1000);
