"""Regenerate the JSON test vectors (run once; the committed JSON is the contract).

    .venv/bin/python tests/pyclient/vectors/make_vectors.py

Everything is fixed (keys, nonces, salt, PIN), so re-running must reproduce the
committed files byte for byte; if it does not, the wire format changed and that
needs a new format version, not new vectors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from pyclient import blindindex, envelope, keys  # noqa: E402
from pyclient.adapters import cpython_crypto as cc  # noqa: E402
from pyclient.compress import encode_record  # noqa: E402

DATA_KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
INDEX_ROOT = bytes.fromhex("0b" * 32)

PATIENT = {
    "resourceType": "Patient",
    "id": "9f1c2d3e-0000-4000-8000-00000000a001",
    "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:15:00+00:00"},
    "identifier": [
        {
            "system": "urn:oid:2.16.840.1.113883.19.5",
            "value": "MRN-48 213-7",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
        },
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
    ],
    "name": [{"use": "official", "family": "O'Brien-Núñez", "given": ["Zoë", "Li"]}],
    "gender": "female",
    "birthDate": "1980-05-17",
    "address": [{"line": ["12 Main St"], "city": "Boston", "state": "MA", "postalCode": "02115"}],
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "obs-hr-1",
    "meta": {"versionId": "1"},
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
    "subject": {"reference": "Patient/9f1c2d3e-0000-4000-8000-00000000a001"},
    "effectiveDateTime": "2026-11-20T10:20:00+00:00",
    "valueQuantity": {
        "value": 72,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    },
}


def envelope_vectors() -> dict[str, object]:
    ring = keys.new_keyring(data_key_id="dk-2026-11-a", data_key=DATA_KEY).rotated(
        new_key_id="dk-2026-11-b", new_key=OLD_KEY
    )
    # note: after rotated(), dk-2026-11-b is active and dk-2026-11-a retired; both seal vectors
    cases = []
    specs = [
        ("short-plaintext", "dk-2026-11-a", "000000010000000000000000", "Patient", "p1", 1, b'{"a":1}'),
        ("empty-plaintext", "dk-2026-11-b", "a1b2c3d40000000000000007", "Observation", "o-1", 0, b""),
        (
            "unicode-id-big-version",
            "dk-2026-11-b",
            "a1b2c3d400000000ffffffff",
            "Patient",
            "é-ü-1",
            2**64 - 1,
            "naïve – ✓".encode(),
        ),
        (
            "patient-record-compressed",
            "dk-2026-11-a",
            "0102030400000000000000ff",
            "Patient",
            PATIENT["id"],
            3,
            encode_record(PATIENT),
        ),
        (
            "observation-record-compressed",
            "dk-2026-11-b",
            "a1b2c3d40000000000000100",
            "Observation",
            "obs-hr-1",
            1,
            encode_record(OBSERVATION),
        ),
    ]
    for name, kid, nonce_hex, rtype, rid, version, pt in specs:
        job = envelope.seal_plan(
            key_id=kid,
            nonce=bytes.fromhex(nonce_hex),
            resource_type=rtype,
            resource_id=rid,
            version=version,
            plaintext=pt,
        )
        blob = cc.seal_jobs(ring, [job])[0]
        cases.append(
            {
                "name": name,
                "key_id": kid,
                "nonce": nonce_hex,
                "resource_type": rtype,
                "resource_id": rid,
                "version": str(version),
                "plaintext": pt.hex(),
                "aad": job.aad.hex(),
                "envelope": blob.hex(),
            }
        )
    moved = cases[3]
    negatives = [
        {
            "name": "moved-to-other-patient",
            "envelope": moved["envelope"],
            "resource_type": "Patient",
            "resource_id": "someone-else",
            "version": "3",
            "error": "AuthenticationFailed",
        },
        {
            "name": "replayed-as-other-version",
            "envelope": moved["envelope"],
            "resource_type": "Patient",
            "resource_id": PATIENT["id"],
            "version": "4",
            "error": "AuthenticationFailed",
        },
        {
            "name": "unknown-key-id",
            "envelope": moved["envelope"].replace(b"dk-2026-11-a".hex(), b"dk-2026-11-z".hex()),
            "resource_type": "Patient",
            "resource_id": PATIENT["id"],
            "version": "3",
            "error": "UnknownKeyId",
        },
        {
            "name": "bad-format-version",
            "envelope": "4f45ff" + moved["envelope"][6:],  # 0x02 is v2 since issue 17
            "resource_type": "Patient",
            "resource_id": PATIENT["id"],
            "version": "3",
            "error": "MalformedEnvelope",
        },
    ]
    return {
        "description": "OmniCare envelope v1 (AES-256-GCM); see pyclient/PROTOCOL.md. Hex strings; versions as decimal strings.",
        "keys": {"dk-2026-11-a": DATA_KEY.hex(), "dk-2026-11-b": OLD_KEY.hex()},
        "cases": cases,
        "negative": negatives,
        "records": {"patient": PATIENT, "observation": OBSERVATION},
    }


def keyring_vectors() -> dict[str, object]:
    ring = keys.new_keyring(
        data_key_id="dk-2026-11-a", data_key=DATA_KEY, index_key_id="bi-1", index_root_key=INDEX_ROOT
    )
    salt = bytes.fromhex("5a17" * 8)
    nonces = [bytes.fromhex("0c" * 12), bytes.fromhex("0d" * 12)]
    pin = "4812-Straße"
    blob = cc.wrap_keyring(pin=pin, keyring=ring, salt=salt, nonces=nonces)
    kek = cc.derive_kek(pin, keys.KdfParams(salt=salt))
    return {
        "description": "OmniCare keyring v1: PBKDF2-HMAC-SHA256 600000 iterations + AES-256-GCM per entry.",
        "pin": pin,
        "wrong_pin": "4812-strasse",
        "salt": salt.hex(),
        "iterations": keys.MIN_PBKDF2_ITERATIONS,
        "kek": kek.hex(),
        "nonces": [n.hex() for n in nonces],
        "entries": [
            {"kind": int(e.kind), "key_id": e.key_id, "status": int(e.status), "key": e.key.hex()}
            for e in ring.entries
        ],
        "blob": blob.hex(),
    }


def blindindex_vectors() -> dict[str, object]:
    ik = blindindex.IndexKeys.derive(INDEX_ROOT)
    queries = [
        ("name", "zoe"),
        ("name", "O'BRIEN"),
        ("name", "nunez zo"),
        ("name", "li"),
        ("identifier", "mrn 48213-7"),
        ("birthdate", "1980"),
        ("birthdate", "1980-05"),
        ("birthdate", "1980-05-17"),
        ("identifier", "123-45-6789"),
    ]
    return {
        "description": "Blind-index tokens for a fixed root key; per-index keys via HKDF-SHA256.",
        "root_key": INDEX_ROOT.hex(),
        "index_keys": {k: ik.for_kind(k).hex() for k in blindindex.KINDS},
        "patient": PATIENT,
        "patient_tokens": blindindex.tokens_for_patient(ik, PATIENT),
        "queries": [
            {
                "kind": k,
                "text": t,
                "tokens": blindindex.tokens_for_query(ik, k, t),
                "matches": blindindex.matches(PATIENT, k, t),
            }
            for k, t in queries
        ],
    }


def envelope_v2_vectors() -> dict[str, object]:
    """Envelope v2: a 16-byte block salt in the header; AES key = HKDF-SHA256(data key, salt)."""
    ring = keys.new_keyring(data_key_id="dk-2026-11-a", data_key=DATA_KEY).rotated(
        new_key_id="dk-2026-11-b", new_key=OLD_KEY
    )
    specs = [
        ("v2-short", "dk-2026-11-a", "5a" * 16, "000000010000000000000000", "Patient", "p1", 1, b'{"a":1}'),
        ("v2-same-counter-other-salt", "dk-2026-11-a", "a5" * 16, "000000010000000000000000", "Patient", "p1", 1,
         b'{"a":1}'),
        ("v2-observation-compressed", "dk-2026-11-b", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "a1b2c3d40000000000000100",
         "Observation", "obs-hr-1", 1, encode_record(OBSERVATION)),
    ]
    cases = []
    for name, kid, salt_hex, nonce_hex, rtype, rid, version, pt in specs:
        salt = bytes.fromhex(salt_hex)
        job = envelope.seal_plan(key_id=kid, nonce=bytes.fromhex(nonce_hex), resource_type=rtype, resource_id=rid,
                                 version=version, plaintext=pt, salt=salt)
        blob = cc.seal_jobs(ring, [job])[0]
        cases.append({
            "name": name, "key_id": kid, "salt": salt_hex, "nonce": nonce_hex, "resource_type": rtype,
            "resource_id": rid, "version": str(version), "plaintext": pt.hex(),
            "subkey": envelope.subkey(ring.data_key(kid), salt).hex(), "aad": job.aad.hex(), "envelope": blob.hex(),
        })
    return {
        "description": "OmniCare envelope v2 (AES-256-GCM under HKDF-SHA256(data key, block salt)); "
                       "see pyclient/PROTOCOL.md 2.2. Hex strings; versions as decimal strings.",
        "keys": {"dk-2026-11-a": DATA_KEY.hex(), "dk-2026-11-b": OLD_KEY.hex()},
        "cases": cases,
    }


def main() -> None:
    for name, data in (
        ("envelope_v1.json", envelope_vectors()),
        ("envelope_v2.json", envelope_v2_vectors()),
        ("keyring_v1.json", keyring_vectors()),
        ("blindindex_v1.json", blindindex_vectors()),
    ):
        (HERE / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
