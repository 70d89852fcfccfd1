// Boot Pyodide from our own origin (never a CDN) and load the pyclient wheel; expose the Python BrowserApp.
import { loadPyodide } from "/vendor/pyodide/pyodide.mjs";
import * as idb from "./idb.js";
import * as crypto from "./crypto.js";
import { http } from "./net.js";

let appPromise = null;

export class PyError extends Error {
  constructor(err) {
    super(err.message);
    this.kind = err.kind;
    this.fields = err.fields || {};
  }
}

let unwatchWasm = () => {};

/** Rejects when WebAssembly is missing or fails to fetch/instantiate (while the runtime loads). */
function wasmFailure() {
  return new Promise((_, reject) => {
    if (typeof WebAssembly !== "object" || !WebAssembly) { reject(new Error("This browser cannot run WebAssembly.")); return; }
    const saved = {};
    for (const k of ["instantiateStreaming", "instantiate"]) {
      const orig = WebAssembly[k];
      if (typeof orig !== "function") continue;
      saved[k] = orig;
      WebAssembly[k] = function (...args) {
        const p = orig.apply(this, args);
        p.catch((err) => reject(new Error("The offline engine could not load: " + ((err && err.message) || err))));
        return p;
      };
    }
    unwatchWasm = () => { Object.assign(WebAssembly, saved); };
  });
}

/** Load the runtime + wheel once; resolves to {call(name, args)} bound to the Python BrowserApp. */
export function bootPython(onEvent, { store } = {}) {
  if (appPromise) return appPromise;
  appPromise = (async () => {
    const t0 = performance.now();
    const timings = {};
    const mark = (k) => { timings[k] = Math.round(performance.now() - t0); };
    const [pyodide, wheels] = await Promise.all([
      // Pyodide only warns when its WebAssembly fails to load and then never settles: watch for that
      // failure so the app can go online only at once (issue 13 item 4) instead of "Starting…" for ever.
      Promise.race([loadPyodide({ indexURL: "/vendor/pyodide/", lockFileURL: "/vendor/pyodide/pyodide-lock.json", packages: [] }),
        wasmFailure()]).finally(unwatchWasm),
      fetch("/wheels/wheels.json").then((r) => {
        if (!r.ok) throw new Error("wheels.json: HTTP " + r.status);
        return r.json();
      }),
    ]);
    mark("runtime");
    const wheel = await fetch("/wheels/" + wheels.pyclient).then((r) => {
      if (!r.ok) throw new Error("pyclient wheel: HTTP " + r.status);
      return r.arrayBuffer();
    });
    const site = pyodide.runPython("import sysconfig; sysconfig.get_paths()['purelib']");
    pyodide.unpackArchive(new Uint8Array(wheel), "wheel", { extractDir: site });
    mark("wheel");
    // bench_* calls (synthetic records) only for a page opened with ?bench=1 by the benchmark harness/tests.
    const bench = new URLSearchParams(location.search).get("bench") === "1";
    // `store`: main.js's switchable store (IndexedDB, or memory when online only: issue 13 item 4).
    pyodide.registerJsModule("omnicare_js", { idb: store || idb, crypto, http, onEvent, bench });
    const app = await pyodide.runPythonAsync(`
from pyclient.adapters.browser_app import BrowserApp
import omnicare_js
BrowserApp(idb=omnicare_js.idb, crypto=omnicare_js.crypto, http=omnicare_js.http, on_event=omnicare_js.onEvent,
           bench=bool(omnicare_js.bench))
`);
    mark("import");
    const bootMs = performance.now() - t0;
    const inflight = new Set(); // calls into Python not yet answered
    return {
      pyodide,
      bootMs,
      timings,
      async call(name, args = {}) {
        const running = app.call(name, JSON.stringify(args));
        inflight.add(running);
        let raw;
        try { raw = await running; } finally { inflight.delete(running); }
        const out = JSON.parse(raw);
        if (out.error) throw new PyError(out.error);
        return out.ok;
      },
      /** Every call in progress has finished (issue 18: the lock never cuts a save in half), or timeoutMs passed. */
      settled(timeoutMs = 15000) {
        return Promise.race([Promise.allSettled([...inflight]), new Promise((r) => setTimeout(r, timeoutMs))]);
      },
    };
  })();
  appPromise.catch(() => { appPromise = null; });
  return appPromise;
}
