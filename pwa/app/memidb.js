// Online only (issue 13 item 4): the same store interface as idb.js, held in this tab's memory and nowhere
// else. Python seals rows exactly as for IndexedDB; here they live in Maps that `wipe` (lock, sign-out) drops.
// Nothing is written at rest: no IndexedDB, no Cache Storage, no web storage.

import { unpackOps } from "./idb.js";

/** A store with idb.js's functions (see its header for the row layout and op list). */
export function makeMemIdb() {
  let records = new Map(); // "t\0i" -> row
  let outbox = new Map(); // id -> row
  let meta = new Map(); // k -> v
  let nextN = 1;
  const key = (t, i) => t + "\u0000" + i;
  const rec = (row) => (row ? [row.t, row.i, row.v, row.blob, row.base ?? null, row.tok ?? [], row.mac ?? null] : null);
  const byKey = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

  async function open() { return true; }
  async function getRowMeta(keys) {
    return keys.map(([t, i]) => { const r = records.get(key(t, i)); return r ? [r.v, r.tok ?? [], r.mac ?? null] : null; });
  }
  async function listHeld() {
    return [...records.values()].filter((r) => r.t !== "StoreManifest").map((r) => [r.t, r.i, r.v]);
  }
  async function listHeldPage(after, limit) {
    const rows = [...records.values()].map((r) => [r.t, r.i, r.v]).sort(byKey).filter((r) => !after || byKey(r, after) > 0);
    const page = rows.slice(0, limit);
    return [page.filter((r) => r[0] !== "StoreManifest"), page.length < limit ? null : page[page.length - 1].slice(0, 2)];
  }
  async function listIds(t) { return [...records.values()].filter((r) => r.t === t).map((r) => r.i).sort(); }
  async function getRecord(t, i) { return rec(records.get(key(t, i))); }
  async function getRecords(keys) { return keys.map(([t, i]) => rec(records.get(key(t, i)))); }
  async function listRecords(t) {
    return [...records.values()].filter((r) => r.t === t).sort((a, b) => (a.i < b.i ? -1 : a.i > b.i ? 1 : 0)).map(rec);
  }
  async function countRecords() { return records.size; }
  async function lookupToken(token, t) {
    const out = [];
    for (const r of records.values()) if ((t == null || r.t === t) && r.tok && r.tok.includes(token)) out.push([r.t, r.i]);
    return out.sort(byKey);
  }
  async function outboxGet(id) { const r = outbox.get(id); return r ? r.blob : null; }
  const inOrder = () => [...outbox.values()].sort((a, b) => a.n - b.n);
  async function outboxList() { return inOrder().filter((r) => r.aseq == null).map((r) => [r.id, r.blob, r.mac ?? null]); }
  async function outboxCount() { return [...outbox.keys()].filter((k) => !String(k).startsWith("audit:")).length; }
  async function auditList(limit = 500) {
    return [...outbox.values()].filter((r) => r.aseq != null).sort((a, b) => a.aseq - b.aseq).slice(0, limit).map((r) => [r.id, r.aseq, r.blob]);
  }
  async function auditCount() { return [...outbox.values()].filter((r) => r.aseq != null).length; }
  async function metaCas(k, expected, next) {
    const stored = meta.has(k) ? meta.get(k) : null;
    if (stored !== expected) return [false, stored];
    meta.set(k, next);
    return [true, null];
  }
  async function metaGet(k) { return meta.has(k) ? meta.get(k) : null; }
  async function metaGetMany(keys) { return keys.map((k) => (meta.has(k) ? meta.get(k) : null)); }

  /** All or nothing, like the IndexedDB transaction: ops run on copies that replace the maps at the end. */
  async function apply(ops, packed) {
    if (typeof ops === "string") ops = unpackOps(ops, packed);
    const r = new Map(records), o = new Map(outbox), m = new Map(meta);
    let n = nextN;
    for (const op of ops) {
      switch (op[0]) {
        case "putRecord": {
          const [, t, i, v, blob, base, tokens, mac] = op;
          const old = r.get(key(t, i));
          const tok = tokens == null ? (old ? old.tok : []) : Array.from(new Set(tokens));
          r.set(key(t, i), { t, i, v, blob, base: base ?? null, tok, mac: mac ?? null });
          break;
        }
        case "deleteRecord": r.delete(key(op[1], op[2])); break;
        case "clearRecords": {
          const keep = new Set(op[1].map(([t, i]) => key(t, i)));
          for (const k of [...r.keys()]) if (!keep.has(k)) r.delete(k);
          break;
        }
        case "putOutbox": {
          const old = o.get(op[1]);
          o.set(op[1], { id: op[1], n: old ? old.n : n++, blob: op[2], mac: op[3] ?? null });
          break;
        }
        case "checkRow": {
          const row = r.get(key(op[1], op[2]));
          const stored = row ? (row.mac ?? "") : null;
          if (stored !== (op[3] ?? null)) throw new Error("omnicare-stale-row " + op[1]);
          break;
        }
        case "deleteOutbox": o.delete(op[1]); break;
        case "putAudit": {
          const aseq = m.has("audit.next") ? Number(m.get("audit.next")) : 1;
          o.set(op[1], { id: op[1], n: n++, blob: op[2], aseq });
          m.set("audit.next", String(aseq + 1));
          break;
        }
        case "putMeta":
          if (op[2] == null) m.delete(op[1]); else m.set(op[1], op[2]);
          break;
        default:
          throw new Error("unknown store op " + op[0]);
      }
    }
    records = r; outbox = o; meta = m; nextN = n;
  }
  async function rawDump() {
    return { records: [...records.values()], outbox: [...outbox.values()], meta: [...meta].map(([k, v]) => ({ k, v })) };
  }
  /** Lock and sign-out: everything goes (online only keeps nothing past a lock). */
  async function wipe() { records = new Map(); outbox = new Map(); meta = new Map(); nextN = 1; }
  return { open, getRowMeta, listHeld, listHeldPage, listIds, getRecord, getRecords, listRecords, countRecords, lookupToken, outboxGet, outboxList, outboxCount, auditList, auditCount, metaCas, metaGet, metaGetMany, apply, rawDump, wipe, memory: true };
}

/**
 * The store Python is given: forwards to IndexedDB until the app switches to online only, then to memory.
 * `onQuota` hears a QuotaExceededError on a write (the condition "quota-exhausted").
 */
export function makeSwitchableStore(idb, { onQuota } = {}) {
  let target = idb;
  const store = {
    switchToMemory() { target = makeMemIdb(); },
    get memory() { return !!target.memory; },
    /** Back to IndexedDB (the condition cleared, the user accepted): returns the memory store, to restore or wipe. */
    switchToDevice() { const mem = target; target = idb; return mem; },
    restore(mem) { target = mem; },
  };
  for (const name of Object.keys(idb)) {
    if (typeof idb[name] !== "function") continue;
    store[name] = async (...args) => {
      try { return await target[name](...args); } catch (err) {
        if (name === "apply" && !target.memory && /quota/i.test(String(err?.name) + String(err?.message))) onQuota?.(err);
        throw err;
      }
    };
  }
  return store;
}
