// Data-entry forms on a patient (vitals, allergy, medication, note, demographics).
import { state } from "./state.js";
import { orderWithChecks } from "./cds.js";
import { afterWrite } from "./routes.js";
import { h, field, screen, banner, formScreen, input, select } from "./ui.js";
import { dosageFields, dosageValues } from "./dosage.js";

export async function formRoute(pid, kind) {
  let c;
  try { c = await state.py.call("chart", { patient_id: pid }); } catch (err) { banner(err.message); return; }
  const p = c.patient;
  const back = `#/patient/${encodeURIComponent(pid)}`;
  const save = async (call, args) => {
    await state.py.call(call, args);
    afterWrite();
    location.hash = back;
  };
  const saved = () => { afterWrite(); location.hash = back; }; // orders: checked and saved by cds.js
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
      field("Gender", select("gender", [["female", "Female"], ["male", "Male"], ["other", "Other"], ["unknown", "Unknown"]], p.gender), { name: "gender" }),
    ], { cancelHref: back, submit: (v) => save("update_contact", { patient_id: pid, ...v }) });
  } else {
    location.hash = back;
    return;
  }
  form.id = "form-" + kind;
  screen(form.querySelector("h2").textContent, h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: back }, "← " + p.display)), h("div", { class: "narrow wide" }, form));
  form.querySelector("input,select,textarea")?.focus();
}

