// "On this device" (issue 13): how many patients the device holds, the space used against its storage
// budget, and why each patient is on it. Every word comes from Python (pyclient.views.device_set).
import { h, screen, sameRoute, banner, moreButton, crumbs } from "../ui.js";
import { state } from "../state.js";

function row(r) {
  return h("li", { class: "device-row", dataset: { patient: r.patientId } },
    h("div", { class: "who" },
      h("a", { class: "name", href: `#/patient/${encodeURIComponent(r.patientId)}` }, r.name),
      h("span", { class: "why" }, r.why)),
    r.unsynced ? h("span", { class: "badge pending" }, "Not yet sent") : r.pinned ? h("span", { class: "badge" }, "Always kept") : null,
    r.size ? h("span", { class: "size muted" }, r.size) : null);
}

/** The storage meter. Its width is set through the CSSOM: the CSP (style-src 'self') drops inline style
 * attributes, which left every meter drawn full (688 kB of 1 GB looked like a full device). */
function meter(percent) {
  const bar = h("div", { class: "meter-bar" });
  bar.style.width = `${percent}%`;
  return h("div", { class: "meter", role: "meter", "aria-label": "Storage used", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(percent) }, bar);
}

export function deviceSetScreen(v, { onMore } = {}) {
  return [h("section", { class: "card", id: "device-set" },
    h("h2", { id: "device-set-title" }, v.title),
    h("p", { id: "device-set-summary" }, h("strong", {}, v.summary)),
    h("p", { id: "device-set-space" }, v.space),
    v.spaceHow ? h("p", { class: "muted", id: "device-set-space-how" }, v.spaceHow) : null,
    v.percent == null ? null : meter(v.percent), // no budget (online only): no meter
    v.warning ? h("p", { class: "form-error", role: "alert" }, v.warning) : null,
    h("p", { class: "muted", id: "device-set-not-held" }, v.notHeld)),
  h("section", { class: "card" }, h("h2", {}, "Patients on this device"),
    v.rows.length ? h("ul", { class: "device-list", id: "device-list" }, v.rows.map(row))
      : h("p", { class: "empty", id: "device-list" }, v.empty),
    // A page of the rows (issue 13); the counts above cover every patient.
    onMore && v.rowsTotal > v.rows.length ? moreButton(v.more, onMore) : null)];
}

/** ``fresh``: the screen opened (one page of rows); a redraw keeps what "Show more" opened. */
export async function showDeviceSet({ limit = null, fresh = false } = {}) {
  if (limit || fresh || !state.deviceLimit) state.deviceLimit = limit || state.listPage;
  const still = sameRoute();
  let v;
  try { v = await state.py.call("device_set", { online: navigator.onLine, limit: state.deviceLimit }); } catch (err) { banner(err.message); return; }
  if (!still()) return;
  screen("On this device", crumbs(),
    ...deviceSetScreen(v, { onMore: () => showDeviceSet({ limit: v.rows.length + state.listPage }) }));
}

/** Under a local search (online): patients you may see who are not on this device, fetched when opened. */
export async function serverMatches(query) {
  if (!navigator.onLine || !query || query.trim().length < 2) return null;
  let r;
  try { r = await state.py.call("search_server", { text: query }); } catch { return null; }
  if (!r.results.length && !r.message) return null;
  return h("section", { class: "card", id: "server-matches" },
    h("h2", {}, "Not on this device"),
    r.message ? h("p", { class: "muted" }, r.message) : h("p", { class: "muted" }, "These patients are downloaded to this device when you open them."),
    h("ul", { class: "device-list" }, r.results.map((p) => h("li", { class: "device-row", dataset: { patient: p.id } },
      h("div", { class: "who" }, h("span", { class: "name" }, p.display), h("span", { class: "why" }, [p.mrn, p.birthDate].filter(Boolean).join(" · "))),
      h("button", { type: "button", class: "btn small", onclick: async (e) => {
        e.target.disabled = true;
        e.target.textContent = "Downloading…";
        try {
          const got = await state.py.call("fetch_on_demand", { patient_id: p.id });
          if (got.held) location.hash = `#/patient/${encodeURIComponent(p.id)}`;
          else { e.target.textContent = "Could not download"; }
        } catch (err) { banner(err.message); e.target.disabled = false; e.target.textContent = "Download and open"; }
      } }, "Download and open")))));
}
