// HTTP for the app and for Python (pyclient sync): session cookie + CSRF header, never throws on HTTP errors.
import { WORDS } from "./words.js";

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : null;
}

async function csrfToken() {
  let token = cookie("csrftoken");
  if (!token) {
    const r = await fetch("/api/auth/csrf", { credentials: "same-origin" });
    token = (await r.json()).csrfToken;
  }
  return token;
}

// The session is bound to this device at its first sync: every request names the device (OmniCare-Device-Id),
// and the server refuses the cookie without it, so a device wiped by an offline sign-out leaves a cookie that
// reads nothing (issue 10, item 15). main.js tells us where the id lives.
let deviceIdOf = () => null;
export function deviceIdFrom(fn) { deviceIdOf = fn; }

/** For Python: returns [status, bodyText, retryAfter|null, OmniCare-Device header|null]; status 0 = no network. */
export async function http(method, path, body) {
  try {
    const headers = { Accept: "application/json" };
    const dev = deviceIdOf();
    if (dev) headers["OmniCare-Device-Id"] = dev;
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = await csrfToken();
    }
    const r = await fetch(path, { method, headers, body: method === "GET" ? undefined : body, credentials: "same-origin" });
    return [r.status, await r.text(), r.headers.get("Retry-After"), r.headers.get("OmniCare-Device")];
  } catch (err) {
    return [0, String(err), null, null];
  }
}

export async function apiJson(method, path, data) {
  const [status, text, retryAfter] = await http(method, path, data === undefined ? undefined : JSON.stringify(data));
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status, json, retryAfter };
}

/** Sign in; `code` is the TOTP code when the server asked for one (401 with details code mfa-required). */
export async function login(username, password, code = "") {
  await finishPendingSignOut(); // an earlier offline sign-out reaches the server before the new sign-in
  await fetch("/api/auth/csrf", { credentials: "same-origin" });
  const r = await apiJson("POST", "/api/auth/login", code ? { username, password, code } : { username, password });
  r.mfaRequired = r.status === 401 && issueCode(r.json) === "mfa-required";
  return r;
}

// Outcomes (pyclient/PROTOCOL.md §9). The sign-in screen can run before the browser's Python has loaded, so
// this file cannot ask pyclient.outcome; instead the server words every sign-in outcome with it (one issue,
// its diagnostics the whole sentence, e.g. the wait after too many failures: pyclient.outcome.sign_in_paused)
// and this file only shows that sentence and reads the details code. No wording rule lives here: when no
// server answered at all, the words are Python's too, generated into words.js (pyclient.outcome.BROWSER_WORDS).

/** The OperationOutcome's details code (e.g. "mfa-required"), or null (pyclient.outcome.code). */
export function issueCode(json) {
  const issue = json && json.issue && json.issue[0];
  return (issue && issue.details && issue.details.coding && issue.details.coding[0] && issue.details.coding[0].code) || null;
}

/** What the sign-in screen says for a failed attempt: the server's sentence as it is. */
export function loginError(r) {
  if (r.status === 0) return WORDS.noServer;
  return outcomeText(r.json, WORDS.signInFailed);
}

export async function logout() {
  return apiJson("POST", "/api/auth/logout", {});
}

// ---------------------------------------------------------------- sign-out made offline (issue 10, item 15)
// Signing out wipes the device at once; if the server could not be told (offline), a flag remembers it and
// the server-side sign-out is completed before anything else the next time the browser is online.
const PENDING_SIGNOUT = "omnicare.signout.pending";

/** Tell the server; true when the server session is gone (signed out now, or already gone: 401/403). */
export async function serverSignOut() {
  try {
    await fetch("/api/auth/csrf", { credentials: "same-origin" });
    const r = await logout();
    return r.status === 200 || r.status === 401 || r.status === 403;
  } catch { return false; }
}

export function markSignOutPending() {
  try { localStorage.setItem(PENDING_SIGNOUT, String(Date.now())); } catch { /* storage disabled */ }
}

export function signOutPending() {
  try { return localStorage.getItem(PENDING_SIGNOUT) !== null; } catch { return false; }
}

/** If a sign-out is pending and we are online, complete it now; returns true when nothing is pending any more. */
export async function finishPendingSignOut() {
  if (!signOutPending()) return true;
  if (!navigator.onLine) return false;
  if (!(await serverSignOut())) return false;
  try { localStorage.removeItem(PENDING_SIGNOUT); } catch { /* storage disabled */ }
  return true;
}

export async function me() {
  return apiJson("GET", "/api/auth/me");
}

/** The server's sentence (the first issue's diagnostics: one issue on every answer this file reads). */
export function outcomeText(json, fallback) {
  const issue = json && json.issue && json.issue[0];
  return (issue && issue.diagnostics) || fallback;
}
