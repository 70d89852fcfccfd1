// Background sync: whenever online, when the connection returns, after local writes, on WebSocket hints.
// One runner at a time across tabs (Web Locks). Python's state machine decides what to send and in
// which order; this file only decides WHEN.
// Device telemetry (PROTOCOL.md §6) goes with sync rounds (at most every 30 s) and every 5 minutes while
// online; Python builds the report (pyclient.telemetry), this file only feeds it the browser's numbers.

const TELEMETRY_EVERY_MS = 300000;
const TELEMETRY_MIN_GAP_MS = 30000;

export class SyncRunner {
  constructor({ py, onStatus, onEvent, deviceId = () => null, appVersion = () => "" }) {
    this.py = py;
    this.appVersion = appVersion;
    this.lastReport = 0;
    this.teleTimer = null;
    this.deviceId = deviceId;
    this.onStatus = onStatus;
    this.onEvent = onEvent;
    this.active = false;
    this.timer = null;
    this.ws = null;
    this.wsRetry = 1000;
    this.again = false;
    window.addEventListener("online", () => { this.tick(false); this.connectWs(); this.kick("online"); });
    window.addEventListener("offline", () => { this.tick(true); this.closeWs(); this.refresh(); });
  }

  start() {
    this.active = true;
    clearInterval(this.timer);
    this.timer = setInterval(() => this.kick("timer"), 30000);
    clearInterval(this.teleTimer);
    this.teleTimer = setInterval(() => this.report("timer"), TELEMETRY_EVERY_MS);
    this.tick(navigator.onLine);
    this.connectWs();
    return this.kick("start");
  }

  stop() {
    this.active = false;
    clearInterval(this.timer);
    clearInterval(this.teleTimer);
    this.closeWs();
  }

  offlineReady() {
    return !!(navigator.serviceWorker && navigator.serviceWorker.controller);
  }

  /** Count the app time that just ended as online or offline (Python keeps the counters). */
  tick(wasOnline) {
    this.py.call("telemetry_tick", { online: wasOnline, offline_ready: this.offlineReady() }).catch(() => {});
  }

  /** Send the device report (no patient data: counts, sizes, ages, versions). Never throws. */
  async report(reason) {
    if (!this.active || !navigator.onLine) return null;
    this.lastReport = Date.now();
    let storage = {};
    try {
      if (navigator.storage && navigator.storage.estimate) {
        const e = await navigator.storage.estimate();
        storage = { used: e.usage, quota: e.quota, indexedDb: e.usageDetails ? e.usageDetails.indexedDB : undefined,
          persisted: navigator.storage.persisted ? await navigator.storage.persisted() : null };
      }
    } catch { /* unknown */ }
    try {
      return await this.py.call("telemetry_report", { reason, online: true, offline_ready: this.offlineReady(), storage, app_version: this.appVersion() || "" });
    } catch { return null; }
  }

  async refresh() {
    try { this.onStatus(await this.py.call("status")); } catch { /* locked */ }
  }

  /** Run one sync now (or right after the running one). Resolves when this round is done. */
  async kick(reason, { first = false } = {}) {
    if (!this.active) return;
    if (!navigator.onLine) { await this.refresh(); return; }
    if (first) this.firstPending = true; // sticky: a round already running must not swallow it
    if (this.running) { this.again = true; return this.running.then(() => this.running); }
    const run = async () => {
      do {
        this.again = false;
        await this.refresh();
        const body = async (lock) => {
          if (!lock) return; // another tab holds the runner: it syncs the same database
          await this.py.call("reload_if_stale");
          const f = !!this.firstPending;
          // manual: the user pressed "Sync now": a backed-off retry (refused audit upload) is tried at once.
          const status = await this.py.call("sync_once", { first: f, manual: reason === "manual" });
          if (f) this.firstPending = false;
          this.onStatus(status);
          if (Date.now() - this.lastReport >= TELEMETRY_MIN_GAP_MS) await this.report("sync");
        };
        try {
          if (navigator.locks) await navigator.locks.request("omnicare-sync", { ifAvailable: true }, body);
          else await body(true);
        } catch (err) {
          this.onEvent({ type: "error", message: err.message, kind: err.kind });
        }
      } while (this.again && this.active && navigator.onLine);
    };
    this.running = run().finally(() => { this.running = null; });
    return this.running;
  }

  connectWs() {
    if (!this.active || !navigator.onLine || this.ws) return;
    let ws;
    try {
      const dev = this.deviceId();
      ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/sync${dev ? "?deviceId=" + encodeURIComponent(dev) : ""}`);
    } catch { return; }
    this.ws = ws;
    ws.addEventListener("open", () => { this.wsRetry = 1000; this.kick("ws-open"); }); // catch up by cursor after every reconnect
    ws.addEventListener("message", (e) => {
      this.hints = (this.hints || 0) + 1;
      let m = null;
      try { m = JSON.parse(e.data); } catch { /* not JSON */ }
      if (m && m.type === "device-revoked") { this.stop(); this.onEvent({ type: "revoked" }); return; }
      // An emergency grant ended (PROTOCOL.md §8): screens/emergency.js removes the chart now, then the pull.
      if (m && m.type === "emergency-ended") window.dispatchEvent(new CustomEvent("omnicare-emergency-ended", { detail: m }));
      if (m && Number.isInteger(m.seq)) this.head = Math.max(this.head || 0, m.seq);
      this.kick("hint");
    });
    ws.addEventListener("close", () => {
      if (this.ws === ws) this.ws = null;
      if (this.active && navigator.onLine) {
        setTimeout(() => this.connectWs(), this.wsRetry);
        this.wsRetry = Math.min(this.wsRetry * 2, 60000);
      }
    });
    ws.addEventListener("error", () => {});
  }

  closeWs() {
    const ws = this.ws;
    this.ws = null;
    if (ws) try { ws.close(); } catch { /* ignore */ }
  }
}
