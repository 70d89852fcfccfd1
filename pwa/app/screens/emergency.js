// Break-the-glass (issue 18 item 7): find a patient outside the care team, request emergency access with a
// reason, the banner on that patient's screens while the grant lasts, and the chart's removal when it ends.
// Every rule and every sentence is Python's (pyclient.views.break_glass); online only.
import { state } from "../state.js";
import { h, field, input, screen, sameRoute, banner, showErrors, formFields, crumbs } from "../ui.js";
import { localDateOrder } from "../routes.js";

const tz = () => new Date().getTimezoneOffset(); // minutes behind UTC: Python writes the expiry in local time

/** The "Emergency access" control on the patient list, for roles the server allows (else nothing). */
export async function emergencyEntry() {
  const card = document.querySelector("#main section.card");
  if (!card || document.getElementById("emergency-link")) return;
  const allowed = await state.py.call("emergency_allowed").catch(() => false);
  if (!allowed || document.getElementById("emergency-link")) return;
  card.append(h("p", { class: "emergency-entry" },
    h("a", { class: "btn ghost", id: "emergency-link", href: "#/emergency" }, "Patient not on your list? Emergency access")));
}

export async function emergencyScreen() {
  const still = sameRoute();
  const intro = await state.py.call("emergency_intro", { online: navigator.onLine });
  if (!still()) return;
  const back = crumbs();
  if (!intro.allowed) {
    screen("Emergency access", back, h("section", { class: "card", id: "emergency" }, h("h2", {}, "Emergency access"), h("p", {}, intro.message)));
    return;
  }
  const result = h("p", { id: "bg-result", class: "muted", "aria-live": "polite" });
  const requestBox = h("div", { id: "bg-request-box" });
  const lookup = h("form", { class: "form", id: "bg-lookup", novalidate: true },
    h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
    h("div", { class: "row2" },
      field("Family name", input({ name: "family", autocomplete: "off" }), { name: "family" }),
      field("Birth date", input({ name: "birth_date", autocomplete: "off", placeholder: "e.g. 1961-03-09" }), { name: "birth_date" })),
    field("Or medical record number", input({ name: "mrn", autocomplete: "off", placeholder: "e.g. MRN-000021" }), { name: "mrn" }),
    h("div", { class: "actions" }, h("button", { class: "btn", type: "submit" }, "Find patient")));
  lookup.addEventListener("submit", async (e) => {
    e.preventDefault();
    showErrors(lookup, null);
    requestBox.replaceChildren();
    result.textContent = "";
    const v = formFields(lookup);
    try {
      const r = await state.py.call("emergency_lookup", { family: v.family, birth_date: v.birth_date, mrn: v.mrn, date_order: localDateOrder() });
      result.textContent = r.message;
      result.className = r.token ? "bg-found" : "muted";
      if (r.token) requestBox.append(requestForm(r.token));
    } catch (err) { showErrors(lookup, err); }
  });
  const note = h("div", { id: "bg-offline-slot" });
  screen("Emergency access", back, h("section", { class: "card narrow wide", id: "emergency" },
    h("h2", {}, "Emergency access (break the glass)"),
    h("p", {}, intro.message), note, lookup, result, requestBox));
  // Online only: offline, say so in words and offer nothing to press until the connection is back.
  const connection = async () => {
    if (!document.getElementById("bg-lookup")) { window.removeEventListener("online", connection); window.removeEventListener("offline", connection); return; }
    const now = await state.py.call("emergency_intro", { online: navigator.onLine }).catch(() => intro);
    note.replaceChildren(now.offline ? h("p", { class: "form-error", id: "bg-offline", role: "status" }, now.offline) : "");
    for (const b of document.querySelectorAll("#emergency button[type=submit]")) b.disabled = !!now.offline;
  };
  window.addEventListener("online", connection);
  window.addEventListener("offline", connection);
  connection();
}

function requestForm(token) {
  const form = h("form", { class: "form", id: "bg-request", novalidate: true },
    h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
    field("Reason for emergency access", h("textarea", { name: "reason", rows: 3 }), { name: "reason",
      hint: "At least 10 characters, e.g. “Unresponsive in the emergency department, allergies unknown”. It is recorded with your name." }),
    h("div", { class: "actions" }, h("button", { class: "btn danger", type: "submit" }, "Request emergency access")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showErrors(form, null);
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const g = await state.py.call("emergency_request", { token, reason: formFields(form).reason });
      await openGranted(g.patientId);
    } catch (err) { showErrors(form, err); } finally { btn.disabled = false; }
  });
  return form;
}

/** The grant is on the server: pull the chart onto this device (the sync scope now includes it), then open it. */
async function openGranted(pid) {
  screen("Emergency access", h("section", { class: "card center", id: "bg-downloading" }, h("div", { class: "spinner", "aria-hidden": "true" }),
    h("h2", {}, "Emergency access granted"), h("p", { class: "muted" }, "Downloading this patient's chart and encrypting it on this device…")));
  for (let i = 0; i < 40; i++) {
    await state.runner.kick("break-glass");
    const ok = await state.py.call("chart", { patient_id: pid }).then(() => true, () => false);
    if (ok) { location.hash = `#/patient/${encodeURIComponent(pid)}`; return; }
    await new Promise((r) => setTimeout(r, 500));
  }
  banner("The chart did not arrive yet. It will appear in your patient list when the download finishes.", { kind: "warn" });
  location.hash = "#/patients";
}

/** The banner on a patient's screens while an emergency grant lasts: its element (null for the care team's
 * patients), fetched with the screen and drawn with it in one step (placeEmergencyBanner). */
export async function emergencyBannerEl(pid) {
  const b = await state.py.call("emergency_banner", { patient_id: pid, tz_offset_min: tz() }).catch(() => null);
  return b ? h("section", { class: "card emergency-banner", id: "emergency-banner", role: "status" }, h("strong", {}, "Emergency access"), " ", b.message) : null;
}

/** Put the banner under the breadcrumbs (replacing one already there). */
export function placeEmergencyBanner(el) {
  document.getElementById("emergency-banner")?.remove();
  if (!el) return;
  const crumbs = document.querySelector("#main .crumbs");
  if (crumbs) crumbs.after(el); else document.getElementById("main").prepend(el);
}

// The end of a grant removes the patient from this device: at once when the server says so over the sync
// socket (a privacy officer revoked it, or it was ended elsewhere), by the clock every few seconds, and by the
// server's list of running grants every 15 s while online (the fallback when the socket is down). The next
// pull drops what is left.
let lastServerCheck = 0;
async function sweep({ online, ended = [] }) {
  if (!state.unlocked || !state.py || state.firstSync) return;
  const r = await state.py.call("emergency_sweep", { online, ended }).catch(() => null);
  if (!r || !r.removed.length) return;
  const parts = state.route || [];
  if (parts[0] === "patient" && r.removed.includes(parts[1])) {
    location.hash = "#/patients";
    banner(r.message, { kind: "info", scope: "#/patients" });
  } else if (parts[0] !== "patient") {
    banner(r.message, { kind: "info", scope: location.hash });
  }
}
setInterval(() => {
  const online = navigator.onLine && Date.now() - lastServerCheck > 15000;
  if (online) lastServerCheck = Date.now();
  sweep({ online });
}, 3000);
window.addEventListener("omnicare-emergency-ended", (e) => {
  const id = Number(e.detail?.grantId);
  if (Number.isInteger(id)) sweep({ online: false, ended: [id] });
});
