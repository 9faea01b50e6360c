// Live per-agent rows: the agent metrics the live board socket sends (a snapshot, then
// at most one update a second), worst first.
import { LiveSocket, el, score, tone } from "./app.js";

const body = document.querySelector("#agents tbody");
const count = document.getElementById("agent-count");

function draw(agents) {
  const rows = [...agents].sort((a, b) => b.open_alerts - a.open_alerts
    || (a.average_customer_sentiment ?? 2) - (b.average_customer_sentiment ?? 2));
  body.replaceChildren(...rows.map((a) => el("tr", { class: a.open_alerts ? "attention" : null },
    el("td", {}, a.agent_id ?? "(no agent)"),
    el("td", { class: "num" }, a.conversations),
    el("td", { class: "num" }, a.open_alerts),
    el("td", { class: "num" }, a.escalated_conversations),
    el("td", { class: "num" }, el("span", { class: `tone ${tone(a.average_customer_sentiment)}`, "aria-hidden": "true" }),
       score(a.average_customer_sentiment)))));
  count.textContent = `${rows.length} agents with live conversations`;
}

new LiveSocket(() => "/v1/live", {
  onMessage(message) {
    if (message.type === "snapshot") draw(message.agents);
    else if (message.type === "agents.updated") draw(message.agents);
  },
});
