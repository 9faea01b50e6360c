// Rules: the escalation rule set (GET /v1/rules, docs/rules.md). Enable or disable a rule
// (PATCH with its version), edit one as JSON and save it (PUT /v1/rules/{id}), and
// backtest the edited draft against the rule in force (POST /v1/rules/backtest).
// Every change names the version it was made from, so two admins never overwrite each
// other silently: the second is answered 409 and sees the rule as it now is.
import { api, describeDetail, el, clock } from "./app.js";

const table = document.querySelector("#rules tbody");
const pageError = document.getElementById("rules-error");
const editor = document.getElementById("editor");
const editorTitle = document.getElementById("editor-title");
const draft = document.getElementById("rule-json");
const editorError = document.getElementById("editor-error");
const result = document.getElementById("backtest-result");
let editing = null;  // the id of the rule in the editor

async function load() {
  let rules;
  try {
    rules = (await api("/v1/rules")).rules;
  } catch (failure) {
    pageError.textContent = `Could not read the rules: ${failure.message}`;
    return;
  }
  table.replaceChildren(...rules.map(row));
}

function row(rule) {
  const switchTo = !rule.enabled;
  return el("tr", { dataset: { id: rule.id } },
    el("td", {}, el("code", {}, rule.id)),
    el("td", {}, rule.name || "–"),
    el("td", {}, rule.kind),
    el("td", {}, el("span", { class: `badge ${rule.severity}` }, rule.severity)),
    el("td", { class: "enabled" }, rule.enabled ? "yes" : "no"),
    el("td", { class: "num" }, rule.version),
    el("td", { class: "actions" },
       el("button", { type: "button", class: "quiet", "aria-label": `${switchTo ? "Enable" : "Disable"} ${rule.id}`,
                      onclick: () => setEnabled(rule, switchTo) }, switchTo ? "Enable" : "Disable"),
       " ",
       el("button", { type: "button", class: "quiet", "aria-label": `Edit ${rule.id}`,
                      onclick: () => edit(rule) }, "Edit")));
}

/** What a refused change says, with the fields at fault for a 422. */
function explain(failure, doing) {
  if (failure.status === 409) {
    return `${doing}: someone changed the rule meanwhile (${failure.message}). ` +
      "The list now shows it as it is; look again before retrying.";
  }
  // A 422's message repeats its first detail: list the details alone, one a line.
  const details = (failure.details || []).map(describeDetail);
  return details.length ? [`${doing}:`, ...details].join("\n") : `${doing}: ${failure.message}`;
}

async function setEnabled(rule, enabled) {
  pageError.textContent = "";
  try {
    await api(`/v1/rules/${encodeURIComponent(rule.id)}`,
                         { method: "PATCH", json: { enabled, version: rule.version } });
  } catch (failure) {
    pageError.textContent = explain(failure, `Could not ${enabled ? "enable" : "disable"} ${rule.id}`);
  }
  await load();  // after a conflict too: the row then shows the version in force
}

function edit(rule) {
  editing = rule.id;
  editorTitle.textContent = `Edit rule ${rule.id}`;
  draft.value = JSON.stringify(rule, null, 2);
  editorError.textContent = "";
  result.replaceChildren();
  editor.hidden = false;
  editorTitle.focus();
}

/** The textarea's rule, or null after saying what is wrong with its JSON. */
function parsed() {
  editorError.textContent = "";
  try {
    const rule = JSON.parse(draft.value);
    if (rule && typeof rule === "object" && !Array.isArray(rule)) return rule;
    editorError.textContent = "The rule must be a JSON object: { \"id\": …, \"kind\": … }.";
  } catch (failure) {
    editorError.textContent = `This is not valid JSON: ${failure.message}`;
  }
  return null;
}

async function save() {
  const rule = parsed();
  if (!rule) return;
  try {
    const saved = await api(`/v1/rules/${encodeURIComponent(editing)}`,
                                       { method: "PUT", json: rule });
    draft.value = JSON.stringify(saved, null, 2);  // with its new version, to edit on
    editorError.textContent = "";
    result.replaceChildren(el("p", { class: "note" }, `Saved ${saved.id}: now version ${saved.version}.`));
  } catch (failure) {
    editorError.textContent = explain(failure, `Could not save ${editing}`);
  }
  await load();
}

/** A datetime-local value (the user's own time) as ISO 8601 in UTC. */
function instant(id) {
  const value = document.getElementById(id).value;
  return value ? new Date(value).toISOString() : undefined;
}

async function backtest() {
  const rule = parsed();
  if (!rule) return;
  delete rule.version;  // a draft is judged as written; the server sets versions
  const queue = document.getElementById("backtest-queue").value.trim() || undefined;
  const body = { rule, since: instant("backtest-since"), until: instant("backtest-until"),
                 queue, samples: 3 };
  const button = document.getElementById("backtest");
  button.disabled = true;
  result.replaceChildren(el("p", { class: "note" }, "Running the backtest…"));
  try {
    showBacktest(await api("/v1/rules/backtest", { method: "POST", json: body }));
  } catch (failure) {
    // 503 busy: another backtest runs on this node; nothing waits in line, so say retry.
    const retry = failure.status === 503 ? " Try again in a few seconds." : "";
    result.replaceChildren(el("p", { class: "error" }, explain(failure, "The backtest did not run") + retry));
  } finally {
    button.disabled = false;
  }
}

// -- the backtest's answer -------------------------------------------------------------

function showBacktest(answer) {
  const selected = `${answer.conversations} conversations selected` +
    (answer.truncated ? " (the oldest only: more matched)" : "") +
    `, replayed in ${Math.round(answer.elapsed_ms)} ms.`;
  result.replaceChildren(
    el("h4", {}, "Backtest result"),
    el("p", { class: "note" }, selected),
    figures(answer, answer.current),
    answer.difference ? difference(answer.difference) : el("p", { class: "note" },
      "No rule with this id is in force: nothing to compare with."),
    samples("What the draft would have raised", answer.samples),
    answer.current ? samples("What the rule in force raised", answer.current.samples) : null);
}

/** The draft's figures next to the rule in force's, one row each. */
function figures(draftOutcome, current) {
  const line = (label, outcome) => el("tr", {},
    el("th", { scope: "row" }, label),
    ...[outcome.alerts, outcome.conversations_with_alerts, outcome.conversations_judged,
        outcome.conversations_not_judged].map((n) => el("td", { class: "num" }, n)));
  return el("table", { class: "backtest" },
    el("caption", { class: "note" }, "Alerts each would have raised"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Rule"),
      ...["Alerts", "Conversations alerted", "Conversations judged", "Not judged (words not recorded)"]
        .map((name) => el("th", { scope: "col" }, name)))),
    el("tbody", {}, line("Draft", draftOutcome), current ? line("In force", current) : null));
}

function difference(d) {
  const ids = (list) => (list.length ? list.join(", ") : "none");
  const sign = d.alerts > 0 ? `+${d.alerts}` : String(d.alerts);
  return el("ul", { class: "plain difference" },
    el("li", {}, `Alerts, draft minus in force: ${sign}`),
    el("li", {}, `Conversations alerted by both: ${d.conversations_both}`),
    el("li", {}, `Only by the draft: ${d.conversations_only_draft} (e.g. ${ids(d.examples_only_draft)})`),
    el("li", {}, `Only by the rule in force: ${d.conversations_only_current} (e.g. ${ids(d.examples_only_current)})`));
}

function samples(heading, list) {
  if (!list.length) return null;
  return el("div", {}, el("h4", {}, heading),
    el("ul", { class: "alerts" }, list.map((s) => el("li", { class: "alert" },
      el("p", {}, el("strong", {}, s.conversation_id), ` at ${clock(s.raised_at)}: ${s.reason}`),
      (s.segments || []).filter((seg) => seg.text).map((seg) =>
        el("blockquote", {}, `${seg.role}: ${seg.text}`))))));
}

document.getElementById("save").addEventListener("click", save);
document.getElementById("backtest").addEventListener("click", backtest);
document.getElementById("close-editor").addEventListener("click", () => {
  editor.hidden = true;
  // Back to the rule's Edit button (the list may have been redrawn since it was pressed).
  const row = [...table.rows].find((tr) => tr.dataset.id === editing);
  row?.querySelector("td.actions button:last-child")?.focus();
  editing = null;
});
load();
