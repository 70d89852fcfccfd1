# Executed by tests/pyodide/run_pytest.mjs with top-level await (pyodide.runPythonAsync)
# BEFORE pytest starts, because the WebCrypto backend is async and pytest is not.
# It runs the browser's crypto adapter (pyclient.adapters.webcrypto over the app's own
# pwa/app/crypto.js, registered by the runner as `omnicare_crypto_js`: the code the app
# runs) against tests/pyclient/vectors/*.json and stores what it observed in the module
# `_webcrypto_results`; tests/pyclient/test_envelope.py asserts on it. Nothing is
# asserted here: a crash is recorded as results["error"].
import json
import os
import sys
import traceback
import types
from pathlib import Path


async def _collect() -> dict:
    import omnicare_crypto_js

    from pyclient import envelope, keys
    from pyclient.adapters import webcrypto as wc
    from pyclient.compress import decode_record, encode_record

    cipher = wc.JsCipher(omnicare_crypto_js)

    vec_dir = Path("/tests/pyclient/vectors")
    ev = json.loads((vec_dir / "envelope_v1.json").read_text(encoding="utf-8"))
    kv = json.loads((vec_dir / "keyring_v1.json").read_text(encoding="utf-8"))
    res: dict = {}

    # -- envelope vectors: seal with fixed nonces, open, negatives
    ids = list(ev["keys"])
    ring = keys.Keyring(
        tuple(
            keys.KeyEntry(
                keys.KeyKind.DATA,
                kid,
                keys.KeyStatus.ACTIVE if i == 0 else keys.KeyStatus.RETIRED,
                bytes.fromhex(ev["keys"][kid]),
            )
            for i, kid in enumerate(ids)
        )
    )

    persisted = []

    stored = [None]

    async def persist(expected, state):  # compare-and-swap, as the IndexedDB store does
        stored[0] = keys.compare_and_swap(stored[0], expected=expected, new=state)
        persisted.append(state)

    crypto = await wc.WebCrypto.create(
        cipher, keyring=ring, state=keys.KeyState(ids[0], b"\x00\x00\x00\x09"), persist_state=persist
    )
    jobs = [
        envelope.seal_plan(
            key_id=c["key_id"],
            nonce=bytes.fromhex(c["nonce"]),
            resource_type=c["resource_type"],
            resource_id=c["resource_id"],
            version=int(c["version"]),
            plaintext=bytes.fromhex(c["plaintext"]),
        )
        for c in ev["cases"]
    ]
    res["sealed"] = [b.hex() for b in await crypto.seal_jobs(jobs)]
    refs = [envelope.RecordRef(c["resource_type"], c["resource_id"], int(c["version"])) for c in ev["cases"]]
    opened = await crypto.open_blobs(
        [(r, bytes.fromhex(c["envelope"])) for r, c in zip(refs, ev["cases"], strict=True)]
    )
    res["opened"] = [o.hex() if isinstance(o, bytes) else type(o).__name__ for o in opened]
    neg = await crypto.open_blobs(
        [
            (
                envelope.RecordRef(n["resource_type"], n["resource_id"], int(n["version"])),
                bytes.fromhex(n["envelope"]),
            )
            for n in ev["negative"]
        ]
    )
    res["negative"] = [type(o).__name__ if isinstance(o, Exception) else "opened" for o in neg]
    # compression output of this zlib build (DEFLATE bytes may differ between zlib builds; reading must not)
    res["compressed_patient"] = encode_record(ev["records"]["patient"]).hex()

    # -- full pipeline, batched as BrowserApp._seal / _open run it: reserve, seal, open; one JS call each
    recs = [dict(ev["records"]["observation"], id=f"obs-{i}") for i in range(50)]
    refs50 = [envelope.RecordRef.of(r) for r in recs]
    blobs = await crypto.seal(
        [(f.resource_type, f.resource_id, f.version, encode_record(r)) for f, r in zip(refs50, recs, strict=True)]
    )
    back = await crypto.open_blobs(list(zip(refs50, blobs, strict=True)))
    res["pipeline_roundtrip"] = [decode_record(b) for b in back] == recs
    res["pipeline_nonces_unique"] = len({envelope.parse(b).nonce for b in blobs}) == len(blobs)
    res["pipeline_persisted_before_use"] = [s.next_counter for s in persisted]
    moved = await crypto.open_blobs([(envelope.RecordRef("Observation", "obs-1", 1), blobs[0])])
    res["pipeline_moved"] = type(moved[0]).__name__

    # -- envelope v2 (issue 17): per-block HKDF keys, imported as non-extractable CryptoKeys
    ev2 = json.loads((vec_dir / "envelope_v2.json").read_text(encoding="utf-8"))
    jobs2 = [
        envelope.seal_plan(
            key_id=c["key_id"], nonce=bytes.fromhex(c["nonce"]), resource_type=c["resource_type"],
            resource_id=c["resource_id"], version=int(c["version"]), plaintext=bytes.fromhex(c["plaintext"]),
            salt=bytes.fromhex(c["salt"]),
        )
        for c in ev2["cases"]
    ]
    res["v2_sealed"] = [b.hex() for b in await crypto.seal_jobs(jobs2)]
    opened2 = await crypto.open_blobs(
        [(envelope.RecordRef(c["resource_type"], c["resource_id"], int(c["version"])), bytes.fromhex(c["envelope"]))
         for c in ev2["cases"]]
    )
    res["v2_opened"] = [o.hex() if isinstance(o, bytes) else type(o).__name__ for o in opened2]
    res["v2_pipeline"] = sorted({envelope.parse(b).format_version for b in blobs})

    # -- keyring vectors: PBKDF2 via deriveKey (the KEK never leaves WebCrypto), wrap, unwrap, wrong PIN
    params = keys.KdfParams(salt=bytes.fromhex(kv["salt"]), iterations=kv["iterations"])
    kek = await cipher.derive_kek(keys.pin_bytes(kv["pin"]), params)
    res["kek_extractable"] = bool(kek.extractable)
    entries = tuple(
        keys.KeyEntry(
            keys.KeyKind(e["kind"]), e["key_id"], keys.KeyStatus(e["status"]), bytes.fromhex(e["key"])
        )
        for e in kv["entries"]
    )
    blob = await keys.keyring_wrap(
        cipher,
        pin=kv["pin"],
        keyring=keys.Keyring(entries),
        salt=params.salt,
        nonces=[bytes.fromhex(n) for n in kv["nonces"]],
        iterations=params.iterations,
    )
    res["keyring_blob"] = blob.hex()
    unlocked = await keys.keyring_unlock(cipher, pin=kv["pin"], blob=bytes.fromhex(kv["blob"]))
    res["keyring_keys"] = [e.key.hex() for e in unlocked.entries]
    try:
        await keys.keyring_unlock(cipher, pin=kv["wrong_pin"], blob=bytes.fromhex(kv["blob"]))
        res["wrong_pin"] = "unlocked?!"
    except keys.WrongPin:
        res["wrong_pin"] = "WrongPin"
    res["random_len"] = len(os.urandom(16))  # the app's CSPRNG (crypto.getRandomValues under Pyodide)
    return res


try:
    _results = await _collect()  # noqa: F704 - top-level await: runPythonAsync
except BaseException:  # record, never crash the runner: the pytest test reports it
    _results = {"error": traceback.format_exc()}

_mod = types.ModuleType("_webcrypto_results")
_mod.results = _results
sys.modules["_webcrypto_results"] = _mod
