// OmniCare service worker: serves the app shell, the Pyodide runtime and the pyclient wheel from a
// versioned cache so the app opens (and unlocks with the PIN) with no network at all.
//
// Versioning: the cache name carries a hash of every shell file + wheels.json + the wheel + the
// runtime's package.json, so ANY change to what the browser runs gives a new cache. Browsers only
// re-install a worker when sw.js itself changes, so pages also ask us to "check" when online: we
// re-hash the small files, and if the version moved we fill a new cache and tell every tab
// ("update-ready") to stop writing and reload. The runtime (13 MB) is copied from the old cache
// when its package.json did not change.
/* eslint-env serviceworker */

const PREFIX = "omnicare-";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/app/styles.css",
  "/app/main.js",
  "/app/ui.js",
  "/app/state.js",
  "/app/auth.js",
  "/app/routes.js",
  "/app/forms.js",
  "/app/dosage.js",
  "/app/screens/rejected.js",
  "/app/screens/device_set.js",
  "/app/screens/conflicts.js",
  "/app/screens/emergency.js",
  "/app/screens/register.js", // issue 18 item 1
  "/app/screens/chart_full.js",
  "/app/screens/recovery.js",
  "/app/py.js",
  "/app/idb.js",
  "/app/crypto.js",
  "/app/net.js",
  "/app/words.js", // generated: pyclient.outcome.BROWSER_WORDS
  "/app/webauthn.js",
  "/app/sync-runner.js",
  "/app/cds.js",
  "/app/memidb.js", // online only (issue 13 item 4)
  "/app/online-only.js",
  "/app/screens/online.js",
  "/icons/icon-192.png",
  "/icons/icon-512.png",
  "/icons/maskable-192.png",
  "/icons/maskable-512.png",
  "/wheels/wheels.json",
];
const RUNTIME = [
  "/vendor/pyodide/pyodide.mjs",
  "/vendor/pyodide/pyodide.asm.mjs",
  "/vendor/pyodide/pyodide.asm.wasm",
  "/vendor/pyodide/python_stdlib.zip",
  "/vendor/pyodide/pyodide-lock.json",
];
const RUNTIME_STAMP = "/vendor/pyodide/package.json";
const NETWORK_ONLY = /^\/(api|fhir|ws|admin|static)(\/|$)/;

async function fetchFresh(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r;
}

async function hex(buf) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  return Array.from(d.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fetch the small files fresh and hash them: the version of what the network would serve now. */
async function probe() {
  const urls = [...SHELL, RUNTIME_STAMP];
  const responses = await Promise.all(urls.map(fetchFresh));
  const bodies = await Promise.all(responses.map((r) => r.clone().arrayBuffer()));
  const wheels = JSON.parse(new TextDecoder().decode(bodies[SHELL.indexOf("/wheels/wheels.json")]));
  const wheelUrl = "/wheels/" + wheels.pyclient;
  const wheelResp = await fetchFresh(wheelUrl);
  const wheelBody = await wheelResp.clone().arrayBuffer();
  const parts = [];
  bodies.forEach((b, n) => parts.push(new TextEncoder().encode(urls[n] + "\n"), new Uint8Array(b)));
  parts.push(new Uint8Array(wheelBody));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const all = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) { all.set(p, pos); pos += p.length; }
  const files = new Map(urls.map((u, n) => [u, responses[n]]));
  files.set(wheelUrl, wheelResp);
  return { version: await hex(all), runtimeStamp: await hex(bodies[bodies.length - 1]), files };
}

async function currentCacheName() {
  const names = (await caches.keys()).filter((n) => n.startsWith(PREFIX));
  return names.length ? names.sort().pop() : null;
}

async function currentVersion() {
  const name = await currentCacheName();
  if (!name) return null;
  const meta = await (await caches.open(name)).match("/__version");
  return meta ? meta.json() : null;
}

/** Fill a complete new cache for the version the network serves; the old one stays until done. */
async function install() {
  const p = await probe();
  const old = await currentVersion();
  if (old && old.version === p.version) return { version: p.version, changed: false };
  const name = PREFIX + p.version;
  const cache = await caches.open(name);
  for (const [url, resp] of p.files) await cache.put(url, resp);
  const oldCache = old ? await caches.open(PREFIX + old.version) : null;
  for (const url of RUNTIME) {
    const reuse = oldCache && old.runtimeStamp === p.runtimeStamp ? await oldCache.match(url) : null;
    await cache.put(url, reuse || (await fetchFresh(url)));
  }
  await cache.put("/__version", new Response(JSON.stringify({ version: p.version, runtimeStamp: p.runtimeStamp }),
    { headers: { "Content-Type": "application/json" } }));
  // Only now is the new version complete: drop the others.
  for (const n of await caches.keys()) if (n.startsWith(PREFIX) && n !== name) await caches.delete(n);
  return { version: p.version, changed: !!old };
}

let checking = null;
async function check() {
  if (!checking) {
    checking = install().finally(() => { checking = null; });
  }
  const result = await checking;
  if (result.changed) {
    for (const c of await self.clients.matchAll({ type: "window" })) c.postMessage({ type: "update-ready", version: result.version });
  }
  return result;
}

let installed = null;
self.addEventListener("install", (event) => {
  event.waitUntil(install().then((r) => { installed = r; return self.skipWaiting(); }));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    await self.clients.claim();
    // A changed sw.js replaced an older version: tabs still running the old code must reload.
    if (installed && installed.changed) {
      for (const c of await self.clients.matchAll({ type: "window" })) c.postMessage({ type: "update-ready", version: installed.version });
    }
  })());
});

self.addEventListener("message", (event) => {
  const msg = event.data || {};
  const port = event.ports && event.ports[0];
  const reply = (v) => (port ? port.postMessage(v) : event.source && event.source.postMessage(v));
  if (msg.type === "version") {
    currentVersion().then((v) => reply({ type: "version", version: v && v.version }));
  } else if (msg.type === "check") {
    check().then((r) => reply({ type: "checked", ...r }), (e) => reply({ type: "checked", error: String(e) }));
  }
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin || NETWORK_ONLY.test(url.pathname)) return;
  event.respondWith((async () => {
    const name = await currentCacheName();
    const cache = name ? await caches.open(name) : null;
    const key = req.mode === "navigate" ? "/" : url.pathname;
    const hit = cache ? await cache.match(key) : null;
    if (hit) return hit;
    try {
      return await fetch(req);
    } catch (err) {
      if (req.mode === "navigate" && cache) {
        const shell = await cache.match("/");
        if (shell) return shell;
      }
      return new Response("Offline and not cached: " + url.pathname, { status: 503, headers: { "Content-Type": "text/plain" } });
    }
  })());
});
