// Changes the server refused (issue 18, item 3): every one listed with the server's reason in plain words,
// fix-and-send-again or discard. All words, fields and choices come from Python (pyclient.views.rejected).
import { h, field, input, select, showErrors, confirmDialog, formFields } from "../ui.js";
import { dosageFields, dosageValues } from "../dosage.js";

function fixField(f) {
  if (f.kind === "dosage") { // the structured dosage form (issue 18 item 4), prefilled from the refused order
    return h("fieldset", { class: "dosage-fix", dataset: { field: f.name } }, h("legend", {}, f.label),
      dosageFields(f.spec, { currentLabel: "Refused" }), h("p", { class: "field-error" }));
  }
  const el = f.kind === "select" ? select(f.name, f.options, f.value) : input({ name: f.name, type: f.kind === "tel" ? "tel" : "text", value: f.value });
  return field(f.label, el, { name: f.name });
}

function card(item, { onRetry, onDiscard }) {
  const form = h("form", { class: "card rejected", novalidate: true, dataset: { entry: item.entryId } },
    h("div", { class: "card-head" }, h("h2", {}, item.title),
      item.patientId ? h("a", { class: "btn small ghost", href: `#/patient/${encodeURIComponent(item.patientId)}` }, "Open chart") : null),
    h("p", { class: "what" }, item.what),
    h("p", { class: "reason", role: "note" }, h("strong", {}, "Why it was refused: "), item.reason),
    item.advice ? h("p", { class: "muted" }, item.advice) : null,
    h("p", { class: "form-error", role: "alert", tabindex: "-1" }),
    ...item.fields.map(fixField),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "btn danger discard", onclick: async () => {
        const ok = await confirmDialog("Discard this change?", item.discardWarning, item.discardLabel, { danger: true });
        if (!ok) return;
        try { await onDiscard(item.entryId); } catch (err) { showErrors(form, err); }
      } }, item.discardLabel),
      item.canRetry ? h("button", { type: "submit", class: "btn retry" }, item.retryLabel) : null));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showErrors(form, null);
    const values = item.fields.length ? formFields(form) : null;
    if (item.fields.some((f) => f.kind === "dosage")) values.dosage = dosageValues(form);
    try { await onRetry(item.entryId, values); } catch (err) { showErrors(form, err); }
  });
  return form;
}

export function rejectedScreen(items, handlers) {
  const head = h("section", { class: "card" }, h("h2", { id: "rejected-title" }, "Changes the server refused"),
    h("p", { class: "muted", id: "rejected-summary" }, items.length
      ? `${items.length === 1 ? "One change was" : `${items.length} changes were`} not accepted by the server. ${items.length === 1 ? "It stays" : "They stay"} on this device until you send ${items.length === 1 ? "it" : "them"} again or discard ${items.length === 1 ? "it" : "them"}.`
      : "No refused changes. Everything you changed was accepted or is waiting to be sent."));
  return [head, h("div", { id: "rejected-list" }, items.map((i) => card(i, handlers)))];
}

/** On a patient's chart: the refused changes of this patient, so they never silently vanish from it. */
export function rejectedNotice(items) {
  if (!items || !items.length) return null;
  return h("section", { class: "card rejected-notice", id: "rejected-notice", role: "alert" },
    h("h2", {}, items.length === 1 ? "A change to this chart was refused by the server" : `${items.length} changes to this chart were refused by the server`),
    h("ul", {}, items.map((i) => h("li", {}, h("strong", {}, i.title + ": "), i.what, h("br"), h("small", {}, i.reason)))),
    h("a", { class: "btn small", href: "#/rejected" }, "Review refused changes"));
}
