// Register a patient (issue 18 item 1), online or offline: a walk-in during an outage gets a local MRN at once.
// Every check, the MRN and the duplicate search are Python's (pyclient.registration, pyclient.views.register).
import { state } from "../state.js";
import { afterWrite, localDateOrder } from "../routes.js";
import { h, field, screen, sameRoute, banner, input, select, showErrors, formFields, crumbs } from "../ui.js";

const DATE_HINT = { dmy: "Day/month/year, for example 18/04/2002", mdy: "Month/day/year, for example 04/18/2002", ymd: "Year-month-day, for example 2002-04-18" };

/** The "Register patient" control on the patient list, only for roles the server's matrix lets create patients. */
export async function registerControl() {
  let allowed = false;
  try { allowed = (await state.py.call("register_allowed")).allowed; } catch { return; }
  const head = document.querySelector("#main section.card h2");
  if (!allowed || !head || document.getElementById("register-open")) return;
  const link = h("a", { class: "btn", id: "register-open", href: "#/register" }, "Register patient");
  head.replaceWith(h("div", { class: "card-head" }, head.cloneNode(true), link));
}

function text(name, label, attrs = {}, opts = {}) {
  return field(label, input({ name, type: "text", ...attrs }), { name, ...opts });
}

function duplicatesPanel(warning, { onAnyway }) {
  return h("section", { class: "card dup-warning", id: "dup-warning", role: "alert" },
    h("h2", {}, warning.title), h("p", {}, warning.message),
    h("ul", { class: "rows dup-list" }, warning.items.map((m) => h("li", { dataset: { id: m.id } },
      h("div", { class: "grow" }, h("strong", {}, m.text), h("br"), h("small", {}, m.why)),
      h("a", { class: "btn small ghost dup-open", href: `#/patient/${encodeURIComponent(m.id)}` }, warning.open)))),
    h("div", { class: "actions" }, h("button", { type: "button", class: "btn", id: "dup-anyway", onclick: onAnyway }, warning.anyway)));
}

export async function showRegister() {
  const still = sameRoute();
  const order = localDateOrder();
  const choices = await state.py.call("form_choices"); // the lists and their words are Python's (pyclient.choices)
  // Front desk (issue 18): the clinician who takes the patient on; their care team gets it when it syncs.
  const offer = await state.py.call("register_form").catch(() => ({ responsible: null }));
  if (!still()) return;
  const responsible = offer.responsible
    ? field("Responsible clinician", select("responsible", [["", "Choose…"], ...offer.responsible.map((c) => [c.id, c.display])], ""),
      { name: "responsible", hint: "Their care team gets this patient. You see the registration details only." })
    : null;
  const form = h("form", { class: "card form", id: "form-register", novalidate: true },
    h("div", { class: "card-head" }, h("h2", {}, "Register patient"),
      h("span", { class: "muted" }, navigator.onLine ? "" : "Offline: saved on this device, sent when the connection returns")),
    h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
    h("div", { class: "row2" }, text("given", "Given name(s)", { autocomplete: "off" }), text("family", "Family name")),
    h("div", { class: "row2" },
      text("birth_date", "Birth date", { inputmode: "numeric", placeholder: order === "mdy" ? "MM/DD/YYYY" : order === "ymd" ? "YYYY-MM-DD" : "DD/MM/YYYY" }, { hint: DATE_HINT[order] }),
      field("Sex (administrative)", select("gender", [["", "Choose…"], ...choices.gender], ""), { name: "gender" })),
    h("p", { class: "muted", id: "mrn-note" }, "A local medical record number (MRN) is given when you save."),
    text("other_id", "Other identifier (optional)", { placeholder: "e.g. national ID or an MRN from another hospital" }),
    h("div", { class: "row2" }, field("Phone", input({ name: "phone", type: "tel" }), { name: "phone" }), text("postal_code", "Postal code")),
    text("address_line", "Address"),
    text("city", "City"),
    h("fieldset", { class: "contact" }, h("legend", {}, "Emergency contact"),
      h("div", { class: "row2" }, text("contact_name", "Name"), field("Phone", input({ name: "contact_phone", type: "tel" }), { name: "contact_phone" }))),
    responsible,
    h("div", { class: "actions" }, h("a", { class: "btn ghost", href: "#/patients" }, "Cancel"),
      h("button", { class: "btn", type: "submit", id: "register-save" }, "Register")));
  const slot = h("div", { id: "dup-slot" });
  const save = async (confirmed) => {
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    showErrors(form, null);
    try {
      const r = await state.py.call("register_patient", { values: formFields(form), date_order: order, confirmed, online: navigator.onLine });
      if (!r.saved) {
        slot.replaceChildren(duplicatesPanel(r.warning, { onAnyway: () => save(true) }));
        slot.querySelector("h2").setAttribute("tabindex", "-1");
        slot.querySelector("h2").focus();
        return;
      }
      afterWrite();
      const chart = `#/patient/${encodeURIComponent(r.id)}`;
      banner(r.message, { kind: "info", scope: chart }); // about this patient: gone when another screen opens
      location.hash = chart;
    } catch (err) {
      slot.replaceChildren();
      showErrors(form, err);
    } finally { btn.disabled = false; }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); save(false); });
  form.addEventListener("input", () => slot.replaceChildren()); // a changed form is checked again on save
  screen("Register patient", crumbs(),
    h("div", { class: "narrow wide" }, slot, form));
  form.querySelector("input")?.focus();
}
