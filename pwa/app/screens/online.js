// Online only without the offline engine (issue 13 item 4): the Python runtime (WebAssembly/Pyodide) could not
// start, so this page cannot ask its own Python. The server runs the same pyclient rules instead: the mode and
// its words (POST /api/device/storage-mode), the patient list, the chart view model and the vitals validation
// (/api/online/...; pyclient/PROTOCOL.md "Online only"). Reduced screens: find a patient, read the chart,
// record vitals. Nothing is kept: no IndexedDB, no Cache Storage, no web storage; lock forgets the screen.
import * as net from "../net.js";
import { state } from "../state.js";
import { WORDS } from "../words.js";
import { h, field, screen, banner, formScreen, input, patientList, chartScreen, plain, crumbs } from "../ui.js";

let mode = null;

/** main.js, when the runtime failed: true when the server took over (online only, reduced screens). */
export async function runtimeFailed(err, { idb }) {
  console.warn("runtime failed", err);
  state.runtimeFailedAt = performance.now();
  if (!navigator.onLine) return false;
  const r = await net.apiJson("POST", "/api/device/storage-mode", { idb, runtime: false });
  if (r.status !== 200 || !r.json || r.json.mode !== "online-only") return false;
  mode = r.json;
  state.storageMode = mode;
  state.onlineOnlyAt ??= performance.now();
  banner(`${mode.text} ${mode.detail}`, { kind: "info" });
  document.getElementById("sync-now").hidden = true; // nothing to sync: every change goes straight to the server
  document.getElementById("lock").addEventListener("click", () => lockNow());
  document.getElementById("signout").addEventListener("click", () => lockNow("Signed out."));
  window.addEventListener("hashchange", () => route());
  const me = await net.me();
  if (me.status === 200) signedIn(me.json); else signIn();
  window.dispatchEvent(new CustomEvent("omnicare-storage-mode", { detail: mode }));
  return true;
}

function pill(signedInNow) {
  const box = document.getElementById("sync");
  box.dataset.state = "warn";
  box.dataset.mode = "online-only";
  box.querySelector(".sync-text").textContent = signedInNow ? mode.pill.online : mode.pill.signedOut; // Python's words
  box.title = mode.text; // the whole sentence (also in the banner): the pill stays one line (issue 18)
  box.setAttribute("aria-description", mode.text);
}

function signIn(message) {
  state.unlocked = false;
  document.getElementById("usernav").hidden = true;
  pill(false);
  const user = input({ name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = formScreen("Sign in", null, [
    h("p", { class: "muted" }, "Sign in with your OmniCare account. This device keeps no patient data, so there is no offline PIN."),
    field("Username", user, { name: "username" }), field("Password", pass, { name: "password" }),
  ], {
    cancelHref: "#/",
    submit: async ({ username, password }) => {
      if (!username || !password) throw Object.assign(new Error("Enter your username and password."), { fields: { username: username ? "" : "Required.", password: password ? "" : "Required." } });
      const r = await net.login(username.trim(), password);
      if (r.status !== 200) throw new Error(r.mfaRequired ? "This account needs a verification code: use a device where OmniCare starts fully." : net.loginError(r));
      signedIn(r.json);
    },
  });
  form.querySelector(".actions a").remove();
  form.querySelector("button[type=submit]").textContent = "Sign in";
  form.id = "signin";
  screen("Sign in", h("div", { class: "narrow" }, form));
  if (message) form.querySelector(".form-error").textContent = message;
  user.focus();
  state.onlineSigninAt ??= performance.now(); // bench/online_only_bench.py
}

function signedIn(me) {
  state.username = me.username;
  state.unlocked = true;
  document.getElementById("usernav").hidden = false;
  pill(true);
  if (!location.hash.startsWith("#/patient")) location.hash = "#/patients";
  route();
}

async function lockNow(message = "Locked. This device keeps no patient data, so sign in again to continue.") {
  state.unlocked = false;
  state.query = "";
  await net.logout().catch(() => {}); // nothing on the device to unlock: the next user signs in again
  signIn(message);
}

function route() {
  if (!state.unlocked) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "patient" && parts[1] && parts[2] === "vitals") return vitals(parts[1]);
  if (parts[0] === "patient" && parts[1]) return chart(parts[1]);
  return patients();
}

function outcome(r, fallback) {
  // One issue per field (omnicare/online/services.FieldErrors): shown under each field.
  const issues = (r.json && r.json.issue) || [];
  const fields = {};
  for (const i of issues) if (i.expression && i.expression.length === 1) fields[i.expression[0]] = i.diagnostics;
  return Object.assign(new Error(r.status === 0 ? WORDS.noServerNothingSaved : (issues[0]?.diagnostics || fallback)), { fields });
}

async function patients() {
  const run = async (q) => {
    state.query = q;
    const r = await net.apiJson("GET", `/api/online/patients?q=${encodeURIComponent(q || "")}`);
    const out = r.status === 200 ? r.json : { kind: null, results: [], ms: 0, error: outcome(r, "The search did not work.").message };
    screen("Patients", ...patientList({ ...out, query: q, onSearch: run }));
    const summary = document.getElementById("result-summary");
    if (summary && !out.error) summary.textContent = q ? `${out.results.length} match${out.results.length === 1 ? "" : "es"} for “${q}” on the server` : `${out.results.length} patients (from the server)`;
  };
  await run(state.query || "");
}

async function chart(id) {
  const r = await net.apiJson("GET", `/api/online/chart/${encodeURIComponent(id)}`);
  if (r.status !== 200) {
    screen("Not found", h("section", { class: "card" }, h("h2", {}, "Patient not available"), h("p", {}, plain(outcome(r, "This patient is not available.").message)), h("a", { class: "btn", href: "#/patients" }, "Back to patients")));
    return;
  }
  const c = r.json;
  const parts = chartScreen(c, { onAllergy: () => {}, onMed: () => {} });
  screen(c.patient.display, crumbs(),
    h("p", { class: "card muted", id: "reduced-note" }, "The offline engine did not start in this browser, so only reading the chart and recording vitals are available here."),
    ...parts);
}

async function vitals(pid) {
  const r = await net.apiJson("GET", `/api/online/chart/${encodeURIComponent(pid)}`);
  const p = r.status === 200 ? r.json.patient : null;
  const back = `#/patient/${encodeURIComponent(pid)}`;
  const num = (name, label, unit) => field(`${label} (${unit})`, input({ name, type: "text", inputmode: "decimal" }), { name });
  const form = formScreen("Record vitals", p, [
    h("div", { class: "row2" }, num("sbp", "Systolic", "mmHg"), num("dbp", "Diastolic", "mmHg")),
    h("div", { class: "row2" }, num("hr", "Heart rate", "/min"), num("rr", "Respiratory rate", "/min")),
    h("div", { class: "row2" }, num("temp", "Temperature", "°C"), num("spo2", "SpO₂", "%")),
    num("weight", "Weight", "kg"),
  ], {
    cancelHref: back,
    submit: async (values) => {
      const w = await net.apiJson("POST", `/api/online/vitals/${encodeURIComponent(pid)}`, { values });
      if (w.status !== 200) throw outcome(w, "The vitals were not saved.");
      location.hash = back;
    },
  });
  screen("Record vitals", h("div", { class: "narrow" }, form));
}
