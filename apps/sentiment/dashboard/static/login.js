// The sign-in form: the key goes to /dashboard/session, which sets a session cookie for it.
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  const response = await fetch("/dashboard/session", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({key: document.getElementById("key").value}),
  });
  if (response.ok) { window.location.assign("/dashboard"); return; }
  const body = await response.json().catch(() => ({}));
  error.textContent = typeof body.detail === "string" ? body.detail : "Sign-in failed";
  error.hidden = false;
});
