// "Save recovery file" (issue 13 item 5): the changes this device has not been able to send, sealed so only the
// server can open them, saved as a file for an administrator to import. Works while locked (a forgotten PIN):
// each change was also sealed to the server when it was made (pyclient/adapters/browser_recovery.py).
import { state } from "../state.js";
import { h, screen } from "../ui.js";

/** Ask Python for the file and hand it to the browser as a download. Returns Python's answer (plain words). */
export async function saveRecoveryFile() {
  const r = await state.py.call("recovery_file");
  if (r.data) {
    const url = URL.createObjectURL(new Blob([r.data], { type: "application/json" }));
    const a = h("a", { href: url, download: r.name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }
  return r;
}

function saveButton(result) {
  return h("button", { type: "button", class: "btn", id: "save-recovery", onclick: async () => {
    result.textContent = "Preparing the file…";
    try { result.textContent = (await saveRecoveryFile()).text; } catch (err) { result.textContent = err.message; }
  } }, "Save recovery file");
}

/** The card on the #/recovery screen. */
export function recoveryCard() {
  const result = h("p", { id: "recovery-result", role: "status", "aria-live": "polite" });
  return h("section", { class: "card", id: "recovery" },
    h("h2", {}, "Recovery file"),
    h("p", {}, "If this device cannot send its changes — no connection for a long time, an account problem, or a "
      + "forgotten PIN — save them to a file and give it to your administrator. Only the OmniCare server can "
      + "open the file, so it is safe to carry on a USB stick or send by e-mail."),
    h("p", { class: "muted" }, "The changes stay on this device until the server has them. Importing a file twice "
      + "does no harm."),
    h("div", { class: "actions" }, saveButton(result)),
    result);
}

export function showRecovery() {
  screen("Recovery file", recoveryCard());
}

/** A "Recovery file" link in the account bar (next to Sync now / Lock / Sign out). */
export function installRecoveryLink() {
  const nav = document.getElementById("usernav");
  if (!nav || document.getElementById("recovery-link")) return;
  nav.prepend(h("a", { href: "#/recovery", class: "btn ghost", id: "recovery-link" }, "Recovery file"));
}

/** On the unlock screen: save the file without the PIN (before "Forgot PIN" erases the device). */
export function lockedRecoveryButton() {
  const result = h("p", { id: "recovery-result", role: "status", "aria-live": "polite" });
  const b = saveButton(result);
  b.className = "btn ghost";
  return h("div", { class: "locked-recovery" }, b, result);
}
