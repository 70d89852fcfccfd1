// Hash routing and the list / chart / conflict screens.
import { state, hooks } from "./state.js";
import { cdsPanel } from "./cds.js";
import { reauthScreen } from "./auth.js";
import { formRoute } from "./forms.js";
import { h, screen, sameRoute, routeEntered, banner, leaveRoute, confirmDialog, patientList, chartScreen, plain, crumbs } from "./ui.js";
import { conflictScreen } from "./screens/conflicts.js";
import { rejectedScreen, rejectedNotice } from "./screens/rejected.js";
import { showRegister, registerControl } from "./screens/register.js"; // issue 18 item 1
import { showDeviceSet, serverMatches } from "./screens/device_set.js";
import { showRecovery } from "./screens/recovery.js";
import { emergencyScreen, emergencyEntry, emergencyBannerEl, placeEmergencyBanner } from "./screens/emergency.js";

// ---------------------------------------------------------------- routing
export function route() {
  leaveRoute(location.hash); // patient A's "registered" or "not saved" is not shown on patient B (issue 18)
  if (!state.unlocked) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  state.route = parts;
  routeEntered(location.hash);
  if (parts[0] === "patient" && parts[1]) {
    if (parts[2]) return formRoute(parts[1], parts[2]);
    return showChart(parts[1]);
  }
  if (parts[0] === "conflicts") return showConflicts();
  if (parts[0] === "rejected") return showRejected();
  if (parts[0] === "register") return showRegister();
  if (parts[0] === "device") return showDeviceSet({ fresh: true });
  if (parts[0] === "recovery") return showRecovery(); // issue 13 item 5
  if (parts[0] === "emergency") return emergencyScreen(); // issue 18 item 7: break-the-glass
  if (parts[0] === "signin") return reauthScreen();
  return showPatients();
}

export function refreshView(ids) {
  if (!state.unlocked || state.firstSync) return;
  const parts = state.route || [];
  if (parts[0] === "patient" && parts[2]) return; // never redraw a form being filled in
  if (parts[0] === "emergency") return; // nor the emergency-access lookup (issue 18 item 7)
  if (parts[0] === "register") return; // nor the registration form
  // nor a conflict being resolved: a redraw unticked the choice under the clinician's hand (CI on 3729469)
  if (parts[0] === "conflicts" && document.querySelector("form.conflict[data-begun]")) return;
  // Screens that show no records have nothing to redraw: the fallthrough below would replace them with the
  // patient list under the clinician's hand (the recovery screen did, when a sync finished while it was open).
  if (parts[0] === "recovery" || parts[0] === "signin") return;
  if (document.activeElement && document.activeElement.matches("select")) return;
  if (parts[0] === "patient") showChart(parts[1], { keepScroll: true });
  else if (parts[0] === "conflicts") showConflicts();
  else if (parts[0] === "rejected") showRejected();
  else if (parts[0] === "device") showDeviceSet();
  else showPatients(); // the search box keeps its words, caret and selection (showPatients)
}

/** How this device's locale writes a numeric date ("dmy", "mdy" or "ymd"), for reading "18/04/2002" (issue 18). */
export function localDateOrder() {
  try {
    const parts = new Intl.DateTimeFormat(navigator.language, { day: "numeric", month: "numeric", year: "numeric" })
      .formatToParts(new Date(2002, 3, 18));
    const order = parts.filter((p) => ["day", "month", "year"].includes(p.type)).map((p) => p.type[0]).join("");
    return ["dmy", "mdy", "ymd"].includes(order) ? order : "mdy";
  } catch { return "mdy"; }
}

export async function showPatients() {
  const still = sameRoute();
  const run = async (q, limit = null) => {
    // A page at a time (issue 13): a new query starts at one page, a redraw keeps what "Show more" opened.
    if (q !== state.query || !state.listLimit) state.listLimit = state.listPage;
    if (limit) state.listLimit = limit;
    state.query = q;
    let r;
    try { r = await state.py.call("search", { text: q, date_order: localDateOrder(), limit: state.listLimit }); } catch (err) {
      // issue 18 item 11: a date the app cannot read is said under the search box, in words, not as a banner
      // "locked": the app locked while the list was read; it is drawn again after the PIN.
      if (err.kind !== "validation") { if (err.kind !== "locked") banner(err.message, { scope: location.hash }); return; }
      r = { kind: null, results: [], ms: 0, error: plain(err.message) };
    }
    // A sync redraw's search for an older query can answer after the clinician typed a new one: never draw
    // stale results over the newer answer.
    if (q !== state.query || !still()) return;
    // What the clinician is typing survives a redraw: its words, its caret and its selection (CI on 1fdff25: a
    // sync's redraw while the old query was selected to be typed over put the caret at 0, and the new words went
    // in front of the old ones). Put back at once, before anything else is awaited.
    const was = document.activeElement?.id === "q" ? document.activeElement : null;
    const typed = was && { value: was.value, start: was.selectionStart, end: was.selectionEnd, dir: was.selectionDirection };
    screen("Patients", ...patientList({ ...r, query: q, onSearch: run, onMore: () => run(q, r.results.length + state.listPage) }),
      h("p", { class: "device-link" }, h("a", { class: "btn ghost", href: "#/device", id: "device-link" }, "On this device")));
    if (typed) { // keep typing; never autofocus on open (a tablet would pop up its keyboard)
      const i = document.getElementById("q");
      i.value = typed.value;
      i.focus();
      if (typed.start != null) i.setSelectionRange(typed.start, typed.end ?? typed.start, typed.dir || "none");
    }
    serverMatches(q).then((more) => { if (more && state.query === q && !document.getElementById("server-matches")) document.getElementById("device-link")?.parentElement.before(more); });
    emergencyEntry(); // only for roles that may break the glass
    await registerControl(); // issue 18: "Register patient", for roles that may
  };
  await run(state.query);
}

export async function showChart(id, { keepScroll = false } = {}) {
  const still = sameRoute();
  // The chart, its emergency banner and its decision-support panel are fetched together and drawn in one step: a
  // redraw that added the panel after an await left the chart without it for a moment (the panel flickered and
  // the page jumped on every sync's redraw; a check in that moment found no recorded decisions).
  let c, bgBanner, panel;
  try {
    [c, bgBanner, panel] = await Promise.all([state.py.call("chart", { patient_id: id }), emergencyBannerEl(id), cdsPanel(state.py, id)]);
  } catch (err) {
    if (!still()) return;
    screen("Not found", h("section", { class: "card" }, h("h2", {}, "Patient not available"), h("p", {}, plain(err.message)), h("a", { class: "btn", href: "#/patients" }, "Back to patients")));
    return;
  }
  if (!still()) return;
  const y = window.scrollY;
  const parts = chartScreen(c, {
    onAllergy: async (aid, change) => {
      // One tap on a dropdown is not a decision: ask first, in Python's words (issue 18, item 9).
      const a = c.allergies.find((x) => x.id === aid) || {};
      const [field, value] = Object.entries(change)[0];
      const q = await state.py.call("allergy_change_question", { substance: a.substance || "", field, old: a[field] || "", new: value });
      if (!(await confirmDialog(q.title, q.message, q.ok))) { showChart(id, { keepScroll: true }); return; }
      try { await state.py.call("update_allergy", { allergy_id: aid, ...change }); afterWrite(); showChart(id, { keepScroll: true }); } catch (err) { banner(err.message, { scope: location.hash }); }
    },
    onNka: async () => { // issue 18 item 5: "no known allergies" is a recorded answer, not an empty list
      if (!(await confirmDialog("Record no known allergies?", `${c.patient.display} was asked and has no known allergies. This is recorded in the chart.`, "Record"))) return;
      try { await state.py.call("record_no_known_allergies", { patient_id: id }); afterWrite(); showChart(id, { keepScroll: true }); } catch (err) { banner(err.message, { scope: location.hash }); }
    },
    onMed: (m, action) => { location.hash = `#/patient/${encodeURIComponent(id)}/medication-${action}/${encodeURIComponent(m.id)}`; },
  });
  parts.splice(1, 0, rejectedNotice(c.rejected)); // right under the patient's name: refused changes never vanish
  screen(c.patient.display, crumbs(), ...parts);
  placeEmergencyBanner(bgBanner); // while an emergency grant lasts: says so, with its end
  const col = document.querySelector("#main .grid .col:last-child"); // decision support: KB in force, guidelines
  if (panel && col) col.append(panel);
  if (keepScroll) window.scrollTo(0, y);
}

export function afterWrite() {
  if (state.lastStatus) state.py.call("status").then(hooks.onStatus);
  if (navigator.onLine) setTimeout(() => state.runner.kick("write"), 300);
}

/** A write made from a list screen (conflicts, refused changes): the call, the sync nudge, the list drawn again. */
async function writeAndRedraw(method, args, redraw) {
  await state.py.call(method, args);
  afterWrite();
  redraw();
}

export async function showConflicts() {
  const still = sameRoute();
  const list = await state.py.call("conflicts");
  if (!still()) return;
  screen("Conflicts", crumbs(),
    ...conflictScreen(list, {
      onResolve: (entryId, choices) => writeAndRedraw("resolve_conflict", { entry_id: entryId, choices }, showConflicts),
    }));
}


/** Changes the server refused: listed until the user sends them again or discards them (issue 18). */
export async function showRejected() {
  const still = sameRoute();
  let list;
  try { list = await state.py.call("rejected"); } catch (err) { banner(err.message); return; }
  if (!still()) return;
  screen("Refused changes", crumbs(),
    ...rejectedScreen(list, {
      onRetry: (entryId, values) => writeAndRedraw("retry_rejected", { entry_id: entryId, values }, showRejected),
      onDiscard: (entryId) => writeAndRedraw("discard_rejected", { entry_id: entryId }, showRejected),
    }));
}
