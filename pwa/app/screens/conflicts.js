// The conflict screen (issue 18, item 2): per field, before / mine / theirs as the chart shows them (words from
// pyclient.views.conflicts, never JSON), who made the other change and when, nothing chosen in advance, and an
// edited value checked by Python before the resolution is accepted.
import { h, input, select, plain } from "../ui.js";
import { dosageFields, dosageValues } from "../dosage.js";

function editor(f, name) {
  const spec = f.edit;
  if (!spec) return null;
  const label = `Your own value for ${f.label}`;
  if (spec.kind === "dosage") {
    // The same form the dosage was entered with (issue 18 items 2 and 4), prefilled with this device's value;
    // shown once "Enter a different value" is chosen. Errors come back keyed "<path>:<field>".
    const box = h("fieldset", { class: "edit-value dosage-edit", "aria-label": label, hidden: true },
      dosageFields(spec.form, { scope: `${f.path}:`, name: `${name}-`, currentLabel: "Starting from yours" }));
    box.disabled = true;
    return box;
  }
  const el = spec.kind === "select"
    ? select(`${name}-value`, [["", "Choose…"], ...spec.options], spec.value)
    : input({ name: `${name}-value`, type: "text", inputmode: spec.kind === "number" ? "decimal" : null, value: spec.value,
      placeholder: spec.kind === "date" ? "YYYY-MM-DD" : null });
  el.classList.add("edit-value");
  el.setAttribute("aria-label", label);
  el.disabled = true;
  return el;
}

function fieldBlock(f, n, otherChange) {
  const name = `pick-${n}`;
  const edit = editor(f, name);
  const choice = (pick, title, value, extra) => h("label", { class: `side ${pick}` },
    h("input", { type: "radio", name, value: pick, onchange: () => {
      if (edit) { edit.disabled = pick !== "edit"; if (edit.tagName === "FIELDSET") edit.hidden = pick !== "edit"; }
      if (pick === "edit") (edit?.querySelector("input,select") || edit)?.focus();
    } }),
    h("span", { class: "side-title" }, title), value != null ? h("span", { class: "side-value" }, value) : null, extra || null);
  return h("fieldset", { class: "conflict-field", dataset: { path: f.path } },
    h("legend", {}, f.label),
    h("div", { class: "sides" },
      h("div", { class: "side base" }, h("span", { class: "side-title" }, "Before both changes"), h("span", { class: "side-value" }, f.base)),
      choice("mine", "Keep mine (this device)", f.mine),
      choice("theirs", "Keep theirs", f.theirs, h("small", { class: "who" }, otherChange))),
    edit && edit.tagName === "FIELDSET" ? h("div", { class: "edit-row edit-form" }, choice("edit", "Enter a different value", null)) : null,
    edit && edit.tagName === "FIELDSET" ? edit : null,
    edit && edit.tagName !== "FIELDSET" ? h("div", { class: "edit-row" }, choice("edit", "Enter a different value", null), edit) : null,
    h("p", { class: "field-error", "aria-live": "polite" }));
}

export function conflictScreen(conflicts, { onResolve }) {
  if (!conflicts.length) return [h("section", { class: "card" }, h("h2", {}, "Conflicts"), h("p", { class: "empty" }, "No conflicts. Everything you changed has been merged."))];
  return conflicts.map((c) => {
    const form = h("form", { class: "card conflict", novalidate: true, dataset: { entry: c.entryId } },
      h("div", { class: "card-head" }, h("h2", {}, c.title), c.patientId ? h("a", { href: `#/patient/${encodeURIComponent(c.patientId)}`, class: "btn small ghost" }, "Open chart") : null),
      h("p", { class: "muted" }, `You and someone else changed the same ${c.fields.length === 1 ? "field" : "fields"}. ${c.otherChange} Choose for each field; the result is saved as a new version.`),
      h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
      ...c.fields.map((f, n) => fieldBlock(f, n, c.otherChange)),
      h("div", { class: "actions" }, h("button", { class: "btn", type: "submit" }, "Save resolution")));
    // A choice begun is the clinician's: a sync that finishes meanwhile must not redraw it away (routes.refreshView).
    const begun = () => { form.dataset.begun = "1"; };
    form.addEventListener("input", begun);
    form.addEventListener("change", begun);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const blocks = [...form.querySelectorAll("fieldset.conflict-field")];
      for (const b of blocks) b.querySelector(":scope > .field-error").textContent = "";
      const choices = {};
      let missing = null;
      c.fields.forEach((f, n) => {
        const picked = form.querySelector(`input[name="pick-${n}"]:checked`);
        if (!picked) { blocks[n].querySelector(":scope > .field-error").textContent = "Choose one."; missing = missing || blocks[n]; return; }
        const box = blocks[n].querySelector(".edit-value");
        const typed = box && box.tagName === "FIELDSET" ? dosageValues(box) : box?.value;
        choices[f.path] = { pick: picked.value, value: picked.value === "edit" ? typed : undefined };
      });
      const msg = form.querySelector(".form-error");
      if (missing) { msg.textContent = "Choose keep mine, keep theirs or a value of your own for every field."; missing.querySelector("input").focus(); return; }
      for (const e of form.querySelectorAll(".dosage-form .field-error")) e.textContent = "";
      try { await onResolve(c.entryId, choices); } catch (err) {
        msg.textContent = plain(err.message);
        let first = null;
        for (const [key, text] of Object.entries(err.fields || {})) {
          const sub = form.querySelector(`[data-field="${CSS.escape(key)}"]`); // a dosage form field: "<path>:<field>"
          if (sub) { sub.querySelector(".field-error").textContent = plain(text); first = first || sub.querySelector("input,select"); continue; }
          const b = blocks.find((x) => x.dataset.path === key);
          if (b) { b.querySelector(":scope > .field-error").textContent = plain(text); first = first || b.querySelector(".edit-value"); }
        }
        (first && first.tagName === "FIELDSET" ? first.querySelector("input,select") : first)?.focus();
      }
    });
    return form;
  });
}
