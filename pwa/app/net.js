// HTTP for the app and for Python (pyclient sync): session cookie + CSRF header, never throws on HTTP errors.

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

/** For Python: returns [status, bodyText, retryAfter|null]; status 0 = no network. */
export async function http(method, path, body) {
  try {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = await csrfToken();
    }
    const r = await fetch(path, { method, headers, body: method === "GET" ? undefined : body, credentials: "same-origin" });
    return [r.status, await r.text(), r.headers.get("Retry-After")];
  } catch (err) {
    return [0, String(err), null];
  }
}

export async function apiJson(method, path, data) {
  const [status, text] = await http(method, path, data === undefined ? undefined : JSON.stringify(data));
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status, json };
}

export async function login(username, password) {
  await fetch("/api/auth/csrf", { credentials: "same-origin" });
  return apiJson("POST", "/api/auth/login", { username, password });
}

export async function logout() {
  return apiJson("POST", "/api/auth/logout", {});
}

export async function me() {
  return apiJson("GET", "/api/auth/me");
}

export function outcomeText(json, fallback) {
  const issue = json && json.issue && json.issue[0];
  return (issue && issue.diagnostics) || fallback;
}
