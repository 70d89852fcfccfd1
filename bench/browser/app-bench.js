// Bench harness for the PWA's own code path: the real /app/idb.js, /app/crypto.js and /app/net.js modules and
// pyclient's BrowserApp (pyclient/adapters/browser_app.py) loaded exactly as /app/py.js loads them. The only
// difference from py.js is that the BrowserApp object stays reachable (Python global `bench_app`), so
// bench_helpers.py can time its internals (sealing batches, search) without a UI in the way.
import { loadPyodide } from "/vendor/pyodide/pyodide.mjs";
import * as idb from "/app/idb.js";
import * as crypto from "/app/crypto.js";
import { http, login, deviceIdFrom } from "/app/net.js";

let pyodide = null;
let app = null;
// As main.js does: every request names the device its session is bound to (issue 10, item 15).
let deviceId = null;
deviceIdFrom(() => deviceId);

async function text(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.text();
}

window.bench = {
  /** Pyodide + the pyclient wheel + the bench helpers; resolves to milliseconds spent. */
  async boot() {
    const t0 = performance.now();
    const [py, wheels] = await Promise.all([
      loadPyodide({ indexURL: "/vendor/pyodide/", lockFileURL: "/vendor/pyodide/pyodide-lock.json", packages: [] }),
      fetch("/wheels/wheels.json").then((r) => r.json()),
    ]);
    pyodide = py;
    const wheel = await fetch("/wheels/" + wheels.pyclient).then((r) => r.arrayBuffer());
    const site = pyodide.runPython("import sysconfig; sysconfig.get_paths()['purelib']");
    pyodide.unpackArchive(new Uint8Array(wheel), "wheel", { extractDir: site });
    pyodide.FS.writeFile(site + "/omnicare_bench_demo.py", await text("/__bench/demo.py"));
    pyodide.FS.writeFile(site + "/bench_helpers.py", await text("/__bench/bench_helpers.py"));
    pyodide.registerJsModule("omnicare_js", { idb, crypto, http, onEvent: () => {} });
    app = await pyodide.runPythonAsync(`
from pyclient.adapters.browser_app import BrowserApp
import omnicare_js, bench_helpers
bench_app = BrowserApp(idb=omnicare_js.idb, crypto=omnicare_js.crypto, http=omnicare_js.http, on_event=omnicare_js.onEvent)
bench_helpers.APP = bench_app
bench_app
`);
    document.getElementById("state").textContent = "ready";
    return performance.now() - t0;
  },
  async login(username, password) {
    const r = await login(username, password);
    return r.status;
  },
  /** The same JSON dispatcher the UI uses (BrowserApp.call). */
  async call(name, args = {}) {
    const out = JSON.parse(await app.call(name, JSON.stringify(args)));
    if (out.error) throw new Error(out.error.kind + ": " + out.error.message);
    if (name === "setup_pin") deviceId = out.ok.deviceId;
    return out.ok;
  },
  /** Time one UI-level call (JSON in, JSON out) in milliseconds, with the durations of the main-thread long
   * tasks (> 50 ms, the Long Tasks API) that ran meanwhile: a tap during them waits that long. */
  async timeCall(name, args = {}) {
    const longtasks = [];
    let observer = null;
    if (PerformanceObserver.supportedEntryTypes.includes("longtask")) {
      observer = new PerformanceObserver((list) => list.getEntries().forEach((e) => longtasks.push(e.duration)));
      observer.observe({ type: "longtask" });
    }
    const t0 = performance.now();
    const out = JSON.parse(await app.call(name, JSON.stringify(args)));
    const ms = performance.now() - t0;
    if (observer) {
      await new Promise((r) => setTimeout(r, 0)); // entries are delivered in a task of their own
      observer.takeRecords().forEach((e) => longtasks.push(e.duration));
      observer.disconnect();
    }
    if (out.error) throw new Error(out.error.kind + ": " + out.error.message);
    return { ms, result: out.ok, longtasks };
  },
  /** Search latency for each query, as the UI sees it (performance.now around BrowserApp.call("search")). */
  async searchLatencies(queries) {
    const out = [];
    for (const q of queries) {
      const t0 = performance.now();
      const res = JSON.parse(await app.call("search", JSON.stringify({ text: q })));
      out.push([performance.now() - t0, res.ok ? res.ok.results.length : -1]);
    }
    return out;
  },
  /** Run an async helper of bench_helpers.py; JSON in, JSON out. */
  async helper(name, args = {}) {
    const fn = pyodide.pyimport("bench_helpers")[name];
    return JSON.parse(await fn(JSON.stringify(args)));
  },
  async count() {
    return idb.countRecords();
  },
};
