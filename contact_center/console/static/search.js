// Search: find recorded turns or conversations by their words (GET /v1/search/turns and
// /v1/search/conversations, docs/analytics.md), page through them with the `next` cursor,
// and open one conversation's transcript beside the results (GET /v1/transcripts/{id}).
import { api, el, me, timeline, tone, score, clock, duration, highlighted } from "./app.js";

const form = document.getElementById("search");
const query = document.getElementById("q");
const error = document.getElementById("search-error");
const results = document.getElementById("results");
const count = document.getElementById("count");
const more = document.getElementById("more");
const FILTERS = ["queue", "agent_id", "channel", "role", "escalated", "change_min", "change_max",
                 "sentiment_min", "sentiment_max"];
const canRead = me.can("transcripts-read");

// The search being paged: its route and parameters, the cursor of its next page, and how
// many results are shown. A new search replaces it; "More results" continues it.
let current = null;

function mode() {
  return form.querySelector("input[name=mode]:checked").value;
}

/** A datetime-local value (the user's own time) as ISO 8601 in UTC, which the API reads. */
function instant(id) {
  const value = document.getElementById(id).value;
  return value ? new Date(value).toISOString() : null;
}

/** The query and every filter given; empty controls are left out (an empty parameter
 * would be refused, and an unknown one too, so the form only sends the API's names). */
function parameters() {
  const found = new URLSearchParams({ q: query.value.trim() });
  for (const id of ["since", "until"]) {
    const value = instant(id);
    if (value) found.set(id, value);
  }
  for (const id of FILTERS) {
    const value = document.getElementById(id).value.trim();
    if (value) found.set(id, value);
  }
  if (mode() === "turns") found.set("sort", document.getElementById("sort").value);
  return found;
}

function showError(text) {
  error.textContent = text;
}

async function search(event) {
  event.preventDefault();
  showError("");
  current = { mode: mode(), parameters: parameters(), next: null, shown: 0 };
  results.replaceChildren();
  more.hidden = true;
  count.textContent = "Searching…";
  await fetchPage();
}

async function fetchPage() {
  const search = current;
  const asked = new URLSearchParams(search.parameters);
  if (search.next) asked.set("cursor", search.next);
  let page;
  more.disabled = true;  // a second click would fetch the same page twice
  try {
    page = await api(`/v1/search/${search.mode}?${asked}`);
  } catch (failure) {
    if (search !== current) return;
    // A 422 is the query's fault (a quote left open, NOT alone…): its message says where.
    const why = failure.status === 422 ? "The search could not be run" : "Search failed";
    showError(`${why}: ${failure.message}`);
    count.textContent = search.shown ? `${search.shown} results shown.` : "No results.";
    return;
  } finally {
    if (search === current) more.disabled = false;  // (a newer search's fetch owns it now)
  }
  if (search !== current) return;  // a newer search started meanwhile: this page is stale
  const found = search.mode === "turns" ? page.hits : page.conversations;
  results.append(...found.map(search.mode === "turns" ? turnResult : conversationResult));
  search.shown += found.length;
  search.next = page.next;
  more.hidden = !page.next;
  const noun = search.mode === "turns" ? "turns" : "conversations";
  count.textContent = search.shown
    ? `${search.shown} ${noun} shown${page.next ? ", more available" : ""}.`
    : `No ${noun} found.`;
}

/** The button that opens a result's conversation: only for users who may read it. */
function openButton(conversationId, seq = null) {
  if (!canRead) return null;
  return el("button", { type: "button", class: "quiet",
                        onclick: () => openConversation(conversationId, seq) },
            `Open conversation ${conversationId}`);
}

function where(found) {
  return [found.queue, found.agent_id ? `agent ${found.agent_id}` : "no agent", found.channel]
    .join(" · ");
}

function turnResult(hit) {
  return el("li", { class: "result" },
    el("p", { class: "meta" }, el("strong", {}, hit.conversation_id), ` · ${where(hit)} · `,
       `${hit.role} at ${when(hit.at)} · sentiment `,
       el("span", { class: `tone ${tone(hit.scores?.compound)}`, "aria-hidden": "true" }),
       score(hit.scores?.compound)),
    el("p", { class: "snippet" }, highlighted(hit.snippet.text, hit.snippet.highlights)),
    openButton(hit.conversation_id, hit.seq));
}

function conversationResult(found) {
  const matched = found.matched_turns === 1 ? "1 turn matches" : `${found.matched_turns} turns match`;
  return el("li", { class: "result" },
    el("p", { class: "meta" }, el("strong", {}, found.id), ` · ${where(found)} · `,
       `started ${when(found.started_at)} · ${found.status} · ${matched}`),
    el("ul", { class: "plain" }, found.matches.map((turn) =>
      el("li", { class: "snippet" }, el("span", { class: "note" }, `${turn.role}: `),
         highlighted(turn.snippet.text, turn.snippet.highlights)))),
    openButton(found.id));
}

/** A date and time: results span days, so the time alone would mislead. */
function when(unix) {
  const at = new Date(unix * 1000);
  return `${at.toLocaleDateString()} ${clock(unix)}`;
}

// -- the conversation ------------------------------------------------------------------

const panel = document.getElementById("conversation");
const title = document.getElementById("conversation-title");
let opener = null;  // the button that opened the conversation: focus returns there on close

async function openConversation(id, seq) {
  opener = document.activeElement;
  let transcript;
  try {
    transcript = await api(`/v1/transcripts/${encodeURIComponent(id)}`);
  } catch (failure) {
    showError(`Could not open ${id}: ${failure.message}`);
    return;
  }
  showError("");
  title.textContent = `Conversation ${transcript.id}`;
  document.getElementById("conversation-meta").textContent = conversationMeta(transcript);
  document.getElementById("conversation-timeline").replaceChildren(...sentiment(transcript));
  document.getElementById("conversation-alerts").replaceChildren(...alertItems(transcript.alerts));
  document.getElementById("conversation-monitors").replaceChildren(...monitorItems(transcript.monitors));
  const turns = transcript.turns.map((turn) => turnItem(turn, seq));
  document.getElementById("conversation-turns").replaceChildren(...turns);
  panel.hidden = false;
  title.focus();  // keyboard and screen reader users land on what they opened
  panel.querySelector(".turn.found")?.scrollIntoView({ block: "nearest" });
}

function conversationMeta(t) {
  const lasted = t.ended_at ? `lasted ${duration(t.ended_at - t.started_at)}` : "still live";
  const customer = t.customer?.name ? `customer ${t.customer.name} · ` : "";
  return `${customer}${where(t)} · started ${when(t.started_at)} · ${lasted}`;
}

/** The timeline chart (each customer turn's score, alerts as marks) and what it shows in
 * words, for those who cannot see the chart. */
function sentiment(t) {
  if (!t.timeline.length) return [el("p", { class: "note" }, "No customer turns were scored.")];
  const points = t.timeline.map((p) => [p.at, p.compound]);
  const marks = t.alerts.map((a) => [a.first_raised_at, a.severity]);
  const values = t.timeline.map((p) => p.compound);
  const summary = `${values.length} customer turns, from ${score(values[0])} to ` +
    `${score(values.at(-1))} (lowest ${score(Math.min(...values))}); dashed lines mark alerts.`;
  return [timeline(points, { marks, label: `customer sentiment over time in ${t.id}` }),
          el("p", { class: "note" }, summary)];
}

function alertItems(alerts) {
  if (!alerts.length) return [el("li", { class: "note" }, "No alert was raised.")];
  return alerts.map((a) => el("li", { class: `alert ${a.severity} ${a.status}` },
    el("p", {}, el("span", { class: `badge ${a.severity}` }, a.severity), " ",
       el("strong", {}, a.rule_name || a.rule_id), ` · ${a.status} · raised ${clock(a.first_raised_at)}`),
    el("p", {}, a.reason),
    el("ol", { class: "history", "aria-label": `history of alert ${a.id}` },
       a.history.map((change) => el("li", {}, changeText(change))))));
}

function changeText(change) {
  const kind = change.type.replace(/^alert\./, "");
  const by = change.by ? ` by ${change.by}` : "";
  return `${clock(change.at)} ${kind}${by}`;
}

function monitorItems(monitors) {
  if (!monitors.length) return [el("li", { class: "note" }, "Nobody monitored it.")];
  return monitors.map((m) => el("li", {},
    `${m.username ?? "(removed user)"} from ${when(m.started_at)}, `,
    m.seconds === null ? "still monitoring" : `for ${duration(m.seconds)}`));
}

/** A turn, tinted by its sentiment; the one the search found is outlined. */
function turnItem(turn, foundSeq) {
  const compound = turn.scores?.compound;
  const classes = ["turn", turn.role, `tone-${tone(compound)}`];
  if (turn.seq === foundSeq) classes.push("found");
  return el("li", { class: classes.join(" ") },
    el("div", { class: "meta" }, `${turn.role} · ${clock(turn.at)} · sentiment ${score(compound)}`,
       turn.seq === foundSeq ? " · found by the search" : null),
    turn.text === null ? el("em", {}, "(not recorded)") : turn.text);
}

form.addEventListener("submit", search);
more.addEventListener("click", fetchPage);
document.getElementById("close-conversation").addEventListener("click", () => {
  panel.hidden = true;
  if (opener?.isConnected) opener.focus();
});
