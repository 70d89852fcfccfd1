// The structured dosage form (issue 18, item 4): dose + unit, route, how often, for how long, as needed.
// Choices, prefilled values and every check come from Python (pyclient.dosage via the "dosage_form" call);
// this file only draws the fields and reads them back. Used by "Start medication", "Change dosage" and the
// conflict screen's Edit, so a dosage is always entered the same way and stays structured.
import { h, input, select } from "./ui.js";

const KEYS = ["dose_value", "dose_unit", "route", "frequency", "duration_value", "duration_unit"];
let uid = 0;

// One labelled control; `key` is Python's field name (errors come back keyed by it, with `scope` before it).
function part(label, control, key, scope) {
  const id = `dz${++uid}`;
  control.id = id;
  control.dataset.dosage = key;
  control.setAttribute("aria-describedby", id + "-err");
  return h("div", { class: "field", dataset: { field: scope + key } },
    h("label", { for: id }, label), control, h("p", { class: "field-error", id: id + "-err", "aria-live": "polite" }));
}

/** The dosage fields, prefilled from `spec.values`. `scope` prefixes the error keys ("" on the order forms,
 * "<path>:" on the conflict screen); `name` prefixes the input names so two forms on a page do not clash. */
export function dosageFields(spec, { scope = "", name = "", currentLabel = "Now" } = {}) {
  const v = spec.values || {};
  const choose = (opts) => [["", "Choose…"], ...opts];
  const asNeeded = h("input", { type: "checkbox", name: name + "as_needed", checked: !!v.as_needed });
  asNeeded.dataset.dosage = "as_needed";
  return h("div", { class: "dosage-form" },
    v.current ? h("p", { class: "hint dosage-current" }, `${currentLabel}: ${v.current}`) : null,
    h("div", { class: "row2" },
      part("Dose", input({ name: name + "dose_value", type: "text", inputmode: "decimal", value: v.dose_value || "", placeholder: "e.g. 1 or 500" }), "dose_value", scope),
      part("Unit", select(name + "dose_unit", choose(spec.units), v.dose_unit || ""), "dose_unit", scope)),
    h("div", { class: "row2" },
      part("Route", select(name + "route", choose(spec.routes), v.route || ""), "route", scope),
      part("How often", select(name + "frequency", choose(spec.frequencies), v.frequency || ""), "frequency", scope)),
    h("div", { class: "row2" },
      part("For how long (optional)", input({ name: name + "duration_value", type: "text", inputmode: "numeric", value: v.duration_value || "", placeholder: "e.g. 7" }), "duration_value", scope),
      part("Days, weeks or months", select(name + "duration_unit", spec.durationUnits, v.duration_unit || "d"), "duration_unit", scope)),
    h("label", { class: "pick dosage-prn" }, asNeeded, "Only as needed"));
}

/** The fields' values as Python reads them (pyclient.dosage.dosage_from_values). */
export function dosageValues(root) {
  const out = {};
  for (const k of KEYS) out[k] = root.querySelector(`[data-dosage="${k}"]`)?.value ?? "";
  out.as_needed = !!root.querySelector('[data-dosage="as_needed"]')?.checked;
  return out;
}
