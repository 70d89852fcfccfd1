// IndexedDB backend of pyclient's Store (pyclient/store.py). Python calls these once per batch:
// every function takes/returns plain arrays so a whole pull page crosses the JS<->Python boundary once.
//
// Layout (SCHEMA_VERSION 1):
//   records  key [t, i]  {t, i, v, blob: Uint8Array, base: Uint8Array|null, tok: string[], mac: string}
//            mac = row MAC over the plaintext fields (pyclient/integrity.py); "StoreManifest" rows are the
//            sealed per-patient and outbox manifests
//            index "tok" (multiEntry) = blind-index tokens, index "t" = resource type
//   outbox   key id      {id, n, blob, mac}   index "n" = first-insertion order
//            device audit events are outbox rows too: {id: "audit:<uuid>", n, blob, aseq} where aseq is the
//            device's own gap-free audit sequence (meta "audit.next"); they are not sync entries
//   meta     key k       {k, v}          cursor, last sync, device id, wrapped keyring, ...
// Everything except meta keys and blind-index tokens is sealed by Python before it gets here.

export const DB_NAME = "omnicare";

/**
 * apply()'s packed form (pyclient/adapters/indexeddb_store.py): the ops as JSON, every blob as [offset, length]
 * into one buffer. Converting 1,000 ops of 8 fields each from Python to JS costs ~30-90 ms a pull page; a JSON
 * string and one byte buffer cross at once. Each blob is copied out (slice): a view would make IndexedDB
 * store the whole page's buffer with every row.
 */
export function unpackOps(json, buf) {
  const cut = (ref) => (ref == null ? null : buf.slice(ref[0], ref[0] + ref[1]));
  return JSON.parse(json).map((op) => {
    if (op[0] === "putRecord") return [op[0], op[1], op[2], op[3], cut(op[4]), cut(op[5]), op[6], op[7]];
    if (op[0] === "putOutbox") return [op[0], op[1], cut(op[2]), op[3]];
    if (op[0] === "putAudit") return [op[0], op[1], cut(op[2])];
    return op;
  });
}
export const SCHEMA_VERSION = 1;

const staleListeners = new Set();

/** Called when another tab upgrades the schema: this tab must stop writing and reload. */
export function onStale(fn) {
  staleListeners.add(fn);
}

/** A store on the IndexedDB database `name` (the app uses one; the contract tests make empty ones). */
export function makeIdb(name = DB_NAME) {
  let dbPromise = null;
  function req(r) {
    return new Promise((resolve, reject) => {
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }

  function done(tx) {
    // A write counts as saved only once its transaction has completed (durability "strict" where supported).
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
    });
  }

  function open() {
    if (dbPromise) return dbPromise;
    dbPromise = new Promise((resolve, reject) => {
      const r = indexedDB.open(name, SCHEMA_VERSION);
      r.onupgradeneeded = () => {
        const db = r.result;
        if (!db.objectStoreNames.contains("records")) {
          const rec = db.createObjectStore("records", { keyPath: ["t", "i"] });
          rec.createIndex("tok", "tok", { multiEntry: true });
          rec.createIndex("t", "t");
        }
        if (!db.objectStoreNames.contains("outbox")) {
          const ob = db.createObjectStore("outbox", { keyPath: "id" });
          ob.createIndex("n", "n");
        }
        if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta", { keyPath: "k" });
      };
      r.onblocked = () => reject(new Error("The local database is held by an older tab of OmniCare. Close other tabs and reload."));
      r.onsuccess = () => {
        const db = r.result;
        db.onversionchange = () => {
          // A newer version of the app wants another schema: close at once, never write with the old one.
          db.close();
          dbPromise = null;
          for (const fn of staleListeners) fn();
        };
        resolve(db);
      };
      r.onerror = () => reject(r.error);
    });
    dbPromise.catch(() => { dbPromise = null; });
    return dbPromise;
  }

  function rec(row) {
    return row ? [row.t, row.i, row.v, row.blob, row.base ?? null, row.tok ?? [], row.mac ?? null] : null;
  }

  /** Plaintext fields only (no blobs cross to Python): [[v, tok, mac] | null, ...] for keys [[t, i], ...]. */
  async function getRowMeta(keys) {
    const db = await open();
    const st = db.transaction("records").objectStore("records");
    // getKey first (no value is cloned): on a first sync almost every key is new, and only rows that exist
    // are read in full.
    return Promise.all(keys.map(([t, i]) => req(st.getKey([t, i])).then((k) => (k === undefined ? null
      : req(st.get([t, i])).then((r) => (r ? [r.v, r.tok ?? [], r.mac ?? null] : null))))));
  }

  /** Every record row's [t, i, v] (manifests excluded): what the device tells the server it holds. */
  async function listHeld() {
    const db = await open();
    const out = [];
    await new Promise((resolve, reject) => {
      const cur = db.transaction("records").objectStore("records").openCursor();
      cur.onsuccess = () => {
        const c = cur.result;
        if (!c) return resolve();
        if (c.value.t !== "StoreManifest") out.push([c.value.t, c.value.i, c.value.v]);
        c.continue();
      };
      cur.onerror = () => reject(cur.error);
    });
    return out;
  }

  /**
   * At most `limit` record rows' [t, i, v] after the key `after` ([t, i]; null = from the first), manifests
   * excluded, and the key to continue after (null = no more): what the device holds, a page at a time, so
   * listing 200,000 rows never holds them all (in JS or in Python) at once.
   */
  async function listHeldPage(after, limit) {
    const db = await open();
    const range = after ? IDBKeyRange.lowerBound(after, true) : null;
    const rows = await req(db.transaction("records").objectStore("records").getAll(range, limit));
    const last = rows.length < limit ? null : [rows[rows.length - 1].t, rows[rows.length - 1].i];
    return [rows.filter((r) => r.t !== "StoreManifest").map((r) => [r.t, r.i, r.v]), last];
  }

  /** The ids of every record of type t, sorted, from the "t" index's keys alone (no record is read). */
  async function listIds(t) {
    const db = await open();
    const keys = await req(db.transaction("records").objectStore("records").index("t").getAllKeys(t));
    return keys.map((k) => k[1]).sort();
  }

  async function getRecord(t, i) {
    const db = await open();
    return rec(await req(db.transaction("records").objectStore("records").get([t, i])));
  }

  /** Many records in one transaction: keys is [[t, i], ...]; missing ones come back as null. */
  async function getRecords(keys) {
    const db = await open();
    const st = db.transaction("records").objectStore("records");
    return Promise.all(keys.map(([t, i]) => req(st.get([t, i])).then(rec)));
  }

  async function listRecords(t) {
    const db = await open();
    const rows = await req(db.transaction("records").objectStore("records").index("t").getAll(t));
    rows.sort((a, b) => (a.i < b.i ? -1 : a.i > b.i ? 1 : 0));
    return rows.map(rec);
  }

  async function countRecords() {
    const db = await open();
    return req(db.transaction("records").objectStore("records").count());
  }

  /** (type, id) pairs whose token list contains token, sorted by (type, id). */
  async function lookupToken(token, t) {
    const db = await open();
    const keys = await req(db.transaction("records").objectStore("records").index("tok").getAllKeys(token));
    const out = [];
    const seen = new Set();
    for (const [kt, ki] of keys) {
      if (t != null && kt !== t) continue;
      const k = kt + "\u0000" + ki;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push([kt, ki]);
    }
    out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    return out;
  }

  async function outboxGet(id) {
    const db = await open();
    const row = await req(db.transaction("outbox").objectStore("outbox").get(id));
    return row ? row.blob : null;
  }

  async function outboxList() {
    const db = await open();
    const rows = await req(db.transaction("outbox").objectStore("outbox").index("n").getAll());
    return rows.filter((r) => r.aseq == null).map((r) => [r.id, r.blob, r.mac ?? null]);
  }

  /** Pending changes (audit events not counted: they are not the user's edits). */
  async function outboxCount() {
    const db = await open();
    const keys = await req(db.transaction("outbox").objectStore("outbox").getAllKeys());
    return keys.filter((k) => !String(k).startsWith("audit:")).length;
  }

  /** Queued device audit events, lowest sequence first: [[id, aseq, blob], ...]. */
  async function auditList(limit = 500) {
    const db = await open();
    const range = IDBKeyRange.bound("audit:", "audit:\uffff");
    const rows = await req(db.transaction("outbox").objectStore("outbox").getAll(range));
    rows.sort((a, b) => a.aseq - b.aseq);
    return rows.slice(0, limit).map((r) => [r.id, r.aseq, r.blob]);
  }

  async function auditCount() {
    const db = await open();
    return req(db.transaction("outbox").objectStore("outbox").count(IDBKeyRange.bound("audit:", "audit:\uffff")));
  }

  /**
   * Compare-and-swap of one meta value in ONE readwrite transaction: write `next` only if the stored
   * value is exactly `expected` (null = absent). Resolves [true, null] once committed, or
   * [false, stored] without writing. Two tabs reserving AES-GCM nonce blocks go through here, so they
   * can never both advance the counter from the same value.
   */
  async function metaCas(k, expected, next) {
    const db = await open();
    const tx = db.transaction("meta", "readwrite", { durability: "strict" });
    const finished = done(tx);
    const st = tx.objectStore("meta");
    const row = await req(st.get(k));
    const stored = row ? row.v : null;
    if (stored !== expected) {
      await finished;
      return [false, stored];
    }
    await req(st.put({ k, v: next }));
    await finished;
    return [true, null];
  }

  async function metaGet(k) {
    const db = await open();
    const row = await req(db.transaction("meta").objectStore("meta").get(k));
    return row ? row.v : null;
  }

  /** Many meta values at once, in the order of keys (null when absent). */
  async function metaGetMany(keys) {
    const db = await open();
    const st = db.transaction("meta").objectStore("meta");
    const rows = await Promise.all(keys.map((k) => req(st.get(k))));
    return rows.map((r) => (r ? r.v : null));
  }

  /**
   * Apply a batch of ops in ONE readwrite transaction (all or nothing). Ops are arrays:
   *   ["putRecord", t, i, v, blob, base|null, tokens|null]   (tokens null = keep existing tokens)
   *   ["deleteRecord", t, i]
   *   ["clearRecords", keep]                                    keep = [[t, i], ...]
   *   ["putOutbox", id, blob, mac]   ["deleteOutbox", id]
   *   ["putMeta", k, v|null]
   *   ["checkRow", t, i, mac|null]   abort the whole batch unless the stored row's mac is exactly this
   *                                  (null = absent): the compare-and-swap guarding manifest updates
   * Resolves only after the transaction completed; a QuotaExceededError rejects and nothing of the batch is written.
   */
  async function apply(ops, packed) {
    if (typeof ops === "string") ops = unpackOps(ops, packed);
    const db = await open();
    // Audit appends touch only outbox+meta: they must not hold up a search reading "records".
    const recordsToo = ops.some((op) => op[0] === "putRecord" || op[0] === "deleteRecord" || op[0] === "clearRecords" || op[0] === "checkRow");
    const tx = db.transaction(recordsToo ? ["records", "outbox", "meta"] : ["outbox", "meta"], "readwrite", { durability: "strict" });
    const finished = done(tx);
    const records = recordsToo ? tx.objectStore("records") : null;
    const outbox = tx.objectStore("outbox");
    const meta = tx.objectStore("meta");
    // Ops must apply in order even though the IDB calls are async: chain them on one promise.
    let chain = Promise.resolve();
    let nextN = null;
    const seqN = async () => {
      if (nextN === null) {
        const cur = await req(outbox.index("n").openCursor(null, "prev"));
        nextN = cur ? cur.value.n + 1 : 1;
      }
      return nextN++;
    };
    for (const op of ops) {
      chain = chain.then(async () => {
        switch (op[0]) {
          case "putRecord": {
            const [, t, i, v, blob, base, tokens, mac] = op;
            let tok = tokens;
            if (tok == null) {
              const old = await req(records.get([t, i]));
              tok = old ? old.tok : [];
            }
            // Requests in one transaction run in order, and a failed put aborts the transaction (so apply()
            // rejects and nothing of the batch is written): no need to wait for each put before the next op.
            const put = req(records.put({ t, i, v, blob, base: base ?? null, tok: Array.from(new Set(tok)), mac: mac ?? null }));
            if (tokens == null) await put; else put.catch(() => {});
            break;
          }
          case "deleteRecord":
            await req(records.delete([op[1], op[2]]));
            break;
          case "clearRecords": {
            const keep = new Set(op[1].map(([t, i]) => t + "\u0000" + i));
            const keys = await req(records.getAllKeys());
            for (const [t, i] of keys) if (!keep.has(t + "\u0000" + i)) records.delete([t, i]);
            break;
          }
          case "putOutbox": {
            const old = await req(outbox.get(op[1]));
            const n = old ? old.n : await seqN();
            await req(outbox.put({ id: op[1], n, blob: op[2], mac: op[3] ?? null }));
            break;
          }
          case "checkRow": {
            const row = await req(records.get([op[1], op[2]]));
            const stored = row ? (row.mac ?? "") : null;
            if (stored !== (op[3] ?? null)) throw new Error("omnicare-stale-row " + op[1]);
            break;
          }
          case "deleteOutbox":
            await req(outbox.delete(op[1]));
            break;
          case "putAudit": {
            // Sequence and append in the same transaction: tabs never share or skip a number.
            const cur = await req(meta.get("audit.next"));
            const aseq = cur ? Number(cur.v) : 1;
            await req(outbox.put({ id: op[1], n: await seqN(), blob: op[2], aseq }));
            await req(meta.put({ k: "audit.next", v: String(aseq + 1) }));
            break;
          }
          case "putMeta":
            if (op[2] == null) await req(meta.delete(op[1]));
            else await req(meta.put({ k: op[1], v: op[2] }));
            break;
          default:
            throw new Error("unknown store op " + op[0]);
        }
      });
    }
    try {
      await chain;
    } catch (err) {
      try { tx.abort(); } catch { /* already finished */ }
      await finished.catch(() => {});
      throw err;
    }
    await finished;
  }

  /** Raw dump for tests and diagnostics (what a thief with the disk would see). */
  async function rawDump() {
    const db = await open();
    const tx = db.transaction(["records", "outbox", "meta"]);
    const [r, o, m] = await Promise.all([
      req(tx.objectStore("records").getAll()),
      req(tx.objectStore("outbox").getAll()),
      req(tx.objectStore("meta").getAll()),
    ]);
    return { records: r, outbox: o, meta: m };
  }

  /** Sign-out: remove the whole database (keys, records, outbox). */
  async function wipe() {
    if (dbPromise) {
      (await dbPromise.catch(() => null))?.close();
      dbPromise = null;
    }
    await new Promise((resolve, reject) => {
      const r = indexedDB.deleteDatabase(name);
      r.onsuccess = () => resolve();
      r.onerror = () => reject(r.error);
      r.onblocked = () => resolve(); // other tabs are told via versionchange and close
    });
  }
  return { open, getRowMeta, listHeld, listHeldPage, listIds, getRecord, getRecords, listRecords, countRecords, lookupToken, outboxGet, outboxList, outboxCount, auditList, auditCount, metaGet, metaGetMany, metaCas, apply, rawDump, wipe };
}

const main = makeIdb(DB_NAME);
export const { open, getRowMeta, listHeld, listHeldPage, listIds, getRecord, getRecords, listRecords, countRecords, lookupToken, outboxGet, outboxList, outboxCount, auditList, auditCount, metaGet, metaGetMany, metaCas, apply, rawDump, wipe } = main;
