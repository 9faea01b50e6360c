// Sign in with a password; the session cookie is set by the answer, then the page the
// user wanted (only a path of this console: never another site).
const form = document.getElementById("sign-in");
const problem = document.getElementById("sign-in-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  problem.textContent = "";
  const answer = await fetch("/v1/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username: form.username.value, password: form.password.value }),
  });
  if (!answer.ok) {
    const data = await answer.json().catch(() => ({}));
    const detail = data.detail || data;
    problem.textContent = answer.status === 401 ? "Wrong username or password."
      : detail.message || `Sign-in failed (${answer.status}).`;
    return;
  }
  const next = new URLSearchParams(location.search).get("next") || "/console";
  location.assign(next.startsWith("/console") && !next.startsWith("//") ? next : "/console");
});
