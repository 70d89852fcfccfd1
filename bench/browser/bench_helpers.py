"""Timed helpers that run INSIDE Pyodide in Chromium, against the PWA's own BrowserApp (``APP``).

Loaded by ``app-bench.js`` next to the pyclient wheel. Each helper takes and returns a JSON string so
one call crosses the JS/Python boundary once. Nothing here re-implements app logic: sealing, opening,
storing and searching all go through ``pyclient.adapters.browser_app.BrowserApp``.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from pyclient.compress import canonical_json, encode_record
from pyclient.sync import RecordPut

APP: Any = None  # set by app-bench.js

_TYPES = (
    "Observation",
    "Condition",
    "MedicationRequest",
    "Encounter",
    "Patient",
    "AllergyIntolerance",
    "DocumentReference",
    "Procedure",
    "Immunization",
    "CareTeam",
)


async def _sample(n: int) -> list[tuple[str, str, int, dict[str, Any]]]:
    """``n`` real records from the local store, decrypted: evenly spaced over every stored record of the
    common types, so the mix of resource types (and sizes) is the store's own."""
    rows = []
    for t in _TYPES:
        rows += await APP.store.list_records(t)
    step = max(1, len(rows) // max(1, n))
    rows = rows[::step][:n]
    opened = await APP._open([(r.resource_type, r.id, r.version, r.blob) for r in rows])
    return [(r.resource_type, r.id, r.version, o) for r, o in zip(rows, opened, strict=True) if o is not None]


async def crypto(args_json: str) -> str:
    """Seal (compress + AES-GCM) then open (decrypt + inflate) ``n`` real records, one WebCrypto batch each.

    Returns per-round ms/resource for seal, open and both, plus the stored vs raw JSON byte sizes.
    """
    args = json.loads(args_json)
    n, rounds = int(args.get("n", 1000)), int(args.get("rounds", 5))
    items = await _sample(n)
    both, seal, opn = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        blobs = await APP._seal(items)
        t1 = time.perf_counter()
        back = await APP._open([(t, i, v, b) for (t, i, v, _), b in zip(items, blobs, strict=True)])
        t2 = time.perf_counter()
        assert all(b is not None for b in back), "a sealed record did not open"
        seal.append((t1 - t0) * 1000 / len(items))
        opn.append((t2 - t1) * 1000 / len(items))
        both.append((t2 - t0) * 1000 / len(items))
    raw = sum(len(canonical_json(r)) for *_, r in items)
    sealed = sum(len(b) for b in blobs)
    compressed = sum(len(encode_record(r)) for *_, r in items)
    return json.dumps(
        {
            "n": len(items),
            "ms_both": both,
            "ms_seal": seal,
            "ms_open": opn,
            "raw_json_bytes": raw,
            "sealed_bytes": sealed,
            "compressed_bytes": compressed,
        }
    )


async def queries(args_json: str) -> str:
    """A deterministic query mix from the local patients: name prefixes, full family names, MRNs, birth dates."""
    args = json.loads(args_json)
    want = int(args.get("n", 100))
    patients = await APP.patients()
    step = max(1, len(patients) // max(1, want // 4))
    out: list[str] = []
    for k, p in enumerate(patients[::step]):
        fam, given = str(p.get("family") or ""), str(p.get("given") or "")
        for q in (
            fam[:3],
            f"{given.split(' ')[0][:4]} {fam[:2]}" if given else fam,
            p.get("mrn"),
            p.get("birthDate"),
        ):
            if q and len(str(q).strip()) >= 2:
                out.append(str(q))
        if k > want:
            break
    return json.dumps({"patients": len(patients), "queries": out[:want]})


async def synth(args_json: str) -> str:
    """Grow the encrypted store to ``target`` records with more deterministic demo patients (another seed).

    Same code path as a pull page: BrowserApp._commit seals every record in one WebCrypto batch and writes
    records + blind-index tokens in one IndexedDB transaction per batch.
    """
    from omnicare_bench_demo import REFERENCE_DATE, demo_patient_resources, demo_practitioners  # noqa: PLC0415

    args = json.loads(args_json)
    target, seed, batch = int(args["target"]), int(args.get("seed", 2)), int(args.get("batch", 500))
    start = int(await APP._idb.countRecords())
    practitioners = demo_practitioners(seed=seed)
    t0 = time.perf_counter()
    have, index, pending = start, 0, []
    while have < target and index < 100_000:
        for r in demo_patient_resources(
            seed=seed, index=index, today=REFERENCE_DATE, practitioners=practitioners
        ):
            if have + len(pending) >= target:
                break
            if r["resourceType"] == "Patient":  # demo MRNs are per-index: keep them unique across seeds
                for ident in r.get("identifier") or []:
                    if str(ident.get("value", "")).startswith("MRN-"):
                        ident["value"] = f"MRN-{seed}{index:05d}"
            pending.append(RecordPut(r["resourceType"], r["id"], 1, r))
        index += 1
        if len(pending) >= batch or have + len(pending) >= target:
            await APP._commit(pending)
            have += len(pending)
            pending = []
    seconds = time.perf_counter() - t0
    # The generator's garbage is the harness's, not the app's: collect it so the searches that follow
    # are not charged for a full cyclic-GC pass over it.
    gc.collect()
    return json.dumps(
        {
            "seconds": seconds,
            "from": start,
            "records": int(await APP._idb.countRecords()),
            "patients_added": index,
        }
    )


async def ping(args_json: str) -> str:
    return json.dumps("pong")


async def profile_sync(args_json: str) -> str:
    """cProfile of one first sync (Python CPU only: time spent awaiting JS promises is not attributed)."""
    import cProfile  # noqa: PLC0415
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    args = json.loads(args_json)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    await APP.sync_once(first=True)
    prof.disable()
    wall = time.perf_counter() - t0
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(args.get("sort", "tottime")).print_stats(int(args.get("top", 40)))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    return json.dumps({"wall_s": wall, "python_tottime_s": total, "report": buf.getvalue()})


async def set_pull_limit(args_json: str) -> str:
    """Experiment knob (not used for the reported figure): the page size the sync machine asks for."""
    APP.machine.pull_limit = int(json.loads(args_json)["limit"])
    return json.dumps(APP.machine.pull_limit)


async def exec(args_json: str) -> str:  # noqa: A001 - experiments only (bench/experiments/)
    """Run a snippet in this module's namespace (experiment variants patch the app object this way)."""
    import builtins  # noqa: PLC0415

    builtins.exec(json.loads(args_json)["code"], globals())  # noqa: S102 - harness-only, code from bench/experiments
    return json.dumps(True)


async def profile_search(args_json: str) -> str:
    """cProfile of ``rounds`` passes over ``queries`` through BrowserApp.search, with the wall time per query."""
    import cProfile  # noqa: PLC0415
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    args = json.loads(args_json)
    queries, rounds = list(args["queries"]), int(args.get("rounds", 3))
    prof = cProfile.Profile()
    walls = []
    prof.enable()
    for _ in range(rounds):
        for q in queries:
            t0 = time.perf_counter()
            await APP.search(q)
            walls.append((time.perf_counter() - t0) * 1000)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats(args.get("sort", "tottime")).print_stats(int(args.get("top", 30)))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    walls.sort()
    return json.dumps(
        {
            "searches": len(walls),
            "wall_ms_total": sum(walls),
            "python_ms_total": total * 1000,
            "p50": walls[len(walls) // 2],
            "p95": walls[int(0.95 * (len(walls) - 1))],
            "report": buf.getvalue(),
        }
    )


async def integrity(args_json: str) -> str:
    """Issue 17: store integrity checks on or off (what bench/integrity_bench.py measures; default on)."""
    return json.dumps(APP.bench_integrity(bool(json.loads(args_json)["on"])))


async def integrity_time(args_json: str) -> str:
    """Seconds spent inside the integrity checks since the last reset (``{"reset": true}`` zeroes it)."""
    spent = APP.integrity_s
    if json.loads(args_json).get("reset"):
        APP.integrity_s = 0.0
    return json.dumps(spent)
