// Screens. Pure DOM building (textContent only, never innerHTML with data); no inline handlers (CSP-friendly).
import * as full from "./screens/chart_full.js"; // issue 18 item 5

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

let uid = 0;
/** A labelled form field; error text is linked with aria-describedby. */
export function field(label, input, { hint, name } = {}) {
  const id = input.id || `f${++uid}`;
  input.id = id;
  if (name) input.name = name;
  const err = h("p", { class: "field-error", id: id + "-err", "aria-live": "polite" });
  input.setAttribute("aria-describedby", id + "-err" + (hint ? " " + id + "-hint" : ""));
  // A field's error is about the value that was refused: once the clinician changes it, the error goes (it
  // said "Choose the clinician…" under a clinician already chosen); the next save checks again.
  const clear = () => { err.textContent = ""; input.removeAttribute("aria-invalid"); };
  input.addEventListener("input", clear);
  input.addEventListener("change", clear);
  return h("div", { class: "field", dataset: { field: name || "" } },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: id + "-hint" }, hint) : null,
    input, err);
}

// Issue 18: a message that looks technical (an exception, JSON, "null") is never shown as it is. Python words
// every message it sends; this is the net for errors raised in the browser itself (a failed fetch, a TypeError).
const TECHNICAL = /\bnull\b|\bundefined\b|\bNone\b|Traceback|Exception|Error:|[{}]|\[object /;
const UNEXPECTED = "Something went wrong on this device and that action did not finish. Your saved changes are safe. Try again; if it keeps happening, tell your administrator.";
export function plain(text) {
  const t = String(text ?? "").trim();
  if (!t || TECHNICAL.test(t)) { if (t) console.warn("message not shown:", t); return UNEXPECTED; }
  return t;
}

export function showErrors(form, err) {
  for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const msg = form.querySelector(".form-error");
  if (msg) msg.textContent = err ? plain(err.message) : "";
  if (!err) return;
  let first = null;
  for (const [name, text] of Object.entries(err.fields || {})) {
    const wrap = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!wrap) { if (msg && name === "form") msg.textContent = text; continue; }
    wrap.querySelector(".field-error").textContent = plain(text);
    const input = wrap.querySelector("input,select,textarea");
    if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
  }
  (first || msg)?.focus?.();
}

let shownScreen = ""; // hash + title of the screen on display: a redraw of the same screen keeps the focus
/** A screen drawn after an await must still be on the route it was asked for: a chart redraw begun before
 * "Recovery file" was tapped finished after it and replaced the recovery screen under the clinician's hand (CI on
 * 3cb07ef). Call at the start of an async screen; the returned function says whether the route is still the same. */
export function sameRoute() {
  const here = location.hash;
  // A redraw begun between a navigation and its hashchange belongs to no route: it never draws. It was decided on
  // the old route and would draw the old screen under the new hash — and, finishing after the new screen, over
  // it (the patient list over the emergency lookup just opened, gone for good).
  const routed = entered === null || entered === here;
  return () => routed && location.hash === here;
}

let entered = null;
/** ``route()`` says which hash it is drawing: screens begun for any other (a redraw of the old one) stay undrawn. */
export function routeEntered(hash) { entered = hash; }

export function screen(title, ...content) {
  const main = document.getElementById("main");
  const heading = h("h1", { class: "sr-only", tabindex: "-1" }, title);
  const was = document.activeElement; // a redraw must not drop this to <body> (see below)
  const focusInside = !!was && was !== main && main.contains(was);
  // Optional parts come as null: never let one reach the screen as the text "null".
  main.replaceChildren(heading, ...content.flat().filter((c) => c != null && c !== false));
  document.title = `${title} · OmniCare`;
  // Accessibility (issue 18, WCAG 2.4.3 / 4.1.3): a new screen takes the focus to its heading (not <body>) and
  // is announced. Callers that focus a field next (sign-in, forms) simply take it from there.
  const key = location.hash + "\n" + title;
  if (key !== shownScreen) {
    shownScreen = key;
    window.scrollTo(0, 0); // a new screen starts at its top, not where the last one was scrolled to
    heading.focus({ preventScroll: true });
    announce(title);
  } else if (focusInside && !main.contains(document.activeElement)) {
    // The same screen redrawn (a sync arrived, a badge changed) replaced the focused element: focus its
    // successor (same id) or the heading, never <body> — this can happen at any moment after first sync.
    const same = was.id ? document.getElementById(was.id) : null;
    (same && main.contains(same) ? same : heading).focus({ preventScroll: true });
  }
  return main;
}

/** Says ``text`` to screen readers through one polite live region (created on first use). */
export function announce(text) {
  let say = document.getElementById("announce");
  if (!say) {
    say = h("p", { id: "announce", class: "sr-only", "aria-live": "polite", "aria-atomic": "true" });
    document.body.append(say);
  }
  say.textContent = text;
}

export function formFields(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = v;
  return out;
}

const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "never");

/** The always-visible status pill. Words and state from Python (s.view: pyclient.views.status, locked and
 * signed out too); only the time is formatted here (the browser knows the locale). */
export function renderStatus(s, { online }) {
  const box = document.getElementById("sync");
  const text = box.querySelector(".sync-text");
  const v = online ? s.view.online : s.view.offline;
  const label = v.text + (v.timeLabel ? ` · ${v.timeLabel} ${fmtTime(s.lastSuccess)}` : "");
  const review = v.review;
  box.dataset.state = v.state;
  box.dataset.pending = String(s.pending || 0);
  box.dataset.rejected = String(s.rejected || 0);
  box.dataset.synced = String(!!s.synced);
  text.textContent = label;
  // One "Review" link: conflicts first (they block the record), then refused changes (issue 18).
  const link = box.querySelector("a");
  if (link && link.getAttribute("href") !== review) link.remove();
  if (review && !box.querySelector("a")) box.append(h("a", { href: review, class: "conflict-link" }, "Review"));
}

export function progress(show, received, fraction) {
  const p = document.getElementById("progress");
  p.hidden = !show;
  if (!show) return;
  const bar = p.querySelector(".bar");
  const text = p.querySelector(".progress-text");
  if (fraction) {
    const pct = Math.min(100, Math.round(100 * fraction));
    bar.style.setProperty("--pct", pct + "%");
    bar.setAttribute("aria-valuenow", String(pct));
    bar.classList.remove("indeterminate");
    text.textContent = `First sync: ${received} records downloaded and encrypted (${pct} %)`;
  } else {
    bar.classList.add("indeterminate");
    bar.removeAttribute("aria-valuenow");
    text.textContent = `First sync: ${received} records downloaded and encrypted`;
  }
}

/**
 * The banner under the header. `scope`: the route (location.hash) the message is about — the outcome of an action
 * on one screen ("… registered", a refused change). It goes when the clinician moves to another patient or screen,
 * so patient A's message is never read on patient B's chart. Without a scope it is about the whole app (session
 * ended, conflicts, online only) and stays until dealt with or dismissed.
 */
export function banner(message, { kind = "error", action, scope, onDismiss } = {}) {
  const b = document.getElementById("banner");
  if (!message) { b.hidden = true; b.replaceChildren(); delete b.dataset.scope; return; }
  b.hidden = false;
  b.dataset.kind = kind;
  if (scope) b.dataset.scope = scope; else delete b.dataset.scope;
  b.replaceChildren(...[h("span", {}, plain(message)), action ? h("button", { type: "button", class: "btn small", onclick: action.run }, action.label) : null,
    h("button", { type: "button", class: "btn ghost small", "aria-label": "Dismiss", onclick: () => { banner(null); onDismiss?.(); } }, "✕")].filter(Boolean));
}

/** The route changed (routes.js): a banner scoped to another screen is no longer about what is on screen. */
export function leaveRoute(hash) {
  const b = document.getElementById("banner");
  if (!b.hidden && b.dataset.scope && b.dataset.scope !== hash) banner(null);
}

/** Modal confirmation (no window.confirm: works in installed mode, styled, keyboard accessible). */
export function confirmDialog(title, message, okLabel, { danger = false } = {}) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { class: "dialog", "aria-labelledby": "dlg-title" },
      h("h2", { id: "dlg-title" }, title), h("p", {}, message),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "btn ghost", value: "cancel", onclick: () => dlg.close("cancel") }, "Cancel"),
        h("button", { type: "button", class: danger ? "btn danger" : "btn", value: "ok", onclick: () => dlg.close("ok") }, okLabel)));
    dlg.addEventListener("close", () => { dlg.remove(); resolve(dlg.returnValue === "ok"); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}


let conflictIds = new Set(); // ids in conflict on the chart being drawn (issue 18): "conflict", not "pending sync"
function pendingBadge(item) {
  if (conflictIds.has(item.id)) return h("a", { class: "badge conflict", href: "#/conflicts" }, "conflict");
  return item.pending ? badge("pending sync", "pending") : null;
}

export function patientRow(p) {
  return h("li", {},
    h("a", { href: `#/patient/${encodeURIComponent(p.id)}`, class: "patient-row", dataset: { id: p.id } },
      h("span", { class: "avatar", "aria-hidden": "true" }, (p.given[0] || "") + (p.family[0] || "")),
      h("span", { class: "who" }, h("strong", {}, p.display), h("small", {}, `${p.gender || "—"} · born ${p.birthDate || "—"}`)),
      h("span", { class: "mrn" }, p.mrn), pendingBadge(p)));
}

/** "Show more" under a list that shows a page (issue 13): the count above it covers every patient. */
export function moreButton(label, onMore) {
  return h("p", { class: "show-more" }, h("button", { type: "button", class: "btn ghost", id: "show-more", onclick: onMore }, label));
}

export function patientList({ results, query, kind, ms, total, more, moreLabel, onSearch, onMore, error, summary: said }) {
  const input = h("input", { type: "search", id: "q", name: "q", value: query || "", autocomplete: "off",
    placeholder: "Name, MRN or birth date", "aria-controls": "patients" });
  const form = h("form", { class: "search", role: "search", onsubmit: (e) => { e.preventDefault(); onSearch(input.value); } },
    h("label", { for: "q", class: "sr-only" }, "Search patients by name, MRN or birth date"),
    input, h("button", { class: "btn", type: "submit" }, "Search"));
  let timer = null;
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => onSearch(input.value), 150); });
  const n = total ?? results.length; // every match, not only the page drawn
  const summary = error || (query
    ? `${n < results.length ? "" : results.length < n ? `Showing ${results.length} of ` : ""}${n} match${n === 1 ? "" : "es"} for “${query}” (${kind}, ${ms} ms, encrypted search)`
    : said || `${results.length} patients on this device`); // said: Python's words (online only keeps none)
  return [h("section", { class: "card" }, h("h2", {}, "Patients"), form, h("p", { class: error ? "form-error" : "muted", id: "result-summary", "aria-live": "polite" }, summary),
    results.length
      ? h("ul", { class: "patients", id: "patients" }, results.map(patientRow))
      : h("p", { class: "empty", id: "patients" }, error ? "" : query ? "No patient matches. Try the family name, the MRN (e.g. MRN-000001) or a birth date." : "No patients yet. They appear after the first sync."),
    more && onMore ? moreButton(moreLabel, onMore) : null)];
}

function section(title, action, ...body) {
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, title), action), ...body);
}

function actionLink(href, label) {
  return h("a", { class: "btn small", href }, label);
}

/** Issue 17: a section never says "none recorded" when some of its records could not be verified. */
function unverified(n, one, many) {
  return n ? h("p", { class: "unverified", role: "note" },
    `${n} ${n === 1 ? one : many} could not be verified on this device and ${n === 1 ? "is" : "are"} not shown.`) : null;
}

export function chartScreen(c, { onAllergy, onMed, onNka }) {
  conflictIds = new Set(c.conflictIds || []);
  const p = c.patient;
  const unv = (c.integrity && c.integrity.byType) || {};
  const pid = encodeURIComponent(p.id);
  const can = { recordVitals: true, addAllergy: true, updateAllergy: true, startMedication: true, changeMedication: true,
    stopMedication: true, writeNote: true, editDetails: true, addProblem: true, resolveProblem: true, ...(c.actions || {}) };
  const header = h("section", { class: "card patient-head" },
    h("div", { class: "avatar big", "aria-hidden": "true" }, (p.given[0] || "") + (p.family[0] || "")),
    h("div", { class: "who" },
      h("h2", { id: "patient-name" }, p.display, " ", pendingBadge(p)),
      h("dl", { class: "demo" },
        h("div", {}, h("dt", {}, "MRN"), h("dd", {}, p.mrn || "—")),
        h("div", {}, h("dt", {}, "Born"), h("dd", { id: "birth-date" }, p.birthDate || "—")),
        h("div", {}, h("dt", {}, "Gender"), h("dd", {}, p.gender || "—")),
        h("div", {}, h("dt", {}, "Phone"), h("dd", { id: "phone" }, p.phone || "—")),
        h("div", {}, h("dt", {}, "Address"), h("dd", {}, p.address || "—")))),
    h("div", { class: "head-actions" }, // only what the role allows (c.actions: server matrix, issue 18)
      can.recordVitals ? actionLink(`#/patient/${pid}/vitals`, "Record vitals") : null,
      can.addAllergy ? actionLink(`#/patient/${pid}/allergy`, "Add allergy") : null,
      can.startMedication ? actionLink(`#/patient/${pid}/medication`, "Start medication") : null,
      can.writeNote ? actionLink(`#/patient/${pid}/note`, "Write note") : null,
      can.editDetails ? h("a", { class: "btn small ghost", href: `#/patient/${pid}/demographics` }, "Edit details") : null));

  const assertions = new Set(c.banner?.allergies?.assertionIds || []); // "no known allergy" is said, not listed
  c.allergies = c.allergies.filter((a) => !assertions.has(a.id));
  const nkaButton = onNka && can.addAllergy && c.banner?.allergies?.state === "unassessed" // asked, none: say so
    ? h("button", { type: "button", class: "btn small ghost", id: "record-nka", onclick: onNka }, "No known allergies") : null;
  const allergies = section("Allergies", nkaButton, unverified(unv.AllergyIntolerance, "allergy", "allergies"),
    c.allergies.length ? h("ul", { class: "rows", id: "allergies" }, c.allergies.map((a) => h("li", { class: a.status !== "active" ? "inactive" : "", dataset: { id: a.id } },
      h("div", { class: "grow" }, h("strong", {}, a.substance), a.reaction ? h("small", {}, " — " + a.reaction) : null, " ", pendingBadge(a)),
      // The two selects wrap together, under the name, when the column is narrow (their words: pyclient.choices).
      can.updateAllergy ? h("span", { class: "row-actions" }, h("label", { class: "inline" }, h("span", { class: "sr-only" }, `Criticality of ${a.substance}`),
        h("select", { "aria-label": `Criticality of ${a.substance}`, class: "crit", onchange: (e) => onAllergy(a.id, { criticality: e.target.value }) },
          c.choices.criticality.map(([v, words]) => h("option", { value: v, selected: v === a.criticality }, words)))),
        h("label", { class: "inline" }, h("span", { class: "sr-only" }, `Status of ${a.substance}`),
        h("select", { "aria-label": `Status of ${a.substance}`, class: "astatus", onchange: (e) => onAllergy(a.id, { status: e.target.value }) },
          c.choices.allergyStatus.map(([v, words]) => h("option", { value: v, selected: v === a.status }, words))))) : null))) : h("p", { class: "empty" }, unv.AllergyIntolerance
      ? "The allergy list could not be verified on this device: do not rely on it until it is downloaded again."
      : c.banner && c.banner.allergies.state === "nka" ? c.banner.allergies.text + " (recorded)."
      : "Allergies not yet assessed."));

  const problems = full.problemsSection(c, { can, pid, pendingBadge, unverified: unverified(unv.Condition, "problem", "problems") });

  const meds = section("Medications", null, unverified(unv.MedicationRequest, "medication", "medications"),
    c.medications.length ? h("ul", { class: "rows", id: "medications" }, c.medications.map((m) => h("li", { class: m.status !== "active" ? "inactive" : "", dataset: { id: m.id } },
      h("div", { class: "grow" }, h("strong", {}, m.name), h("small", {}, (m.dosage ? " — " + m.dosage : "") + (m.reason ? ` · ${m.status}: ${m.reason}` : "")), " ", pendingBadge(m)),
      badge(m.status, m.status === "active" ? "active" : ""),
      m.status === "active" || m.dispensed ? badge(m.dispensed ? `dispensed ${m.dispensed === "yes" ? "" : m.dispensed}`.trim() : "not dispensed", m.dispensed ? "dispensed" : "undispensed") : null,
      m.status === "active" && can.changeMedication ? h("span", { class: "row-actions" },
        h("button", { type: "button", class: "btn small ghost", onclick: () => onMed(m, "change") }, "Change"),
        h("button", { type: "button", class: "btn small ghost danger-text", onclick: () => onMed(m, "stop") }, "Stop")) : null))) : h("p", { class: "empty" }, "No medications."));

  const vitals = full.vitalsSection(c, { pendingBadge, unverified: unverified(unv.Observation, "measurement or result", "measurements or results") });

  const labs = section("Recent labs", null,
    c.labs.length ? h("table", { class: "obs" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Test"), h("th", { scope: "col" }, "Latest"), h("th", { scope: "col" }, "When"))),
      h("tbody", {}, c.labs.map((v) => h("tr", { class: v.critical ? "critical" : v.abnormal ? "abnormal" : "", dataset: { id: v.id } },
        h("th", { scope: "row" }, v.name),
        h("td", {}, v.value, " ", v.abnormal ? badge(v.flagWords, v.critical ? "flag critical" : "flag") : null,
          v.status === "preliminary" ? badge("preliminary", "prelim") : null),
        h("td", {}, v.when))))) : h("p", { class: "empty" }, "No lab results."),
    (c.labTrends || []).length ? h("details", { class: "more", id: "lab-trends" }, h("summary", {}, `Lab trends (${c.labTrends.length})`),
      h("div", { class: "trends2" }, c.labTrends.map(full.trendSvg))) : null);

  const notes = full.notesSection(c, { pendingBadge, unverified: unverified(unv.DocumentReference, "note", "notes") });

  const dated = (text, date) => h("div", { class: "grow" }, h("strong", {}, text), h("small", {}, date ? " " + date : ""));

  const counts = c.counts || {};
  const immunizations = full.listSection("Immunizations", "immunizations", c.immunizations || [], (i) => h("li", { class: i.status !== "completed" ? "inactive" : "", dataset: { id: i.id } },
    dated(i.vaccine || "Vaccine", i.date), " ", pendingBadge(i), badge(i.statusText, i.status === "completed" ? "active" : "")),
  { total: counts.Immunization, empty: "No immunizations recorded." });

  const reports = full.reportsSection(c, { pendingBadge });

  const procedures = full.listSection("Procedures", "procedures", c.procedures || [], (x) => h("li", { class: x.status !== "completed" ? "inactive" : "", dataset: { id: x.id } },
    dated(x.name || "Procedure", x.date), " ", pendingBadge(x), x.status !== "completed" ? badge(x.statusText) : null),
  { total: counts.Procedure, empty: "No procedures recorded." });

  const appointments = full.listSection("Appointments", "appointments", c.appointments || [], (a) => h("li", { class: ["cancelled", "noshow"].includes(a.status) ? "inactive" : "", dataset: { id: a.id } },
    dated(a.what, a.start), " ", pendingBadge(a), badge(a.statusText, a.status === "booked" ? "active" : "")),
  { total: counts.Appointment, empty: "No appointments." });

  const encounters = full.listSection("Visits", "encounters", c.encounters || [], (e) => h("li", { dataset: { id: e.id } },
    dated(e.type || "Visit", e.date), " ", pendingBadge(e), e.status && e.status !== "finished" ? badge(e.status) : null),
  { total: counts.Encounter, empty: "No visits recorded." });

  const integrity = c.integrity ? h("section", { class: "card integrity-notice", id: "integrity-notice", role: "alert" },
    h("h2", {}, "Part of this record could not be verified"), h("p", {}, c.integrity.message)) : null;
  return [full.patientBanner(c), header, integrity, h("div", { class: "grid" },
    h("div", { class: "col" }, allergies, meds, full.dispensesSection(c, { pendingBadge }), problems, immunizations, appointments),
    h("div", { class: "col" }, vitals, labs, reports, procedures, encounters, notes, full.otherSections(c, { pendingBadge })))].filter(Boolean);
}

/** The breadcrumb back link at the top of a screen: to the patient list unless told where. */
export function crumbs(href = "#/patients", label = "Patients") {
  return h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href }, "← " + label));
}

export function formScreen(title, patient, fields, { submit, cancelHref }) {
  const form = h("form", { class: "card form", novalidate: true },
    h("div", { class: "card-head" }, h("h2", {}, title), h("span", { class: "muted" }, patient ? `${patient.display} · ${patient.mrn}` : "")),
    h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
    ...fields,
    h("div", { class: "actions" }, h("a", { class: "btn ghost", href: cancelHref }, "Cancel"), h("button", { class: "btn", type: "submit" }, "Save")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      showErrors(form, null);
      await submit(formFields(form), form);
    } catch (err) {
      showErrors(form, err);
    } finally {
      btn.disabled = false;
    }
  });
  return form;
}

export function input(attrs) {
  return h("input", { autocomplete: "off", ...attrs });
}

export function select(name, options, selected) {
  return h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: v === selected }, label)));
}

// The conflict screen lives in screens/conflicts.js (issue 18).
