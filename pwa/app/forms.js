// Data-entry forms on a patient (vitals, allergy, medication, note, demographics).
import { state, hooks } from "./state.js";
import { orderWithChecks } from "./cds.js";
import { afterWrite } from "./routes.js";
import { emergencyBanner } from "./screens/emergency.js";
import { h, field, screen, banner, formScreen, formFields, input, select } from "./ui.js";

export async function formRoute(pid, kind) {
  let c;
  try { c = await state.py.call("chart", { patient_id: pid }); } catch (err) { banner(err.message); return; }
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
    ], { cancelHref: back, submit: (v) => save("record_vitals", { patient_id: pid, values: v }) });
  } else if (kind === "allergy") {
    form = formScreen("Add allergy", p, [
      field("Substance", input({ name: "substance", placeholder: "e.g. Penicillin" }), { name: "substance" }),
      field("Reaction", input({ name: "reaction", placeholder: "e.g. Hives" }), { name: "reaction" }),
      field("Criticality", select("criticality", [["low", "Low"], ["high", "High"], ["unable-to-assess", "Unable to assess"]], "unable-to-assess"), { name: "criticality" }),
    ], { cancelHref: back, submit: (v) => save("add_allergy", { patient_id: pid, ...v }) });
  } else if (kind === "medication") {
    form = formScreen("Start medication", p, [
      field("Medication", input({ name: "name", placeholder: "e.g. Metformin 500 mg tablet" }), { name: "name" }),
      field("Dosage", input({ name: "dosage", placeholder: "e.g. 500 mg twice daily with meals" }), { name: "dosage" }),
    ], { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, ...v }, saved) });
  } else if (kind === "medication-stop" || kind === "medication-change") {
    const med = c.medications.find((m) => m.id === medId);
    if (!med) { location.hash = back; return; }
    form = kind === "medication-stop"
      ? formScreen(`Stop ${med.name}`, p, [field("Reason", input({ name: "reason", placeholder: "e.g. side effects" }), { name: "reason" })],
        { cancelHref: back, submit: (v) => save("stop_medication", { medication_id: medId, reason: v.reason }) })
      : formScreen(`Change ${med.name}`, p, [field("New dosage", input({ name: "dosage", value: med.dosage }), { name: "dosage" })],
        { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, medication_id: medId, dosage: v.dosage }, saved) });
  } else if (kind === "note") {
    form = formScreen("Write note", p, [
      field("Title", input({ name: "title", placeholder: "Progress note" }), { name: "title" }),
      field("Note", h("textarea", { name: "text", rows: 8 }), { name: "text" }),
    ], { cancelHref: back, submit: (v) => save("add_note", { patient_id: pid, ...v }) });
  } else if (kind === "demographics") {
    form = formScreen("Edit details", p, [
      field("Phone", input({ name: "phone", type: "tel", value: p.phone }), { name: "phone" }),
      field("Birth date", input({ name: "birth_date", type: "text", value: p.birthDate, placeholder: "YYYY-MM-DD" }), { name: "birth_date" }),
      field("Gender", select("gender", [["female", "Female"], ["male", "Male"], ["other", "Other"], ["unknown", "Unknown"]], p.gender), { name: "gender" }),
    ], { cancelHref: back, submit: (v) => save("update_contact", { patient_id: pid, ...v }) });
  } else {
    location.hash = back;
    return;
  }
  form.id = "form-" + kind;
  screen(form.querySelector("h2").textContent, h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: back }, "← " + p.display)), h("div", { class: "narrow wide" }, form));
  form.querySelector("input,select,textarea")?.focus();
  emergencyBanner(pid); // an emergency-access patient says so on every screen
  await restoreDraft(form, pid, kind, medId || "");
}

// ---------------------------------------------------------------- drafts across the idle lock (issue 18 item 10)
/** The lock is about to fire: seal what the open form holds (Python decides what is worth keeping). */
async function keepDraft() {
  const form = document.querySelector("#main form[id^='form-']");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  // Only the form the address still names: a save that finished meanwhile has moved on to the chart.
  if (!form || parts[0] !== "patient" || !parts[2] || form.id !== "form-" + parts[2]) return;
  await state.py.call("draft_keep", { patient_id: parts[1], form: parts[2], target: parts[3] || "", values: formFields(form) }).catch(() => {});
}
hooks.keepDraft = keepDraft;

/** After unlock: the same form opens with what was typed, and says so; Cancel discards it. */
async function restoreDraft(form, pid, kind, target) {
  form.querySelector(".actions a")?.addEventListener("click", () => { state.py.call("draft_discard").catch(() => {}); });
  const d = await state.py.call("draft_take", { patient_id: pid, form: kind, target }).catch(() => null);
  if (!d) return;
  for (const [name, value] of Object.entries(d.values)) {
    const el = form.elements.namedItem(name);
    if (el && "value" in el) el.value = value;
  }
  form.querySelector(".form-error").after(h("p", { class: "draft-note", id: "draft-note", role: "status" }, d.message));
  const text = form.querySelector("textarea");
  if (text) { text.focus(); text.setSelectionRange(text.value.length, text.value.length); }
}

