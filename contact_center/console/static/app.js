// The console's shared parts: the signed-in user, JSON calls with the CSRF token,
// sockets opened with a single-use ticket that reconnect on their own, and small DOM
// and chart helpers. No framework: every page is a module importing these.

const body = document.body;

/** The signed-in user as the page was served: name and permissions. */
export const me = {
  username: body.dataset.user || "",
  permissions: new Set((body.dataset.permissions || "").split(" ").filter(Boolean)),
  can(...permissions) { return permissions.some((p) => this.permissions.has(p)); },
};

const csrf = () => body.dataset.csrf || "";

/** An API error: its status, code and message as the service answered them. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const SIGN_IN = () => `/console/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`;

async function send(path, method, json) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (json !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, credentials: "same-origin",
                       body: json === undefined ? undefined : JSON.stringify(json) });
}

/** Call the API; the answer's JSON (null for 204). State changes carry the CSRF token; a
 * refused one (the user signed in again in another tab, so this page's token is old) is
 * sent once more with the session's token as it is now. An error's `details` are the
 * service's (e.g. each field a 422 refused). */
export async function api(path, { method = "GET", json } = {}) {
  let answer = await send(path, method, json);
  if (answer.status === 403 && method !== "GET") {
    const refusal = await answer.clone().json().catch(() => ({}));
    if ((refusal.detail?.code || refusal.code) === "csrf") {
      const session = await send("/v1/session", "GET");
      if (session.ok) {
        body.dataset.csrf = (await session.json()).csrf_token;
        answer = await send(path, method, json);
      }
    }
  }
  if (answer.status === 401) {  // the session ended: sign in again, then come back here
    location.assign(SIGN_IN());
    throw new ApiError(401, "unauthenticated", "signed out");
  }
  if (answer.status === 204) return null;
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const detail = data.detail && typeof data.detail === "object" ? data.detail : data;
    const error = new ApiError(answer.status, detail.code || "error",
                               detail.message || answer.statusText);
    error.details = Array.isArray(detail.details) ? detail.details : [];
    throw error;
  }
  return data;
}

// An open page keeps its session alive (its sockets do not count as using it), within
// the session's absolute lifetime; once the session is gone, it is time to sign in.
setInterval(() => { if (body.dataset.user) api("/v1/session").catch(() => null); }, 5 * 60 * 1000);

/** A socket that reconnects: `url()` is asked again on every attempt (a cursor may
 * have moved), a new ticket is fetched each time, and the page is told meanwhile. A
 * socket refused at its handshake twice in a row (with a fresh ticket each time) is
 * refused for good (no permission, out of scope, ended); so is one closed with 1008,
 * except when the reason asks to reconnect (a narrowed scope). */
export class LiveSocket {
  constructor(url, { onMessage, onOpen, onRefused }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onOpen = onOpen || (() => {});
    this.onRefused = onRefused || ((reason) => showStatus(reason, "error"));
    this.delay = 500;
    this.refusals = 0;
    this.stopped = false;
    this.connect();
  }

  async connect() {
    if (this.stopped) return;
    let ticket;
    try {
      ticket = (await api("/v1/session/tickets", { method: "POST" })).ticket;
    } catch (error) {
      if (error.status === 403) { this.onRefused(error.message); return; }
      return this.retry();
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // Batched pushes: a busy wall gets a frame per server batch, not one per update.
    const url = this.url();
    const batched = `${url}${url.includes("?") ? "&" : "?"}pushes=batched`;
    const socket = new WebSocket(`${scheme}://${location.host}${batched}`, ["ticket", ticket]);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.delay = 500;
      this.refusals = 0;
      clearStatus();
      this.onOpen();
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "pushes") return this.onMessage(message);
      for (const pushed of message.pushes) {
        if (this.stopped || this.socket !== socket) break;  // (as a closed socket's frames)
        try {
          this.onMessage(pushed);
        } catch (error) {  // one push's failure costs that push alone, as one a frame
          reportError(error);
        }
      }
    };
    socket.onclose = (event) => this.closed(event, opened);
  }

  async closed(event, opened) {
    if (this.stopped) return;
    if (event.code === 1000) {  // finished (e.g. the conversation ended)
      if (event.reason) showStatus(event.reason, "info");
      return;
    }
    if (event.code === 1008 && !event.reason.startsWith("scope_changed")) {
      // The session may have ended (api() then goes to sign in), else say why.
      await api("/v1/session").catch(() => null);
      this.onRefused(event.reason || "refused");
      return;
    }
    if (!opened && ++this.refusals >= 2) {
      this.onRefused("The service refused this view (no permission, or not available).");
      return;
    }
    this.retry();
  }

  retry() {
    showStatus("Connection lost: reconnecting…", "warning");
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 10000);
  }

  close() {
    this.stopped = true;
    if (this.socket) this.socket.close();
  }
}

// -- the page --------------------------------------------------------------------------

/** Say something in the page's status line (a live region screen readers announce). */
export function showStatus(text, kind = "info") {
  const line = document.getElementById("status");
  line.textContent = text;
  line.dataset.kind = kind;
  line.hidden = false;
}

export function clearStatus() {
  const line = document.getElementById("status");
  line.hidden = true;
  line.textContent = "";
}

/** Build an element: `el("td", {class: "x"}, "text", child)`. Text is never parsed as
 * HTML, so what a customer typed cannot become markup. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** Sentiment (-1 .. 1) as a colour: red, amber, grey, green. */
export function tone(value) {
  if (value === null || value === undefined) return "none";
  if (value <= -0.5) return "angry";
  if (value < -0.05) return "negative";
  if (value <= 0.05) return "neutral";
  return "positive";
}

/** A line of sentiment values (-1 .. 1) as a small SVG, with a zero line. */
export function sparkline(values, { width = 120, height = 28, label = "sentiment trend" } = {}) {
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                             "aria-label": label, class: "sparkline" });
  const y = (v) => ((1 - v) / 2) * (height - 4) + 2;
  chart.append(svg("line", { x1: 0, x2: width, y1: y(0), y2: y(0), class: "zero" }));
  if (values.length) {
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${y(v).toFixed(1)}`);
    chart.append(svg("polyline", { points: points.join(" "), class: `line ${tone(values.at(-1))}` }));
    const [x, y0] = points.at(-1).split(",");
    chart.append(svg("circle", { cx: x, cy: y0, r: 2.5, class: `dot ${tone(values.at(-1))}` }));
  }
  return chart;
}

/** A sentiment timeline: points (seconds, -1 .. 1) with axis labels, and marks. */
export function timeline(points, { width = 640, height = 160, marks = [], label = "customer sentiment over time" } = {}) {
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
                             class: "timeline", preserveAspectRatio: "none" });
  const left = 28, bottom = height - 16;
  const y = (v) => ((1 - v) / 2) * (bottom - 8) + 8;
  const times = points.map((p) => p[0]).concat(marks.map((m) => m[0]));
  const t0 = Math.min(...times, Infinity), t1 = Math.max(...times, -Infinity);
  const x = (t) => left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (width - left - 8) : 0);
  for (const v of [1, 0, -1]) {
    chart.append(svg("line", { x1: left, x2: width, y1: y(v), y2: y(v), class: v ? "grid" : "zero" }));
    const text = svg("text", { x: 2, y: y(v) + 4, class: "axis" });
    text.textContent = v > 0 ? "+1" : String(v);
    chart.append(text);
  }
  for (const [t, kind] of marks) {
    chart.append(svg("line", { x1: x(t), x2: x(t), y1: 8, y2: bottom, class: `mark ${kind}` }));
  }
  if (points.length) {
    chart.append(svg("polyline", { class: "line",
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
    for (const [t, v] of points) {
      chart.append(svg("circle", { cx: x(t), cy: y(v), r: 3, class: `dot ${tone(v)}` }));
    }
  }
  return chart;
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}

export function score(value) {
  return value === null || value === undefined ? "–" : value.toFixed(2);
}

/** Text with `highlights` ([start, end) offsets) marked. */
export function highlighted(text, highlights = []) {
  const parts = [];
  let at = 0;
  for (const [start, end] of [...highlights].sort((a, b) => a[0] - b[0])) {
    if (start < at) continue;
    parts.push(text.slice(at, start), el("mark", {}, text.slice(start, end)));
    at = end;
  }
  parts.push(text.slice(at));
  return parts;
}

// Sign out: revoke the session, then the sign-in page.
document.getElementById("sign-out")?.addEventListener("click", async () => {
  await api("/v1/session", { method: "DELETE" }).catch(() => null);
  location.assign("/console/sign-in");
});

/** A validation problem as a person reads it: "below: Input should be …". */
export function describeDetail(detail) {
  const where = (detail.loc || []).filter((part) => part !== "body").join(".");
  return where ? `${where}: ${detail.msg}` : detail.msg;
}
