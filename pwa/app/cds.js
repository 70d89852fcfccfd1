// Medication safety at order time, and the cached guideline library. Python decides everything
// (pyclient.cds via browser_cds.py); this file only draws the review and passes the clinician's answer back.
import { h, plain } from "./ui.js";

const LEVEL = { critical: "Critical", warning: "Warning", info: "Information" };
const fmt = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) : "never");

/**
 * Submit handler for "Start medication" / "Change medication": check first, save only after review.
 * args: {patient_id, name?, dosage, medication_id?}; done() navigates back to the chart.
 */
export async function orderWithChecks(py, form, args, done) {
  if (form.querySelector(".cds-review")) return; // the review's own buttons decide now
  const r = await py.call("cds_review", args);
  if (!r.review.hasCards) {
    await py.call("cds_save", { ...args, draft_id: r.draftId, decision: "accepted" });
    done();
    return;
  }
  showReview(py, form, args, r, done);
}

function cardView(c) {
  return h("li", { class: `cds-card ${c.indicator}`, dataset: { indicator: c.indicator, kind: c.kind } },
    h("div", { class: "cds-head" },
      h("span", { class: `badge cds-${c.indicator}` }, LEVEL[c.indicator] || c.indicator),
      h("strong", { class: "cds-summary" }, c.summary)),
    c.reason ? h("p", { class: "cds-reason" }, h("span", { class: "cds-label" }, "Why: "), c.reason) : null,
    c.advice ? h("p", { class: "cds-advice" }, h("span", { class: "cds-label" }, "What to do: "), c.advice) : null,
    c.sources.length ? h("p", { class: "cds-source muted" }, "Source: " + c.sources.join("; ")) : null);
}

function showReview(py, form, args, r, done) {
  const review = r.review;
  const actions = form.querySelector(".actions");
  actions.hidden = true;
  const error = h("p", { class: "cds-error field-error", role: "alert", "aria-live": "assertive" });
  const reasons = review.needsOverride
    ? h("fieldset", { class: "cds-reasons" },
      h("legend", {}, "To order anyway, choose an override reason"),
      review.overrideReasons.map((o) => h("label", { class: "pick cds-reason-pick" },
        h("input", { type: "radio", name: "override_reason", value: o.code }), o.display)))
    : null;
  const finish = async (decision) => {
    error.textContent = "";
    const picked = form.querySelector("input[name=override_reason]:checked");
    if (decision === "overridden" && !picked) {
      error.textContent = "Choose an override reason, or cancel the order.";
      return;
    }
    try {
      await py.call("cds_save", { ...args, draft_id: r.draftId, decision, reason_code: picked ? picked.value : null });
      done();
    } catch (err) {
      error.textContent = plain(err.message); // never raw exception text (issue 18 item 8)
    }
  };
  const panel = h("section", { class: "cds-review", "aria-labelledby": "cds-title", tabindex: "-1" },
    h("h3", { id: "cds-title" }, review.needsOverride ? "Stop: medication safety alert" : "Medication safety check"),
    h("ul", { class: "cds-cards" }, review.cards.map(cardView)),
    reasons, error,
    h("div", { class: "actions cds-actions" },
      h("button", { type: "button", class: "btn ghost", id: "cds-cancel", onclick: () => finish("cancelled") }, "Cancel order"),
      review.needsOverride
        ? h("button", { type: "button", class: "btn danger", id: "cds-override", onclick: () => finish("overridden") }, "Override and save")
        : h("button", { type: "button", class: "btn", id: "cds-accept", onclick: () => finish("accepted") }, "Save order")),
    h("p", { class: "muted cds-kb" }, `Checked offline on this device against knowledge base ${r.kbVersion}.`));
  actions.before(panel);
  // Editing the order makes this review stale: drop it and check again on the next save.
  const stale = () => { panel.remove(); actions.hidden = false; form.removeEventListener("input", onInput); };
  const onInput = (e) => { if (!panel.contains(e.target)) stale(); };
  form.addEventListener("input", onInput);
  panel.focus();
}

/** The chart's decision-support card: knowledge base version in force, fetch time, guideline library. */
export async function cdsPanel(py, patientId) {
  let status, lib, alerts;
  try {
    [status, lib, alerts] = await Promise.all([py.call("cds_status"), py.call("guidelines"), py.call("cds_alerts", { patient_id: patientId })]);
  } catch {
    return null;
  }
  const kb = status.kb;
  const kbLine = kb.source === "server"
    ? `Medication checks: knowledge base ${kb.inForce}, fetched ${fmt(kb.fetchedAt)}`
    : `Medication checks: built-in knowledge base ${kb.inForce} (not yet updated from the server)`;
  const guides = lib.guidelines.length
    ? h("ul", { class: "notes guidelines", id: "guidelines" }, lib.guidelines.map((g) => h("li", {},
      h("details", {}, h("summary", {}, h("strong", {}, g.title)),
        h("p", {}, g.summary),
        g.sections.map((s) => h("div", { class: "guide-section" }, h("h4", {}, s.heading), h("p", {}, s.text))),
        h("p", { class: "muted small" }, "Sources: " + g.sources.join(" · "))))))
    : h("p", { class: "empty" }, "Guidelines appear after the next sync.");
  const DECISION = { overridden: "overridden", accepted: "accepted", cancelled: "order cancelled", unacknowledged: "not acknowledged at order time" };
  const alertList = alerts.length
    ? h("ul", { class: "rows", id: "cds-alerts" }, alerts.map((a) => h("li", { dataset: { decision: a.decision, at: a.at } },
      h("div", { class: "grow" }, h("strong", {}, a.summary), h("small", {}, ` — ${a.text || DECISION[a.decision] || a.decision} · ${a.when}`)),
      h("span", { class: `badge cds-${a.severity === "high" ? "critical" : a.severity === "moderate" ? "warning" : "info"}` }, DECISION[a.decision] || a.decision))))
    : null;
  return h("section", { class: "card", id: "cds-panel" },
    h("div", { class: "card-head" }, h("h2", {}, "Medication safety and guidelines")),
    alertList ? h("h3", { class: "cds-sub" }, "Safety alerts on record") : null, alertList,
    h("p", { class: "muted", id: "cds-version" }, kbLine),
    h("h3", { class: "cds-sub" }, "Clinical guidelines (available offline)"),
    lib.version ? h("p", { class: "muted", id: "guidelines-version" }, `Guideline library ${lib.version}, fetched ${fmt(lib.fetchedAt)}`) : null,
    guides);
}
