// Data-entry forms on a patient (vitals, allergy, medication, note, demographics).
import { state, hooks } from "./state.js";
import { orderWithChecks } from "./cds.js";
import { afterWrite } from "./routes.js";
import { emergencyBannerEl, placeEmergencyBanner } from "./screens/emergency.js";
import { h, field, screen, sameRoute, banner, formScreen, formFields, input, select, crumbs } from "./ui.js";
import { dosageFields, dosageValues } from "./dosage.js";
import { patientBanner } from "./screens/chart_full.js";

export async function formRoute(pid, kind) {
  const still = sameRoute();
  // The form and its emergency banner are drawn in one step, as the chart is (routes.showChart).
  let c, bgBanner;
  try {
    [c, bgBanner] = await Promise.all([state.py.call("chart", { patient_id: pid }), emergencyBannerEl(pid)]);
  } catch (err) { banner(err.message); return; }
  if (!still()) return;
  const p = c.patient;
  const back = `#/patient/${encodeURIComponent(pid)}`;
  const save = async (call, args) => {
    await state.py.call(call, args);
    await state.py.call("draft_discard").catch(() => {}); // saved: the kept draft (if any) goes
    afterWrite();
    location.hash = back;
  };
  const saved = () => { state.py.call("draft_discard").catch(() => {}); afterWrite(); location.hash = back; }; // orders: checked and saved by cds.js
  const num = (name, label, unit, attrs = {}) => field(`${label} (${unit})`, input({ name, type: "text", inputmode: "decimal", ...attrs }), { name });
  let form;
  const medId = state.route[3];
  if (kind === "vitals") {
    form = formScreen("Record vitals", p, [
      h("div", { class: "row2" }, num("sbp", "Systolic", "mmHg"), num("dbp", "Diastolic", "mmHg")),
      h("div", { class: "row2" }, num("hr", "Heart rate", "/min"), num("rr", "Respiratory rate", "/min")),
      h("div", { class: "row2" }, num("temp", "Temperature", "°C"), num("spo2", "SpO₂", "%")),
      num("weight", "Weight", "kg"),
      takenAtField(), // issue 18 item 5: vitals taken earlier (checked by pyclient: not in the future)
    ], { cancelHref: back, submit: (v) => save("record_vitals", { patient_id: pid, values: { ...v, tz_offset: new Date().getTimezoneOffset() } }) });
  } else if (kind === "problem") {
    const list = h("datalist", { id: "common-problems" }, (c.commonProblems || []).map((n) => h("option", { value: n })));
    form = formScreen("Add problem", p, [
      field("Problem", input({ name: "text", list: "common-problems", placeholder: "e.g. Hypertension" }), { name: "text", hint: "Pick a suggestion to record it coded, or type your own words." }),
      list,
      field("Onset date (optional)", input({ name: "onset", type: "date", max: localToday() }), { name: "onset" }),
    ], { cancelHref: back, submit: (v) => save("add_problem", { patient_id: pid, ...v }) });
  } else if (kind === "problem-resolve") {
    const x = (c.problemList?.active || []).find((r) => r.id === medId);
    if (!x) { location.hash = back; return; }
    form = formScreen(`Resolve ${x.text}`, p, [
      h("p", { class: "muted" }, x.onset ? `Active since ${x.onset}.` : "Active; onset not recorded."),
      field("Resolved on", input({ name: "abatement", type: "date", value: localToday(), max: localToday() }), { name: "abatement" }),
    ], { cancelHref: back, submit: (v) => save("resolve_problem", { condition_id: medId, ...v }) });
  } else if (kind === "allergy") {
    form = formScreen("Add allergy", p, [
      field("Substance", input({ name: "substance", placeholder: "e.g. Penicillin" }), { name: "substance" }),
      field("Reaction", input({ name: "reaction", placeholder: "e.g. Hives" }), { name: "reaction" }),
      field("Criticality", select("criticality", c.choices.criticality, c.choices.defaults.criticality), { name: "criticality" }),
    ], { cancelHref: back, submit: (v) => save("add_allergy", { patient_id: pid, ...v }) });
  } else if (kind === "medication") {
    // Issue 18 item 4: dose, route, frequency and duration as fields (pyclient.dosage writes the text).
    const spec = await state.py.call("dosage_form", {});
    form = formScreen("Start medication", p, [
      field("Medication", input({ name: "name", placeholder: "e.g. Metformin 500 mg tablet" }), { name: "name" }),
      dosageFields(spec),
    ], { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, name: v.name, dosage: dosageValues(f) }, saved) });
  } else if (kind === "medication-stop" || kind === "medication-change") {
    const med = c.medications.find((m) => m.id === medId);
    if (!med) { location.hash = back; return; }
    form = kind === "medication-stop"
      ? formScreen(`Stop ${med.name}`, p, [field("Reason", input({ name: "reason", placeholder: "e.g. side effects" }), { name: "reason" })],
        { cancelHref: back, submit: (v) => save("stop_medication", { medication_id: medId, reason: v.reason }) })
      : formScreen(`Change ${med.name}`, p, [dosageFields(await state.py.call("dosage_form", { medication_id: medId }))],
        { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, medication_id: medId, dosage: dosageValues(f) }, saved) });
  } else if (kind === "note") {
    form = formScreen("Write note", p, [
      field("Title", input({ name: "title", placeholder: "Progress note" }), { name: "title" }),
      field("Note", h("textarea", { name: "text", rows: 8 }), { name: "text" }),
    ], { cancelHref: back, submit: (v) => save("add_note", { patient_id: pid, ...v }) });
  } else if (kind === "demographics") {
    form = formScreen("Edit details", p, [
      field("Phone", input({ name: "phone", type: "tel", value: p.phone }), { name: "phone" }),
      field("Birth date", input({ name: "birth_date", type: "text", value: p.birthDate, placeholder: "YYYY-MM-DD" }), { name: "birth_date" }),
      field("Gender", select("gender", c.choices.gender, p.gender), { name: "gender" }),
    ], { cancelHref: back, submit: (v) => save("update_contact", { patient_id: pid, ...v }) });
  } else {
    location.hash = back;
    return;
  }
  form.id = "form-" + kind;
  if (!still()) return; // a form's own questions to Python (dosage choices) may have outlived its route
  screen(form.querySelector("h2").textContent, crumbs(back, p.display), patientBanner(c), h("div", { class: "narrow wide" }, form));
  form.querySelector("input,select,textarea")?.focus();
  placeEmergencyBanner(bgBanner); // an emergency-access patient says so on every screen
  await restoreDraft(form, pid, kind, medId || "");
}

// ---------------------------------------------------------------- drafts across the idle lock (issue 18 item 10)
/** The lock is about to fire: seal what the open form holds (Python decides what is worth keeping). */
async function keepDraft() {
  const form = document.querySelector("#main form[id^='form-']");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  // Only the form the address still names: a save that finished meanwhile has moved on to the chart.
  if (!form || parts[0] !== "patient" || !parts[2] || form.id !== "form-" + parts[2]) return;
  if (!form.dataset.dirty) return; // nothing typed: pre-filled values are not unsaved work
  await state.py.call("draft_keep", { patient_id: parts[1], form: parts[2], target: parts[3] || "", values: formFields(form) }).catch(() => {});
}
hooks.keepDraft = keepDraft;

/** After unlock: the same form opens with what was typed, and says so; Cancel discards it. */
async function restoreDraft(form, pid, kind, target) {
  form.querySelector(".actions a")?.addEventListener("click", () => { state.py.call("draft_discard").catch(() => {}); });
  form.addEventListener("input", () => { form.dataset.dirty = "1"; });
  form.addEventListener("change", () => { form.dataset.dirty = "1"; });
  const d = await state.py.call("draft_take", { patient_id: pid, form: kind, target }).catch(() => null);
  if (!d) return;
  form.dataset.dirty = "1"; // still unsaved: a second lock keeps it again
  for (const [name, value] of Object.entries(d.values)) {
    const el = form.elements.namedItem(name);
    if (el && "value" in el) el.value = value;
  }
  form.querySelector(".form-error").after(h("p", { class: "draft-note", id: "draft-note", role: "status" }, d.message));
  const text = form.querySelector("textarea");
  if (text) { text.focus(); text.setSelectionRange(text.value.length, text.value.length); }
}


// The device's local date and time for a form's default (the browser knows the time zone; pyclient validates).
function localNow() {
  const d = new Date();
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
function localToday() { return localNow().slice(0, 10); }

function takenAtField() {
  return field("Taken at", input({ name: "taken_at", type: "datetime-local", value: localNow(), max: localNow() }),
    { name: "taken_at", hint: "Now, unless the measurements were taken earlier." });
}
