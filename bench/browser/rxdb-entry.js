// RxDB peer for `make bench` (bundled by esbuild from bench/node_modules into bench/out/rxdb.bundle.js; nothing
// is fetched at run time). RxDB's free IndexedDB storage is Dexie.js (the native IndexedDB storage is a paid
// plugin); its HTTP replication here is RxDB's own CouchDB protocol plugin against the same pouchdb-server the
// PouchDB runs use: `_changes?include_docs=true&limit=batchSize` pages, each written to Dexie in bulk.
import { createRxDatabase } from "rxdb/plugins/core";
import { getRxStorageDexie } from "rxdb/plugins/storage-dexie";
import { replicateCouchDB } from "rxdb/plugins/replication-couchdb";

// FHIR resources are open-ended JSON: one string primary key (the CouchDB `_id`, "Type/id") and no validator
// plugin, so every field is stored as it comes (what the PouchDB runs store too).
const schema = {
  version: 0,
  primaryKey: "key",
  type: "object",
  properties: { key: { type: "string", maxLength: 200 }, resourceType: { type: "string" } },
  required: ["key"],
};

window.rxdbReplicate = async (dbName, remoteUrl, batchSize) => {
  const db = await createRxDatabase({ name: dbName, storage: getRxStorageDexie(), multiInstance: false });
  await db.addCollections({ resources: { schema } });
  const t0 = performance.now();
  const state = replicateCouchDB({
    replicationIdentifier: "bench-" + dbName,
    collection: db.resources,
    url: remoteUrl,
    live: false,
    waitForLeadership: false,
    pull: { batchSize },
    push: undefined,
  });
  let failure = null;
  state.error$.subscribe((e) => { failure = failure || e; });
  await state.awaitInitialReplication();
  const ms = performance.now() - t0;
  if (failure) throw new Error("RxDB replication: " + (failure.message || failure));
  const docs = await db.resources.count().exec();
  await state.cancel();
  await db.close();
  return { ms, docs };
};
window.rxdbReady = true;
