// Sign-in, offline PIN, unlock/lock, sign-out and the idle lock (automatic logoff).
import * as net from "./net.js";
import * as idb from "./idb.js";
import * as webauthn from "./webauthn.js"; // trust: hardware-bound unlock (WebAuthn PRF)
import { state, channel, hooks, idleMinutes } from "./state.js";
import { route } from "./routes.js";
import { h, field, screen, progress, banner, confirmDialog, formScreen, input, showErrors } from "./ui.js";
import { lockedRecoveryButton } from "./screens/recovery.js";

const onStatus = (s) => hooks.onStatus(s);

// ---------------------------------------------------------------- sign in / PIN
export function signInScreen(message) {
  document.getElementById("usernav").hidden = true;
  // The pill's words are Python's (pyclient.views.status): before the runtime is up it keeps "Starting…" and
  // main.js asks for them once it is (issue 11 item 6).
  if (state.py) state.py.call("status", { signed_out: true }).then(onStatus).catch(() => {});
  const user = input({ name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const { codeField, login } = secondFactor();
  const form = formScreen("Sign in", null, [
    h("p", { class: "muted" }, navigator.onLine ? "Sign in with your OmniCare account. The first sign-in on a device sets an offline PIN." : "You are offline. The first sign-in on a device needs a connection."),
    field("Username", user, { name: "username" }), field("Password", pass, { name: "password" }), codeField,
  ], {
    cancelHref: "#/",
    submit: async ({ username, password, code: totp }) => {
      if (!username || !password) throw Object.assign(new Error("Enter your username and password."), { fields: { username: username ? "" : "Required.", password: password ? "" : "Required." } });
      if (!navigator.onLine) throw new Error("You are offline. Connect to sign in.");
      const r = await login(username.trim(), password, totp);
      state.username = r.json.username;
      state.scope = r.json.scope; // trust: wide-scope roles need a passphrase unless the key is hardware-bound
      state.permissions = r.json.permissions; // the role's allowed actions; kept by Python once unlocked
      state.practitioner = r.json.practitioner ?? null; // issue 18: authors are references to it
      state.clinicians = r.json.clinicians ?? null; // front desk: the registration's responsible clinicians
      await runtimeReady(form);
      if (await hooks.afterSignIn?.(r.json, unlocked)) return; // online only: no PIN, nothing kept (issue 13)
      const info = await state.py.call("boot");
      if (info.hasKeyring) {
        if (info.username && info.username !== state.username) {
          const ok = await confirmDialog("Another user's data is on this device", `Signing in as ${state.username} removes ${info.username}'s offline data from this device.`, "Remove and continue", { danger: true });
          if (!ok) return;
          await state.py.call("wipe");
          return pinSetupScreen();
        }
        return unlockScreen("Signed in. Enter your offline PIN to unlock.");
      }
      return pinSetupScreen();
    },
  });
  form.querySelector(".actions a").remove();
  form.querySelector("button[type=submit]").textContent = "Sign in";
  form.id = "signin";
  screen("Sign in", h("div", { class: "narrow" }, form));
  if (message) showErrors(form, { message });
  user.focus();
  state.signinAt ??= performance.now(); // first sign-in form usable, ms after page open (startup_bench.py)
}

/** The verification-code field (hidden until the server asks for the second factor) and the sign-in that
 * shows it: both sign-in forms ask the same way. Resolves to the 200 response; throws the form's errors. */
function secondFactor() {
  const code = input({ name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 8 });
  const codeField = field("Verification code", code, { name: "code", hint: "The 6-digit code from your authenticator app." });
  codeField.hidden = true;
  const login = async (username, password, totp) => {
    const r = await net.login(username, password, codeField.hidden ? "" : (totp || "").trim());
    if (r.mfaRequired) {
      const first = codeField.hidden;
      codeField.hidden = false;
      code.focus();
      throw Object.assign(new Error(net.outcomeText(r.json, "Enter your verification code.")), { fields: first ? {} : { code: "Check the code and try again." } });
    }
    if (r.status !== 200) throw new Error(net.loginError(r));
    return r;
  };
  return { codeField, login };
}

/** Signed in before the Python runtime finished loading (issue 18 item 12): say so on the button and wait. */
async function runtimeReady(form) {
  const btn = form.querySelector("button[type=submit]");
  const label = btn.textContent;
  if (!state.py) btn.textContent = "Starting…";
  try { await state.ready; } finally { btn.textContent = label; }
}

/** Session expired while unlocked: sign in again (no PIN change, local data untouched), then sync. */
export function reauthScreen() {
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const { codeField, login } = secondFactor();
  const form = formScreen("Sign in to sync", null, [
    h("p", { class: "muted" }, `Signed in on this device as ${state.username}. Enter your password to resume syncing.`),
    field("Password", pass, { name: "password" }), codeField,
  ], {
    cancelHref: "#/patients",
    submit: async ({ password, code: totp }) => {
      const r = await login(state.username, password, totp);
      await state.py.call("set_permissions", { permissions: r.json.permissions }).catch(() => {});
      await state.py.call("set_practitioner", { practitioner: r.json.practitioner ?? null, clinicians: r.json.clinicians ?? null }).catch(() => {});
      state.reauthShown = false;
      location.hash = "#/patients";
      state.runner.kick("reauth");
    },
  });
  form.id = "reauth";
  screen("Sign in", h("div", { class: "narrow" }, form));
  pass.focus();
}

export async function pinSetupScreen() {
  const rule = await state.py.call("pin_rule"); // the rule setup_pin enforces (pyclient.keys), said as the hint
  const pin = input({ name: "pin", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const again = input({ name: "pin2", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const form = formScreen("Set your offline PIN", null, [
    h("p", { class: "muted" }, "This PIN unlocks the encrypted patient data on this device when you are offline. It never leaves the device and cannot be recovered: if you forget it, sign in again online."),
    field("New PIN", pin, { name: "pin", hint: rule }),
    field("Repeat PIN", again, { name: "pin2" }),
  ], {
    cancelHref: "#/",
    submit: async ({ pin: p1, pin2 }) => {
      if (p1 !== pin2) throw Object.assign(new Error("The PINs do not match."), { fields: { pin2: "Does not match the PIN above." } });
      setBusy("Protecting the device key with your PIN…");
      try {
        const prf = await webauthn.enroll(state.username); // trust: second wrapping by the authenticator, if any
        state.deviceId = (await state.py.call("setup_pin", { pin: p1, username: state.username, scope: state.scope || "care-team", prf })).deviceId;
      } finally { setBusy(null); }
      await unlocked({ first: true });
    },
  });
  form.querySelector(".actions a").remove();
  form.querySelector("button[type=submit]").textContent = "Set PIN";
  form.id = "pin-setup";
  screen("Set PIN", h("div", { class: "narrow" }, form));
  pin.focus();
}

export function unlockScreen(message) {
  document.getElementById("usernav").hidden = true;
  state.py.call("status").then(onStatus).catch(() => {}); // "locked", in Python's words
  const pin = input({ name: "pin", type: "password", inputmode: "numeric", autocomplete: "current-password", required: true });
  const form = formScreen("Unlock", null, [
    h("p", { class: "muted" }, `${state.username ? state.username + ": e" : "E"}nter your offline PIN to open the encrypted records on this device.`),
    field("PIN", pin, { name: "pin" }),
  ], {
    cancelHref: "#/",
    submit: async ({ pin: p }) => {
      setBusy("Unlocking…");
      try {
        const prf = await webauthn.unlockSecret(state.py).catch(() => null); // trust: hardware-bound key
        await state.py.call("unlock", { pin: p, prf });
      } catch (err) {
        // The message says how long to wait / how many tries are left (pyclient.pinguard).
        if (err.kind === "wrong_pin") throw Object.assign(new Error(err.message || "That PIN is not correct."), { fields: { pin: "Wrong PIN." } });
        if (err.kind === "wiped") setTimeout(() => location.reload(), 2000); // data erased: back to sign-in
        throw err;
      } finally { setBusy(null); }
      await unlocked({ first: false });
    },
  });
  // A real <button> (issue 18, WCAG 2.1.1): Enter and Space work as for any button; it replaces the Cancel link.
  const forgot = h("button", { type: "button", class: "btn ghost unlock-forgot", id: "forgot-pin", onclick: signOut }, "Forgot PIN");
  form.querySelector(".actions a").replaceWith(forgot);
  form.querySelector("button[type=submit]").textContent = "Unlock";
  form.id = "unlock";
  screen("Unlock", h("div", { class: "narrow" }, form, lockedRecoveryButton()));
  if (message) form.querySelector(".form-error").textContent = message;
  pin.focus();
}

export function setBusy(text) {
  document.body.classList.toggle("busy", !!text);
  document.body.setAttribute("aria-busy", text ? "true" : "false");
}

export async function unlocked({ first }) {
  state.unlocked = true;
  document.getElementById("usernav").hidden = false;
  if (navigator.storage && navigator.storage.persist && state.storageMode?.mode !== "online-only") {
    navigator.storage.persisted().then((p) => p || navigator.storage.persist()).then(async (granted) => {
      state.persistRefused = !granted;
      // Said once per device, with what to do (issue 18), not on every status.
      if (!granted && !localStorage.getItem("omnicare.persistExplained")) {
        localStorage.setItem("omnicare.persistExplained", "1");
        const note = await state.py.call("persistence_note").catch(() => null);
        if (note) banner(note, { kind: "info" });
      }
    }).catch(() => {});
  }
  if (state.permissions) { // from this sign-in: which controls the role allows (server matrix)
    await state.py.call("set_permissions", { permissions: state.permissions }).catch(() => {});
    state.permissions = null;
  }
  if (state.practitioner !== undefined) { // from this sign-in: the user's Practitioner (authors as references)
    await state.py.call("set_practitioner", { practitioner: state.practitioner, clinicians: state.clinicians ?? null }).catch(() => {});
    state.practitioner = undefined;
  }
  const done = await state.py.call("first_sync_done");
  if (!done) {
    state.firstSync = true;
    progress(true, 0, null);
    // Taken up again after the lock cut it short: the pull goes on from its stored cursor (every page is
    // written with the cursor after it), so say that rather than "downloading" anew.
    const again = state.firstSyncCut;
    state.firstSyncCut = false;
    screen("First sync", h("section", { class: "card center", id: "first-sync", "data-resumed": again ? "1" : "0" },
      h("div", { class: "spinner", "aria-hidden": "true" }),
      h("h2", {}, again ? "Continuing the first sync" : "Downloading your patients"),
      h("p", { class: "muted" }, again
        ? "It goes on from where it stopped: the records that arrived before the lock are kept on this device."
        : "Records are encrypted on this device as they arrive. You can keep this tab open while it finishes.")));
    state.runner.active = !state.updateReady;
    // Before the socket: its "open" starts a round at once, and that round must already be the first sync
    // (pins first, then the prefetch tail) — else it pulls the whole device set as an ordinary sync and the
    // chart is usable only once everything arrived (seen with 200,000 resources, bench/first_sync_budget_bench.py).
    state.runner.firstPending = true;
    state.runner.connectWs(); // its "ready" message gives the feed head for the progress bar
    await new Promise((r) => setTimeout(r, 300));
    await state.runner.kick("first", { first: true });
    state.firstSync = false;
    progress(false);
    // Locked meanwhile (the idle lock outlasted by a large first sync): the unlock screen is up and says the
    // sync goes on at unlock, which calls this again. No banner, no background runner under the lock screen.
    if (!state.unlocked) return;
    const ok = await state.py.call("first_sync_done");
    if (!ok) banner(navigator.onLine ? "The first sync did not finish. It will retry automatically." : "You are offline: the first sync will start when the connection returns.", { kind: "warn" });
  }
  if (!state.updateReady) state.runner.start();
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/patients";
  else route();
}

export async function lock(reason) {
  if (!state.unlocked) return;
  state.unlocked = false;
  // A download cut short (the idle lock outlasted by a large first sync or its prefetch tail) goes on at unlock
  // from the stored pull cursor: said on the unlock screen, so nobody signs out and starts again.
  const busy = !!state.runner.running;
  state.query = ""; // a search may contain a patient's name
  state.runner.stop();
  await state.py.settled(); // a save in progress finishes whole before the keys leave memory (issue 18)
  await hooks.keepDraft(); // a half-typed form is sealed with the device keys before they go (issue 18 item 10)
  state.firstSyncCut = state.firstSync;
  await state.py.call("lock");
  if (await hooks.lockedOnlineOnly?.(signInScreen)) return; // online only: memory wiped, sign in again
  const cut = state.firstSyncCut ? " The first sync goes on from where it stopped; what arrived is kept."
    : busy ? " The download goes on from where it stopped; what arrived is kept." : "";
  unlockScreen(reason === "idle" ? `Locked after inactivity. Enter your PIN to continue.${cut}` : (cut.trim() || null));
}

export async function signOut() {
  // Every change not on the server counts: waiting, refused and conflicted (words from pyclient.views.rejected).
  // Locked too ("Forgot PIN"): Python counts the sealed entries and words it (pyclient.views.rejected).
  let warn = null;
  try { warn = await state.py.call("sign_out_warning"); } catch { /* the store could not be read */ }
  let outbox = 0;
  try { outbox = await idb.outboxCount(); } catch { /* no db */ }
  // Never fewer than IndexedDB holds; Python's words whenever it answered, else say the number plainly.
  const unsynced = Math.max(warn?.unsent || 0, outbox);
  const lost = (warn?.unsent >= unsynced && warn.message) || `Changes not on the server: ${unsynced}. Signing out removes them from this device for good.`;
  const ok = await confirmDialog("Sign out and remove local data?",
    unsynced ? lost : "All patient data is removed from this device. You need a connection to sign in again.",
    unsynced ? "Discard changes and sign out" : "Sign out", { danger: !!unsynced });
  if (!ok) return;
  state.runner?.stop();
  state.unlocked = false;
  const told = navigator.onLine && (await net.serverSignOut());
  await state.py.call("wipe");
  state.deviceId = null; // trust: the wiped device's id is gone, so its session cookie reads nothing
  if (!told) net.markSignOutPending(); // completed against the server first thing when next online
  channel?.postMessage({ type: "signed-out" });
  location.hash = "#/";
  signInScreen();
}

// ---------------------------------------------------------------- idle lock (automatic logoff)
export function startIdleTimer() {
  let last = Date.now();
  for (const ev of ["pointerdown", "keydown", "touchstart", "wheel"]) window.addEventListener(ev, () => { last = Date.now(); }, { passive: true });
  setInterval(() => {
    if (state.unlocked && Date.now() - last > idleMinutes() * 60000) lock("idle");
  }, 2000);
}

