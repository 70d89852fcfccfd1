"""Integrity of the device store as a whole (pure; PROTOCOL.md section 7).

AES-GCM with the record AAD protects each record's *contents*. This module
protects what sits next to them in plaintext and what is *absent*:

* **Row MAC** -- ``HMAC-SHA256(store key, row fields)`` over every record row's
  plaintext fields (type, id, version, blind-index tokens, SHA-256 of the sealed
  blob and of the sealed base) and every outbox row's (entry id, SHA-256 of the
  blob). Changing a token (re-linking a record to another patient), a version,
  or swapping ``blob``/``base`` breaks it.
* **Manifests** -- sealed lists of what must exist: one per patient
  (``StoreManifest/<patient ref token>``: every record of that patient with its
  version; also the sealed index a chart is opened through, since rows carry no
  shared patient token, only their own sealed owner token) and one for the outbox (``StoreManifest/outbox``: every queued entry
  id with the SHA-256 of its blob). A deleted row, a row restored with its older
  blob+version+MAC, or an older blob of a squashed outbox entry disagrees with
  the manifest. Manifests are records like any other (AES-GCM, AAD bound to
  their generation) and are updated in the same IndexedDB transaction as the
  rows they describe, guarded by a compare-and-swap on the old manifest's MAC.
* **Patient binding** -- every record shown in a chart must be listed in that
  patient's manifest and name that chart's patient (``subject``/``patient``).

What no local check can detect (a consistent rollback of rows *and* their
manifest to an older snapshot) is caught at the next sync by the anti-rollback
exchange (``/api/sync/verify``, PROTOCOL.md 6.5): the server tells the device
which of the versions it holds are stale.

The store key is ``HKDF-SHA256(blind-index root key, "omnicare store integrity v1",
"omnicare/store/v1/row-mac")``: the index root does not rotate with the data key,
so rotation does not force re-MACing every row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pyclient.compress import CODEC_STORED, canonical_json
from pyclient.store import ClearRecords, DeleteOutbox, DeleteRecord, PutOutbox, PutRecord, StoreOp
from pyclient.sync import Effect, RecordDelete, RecordPut

__all__ = [
    "MANIFEST_TYPE",
    "OUTBOX_MANIFEST_ID",
    "Failure",
    "Manifest",
    "OutboxManifest",
    "Reason",
    "RowChange",
    "StoreOpChanges",
    "check_chart",
    "check_outbox",
    "check_rows",
    "outbox_mac",
    "patient_ref",
    "quarantine_from_json",
    "quarantine_notice",
    "quarantine_to_json",
    "quarantined_records",
    "record_mac",
    "ref_tokens",
    "row_changes",
    "row_meta_needed",
    "settled_manifest_failures",
    "store_key",
    "upgrade_tokens",
    "verify_effects",
    "verify_held",
]

MANIFEST_TYPE = "StoreManifest"
OUTBOX_MANIFEST_ID = "outbox"
STORE_SALT = b"omnicare store integrity v1"
STORE_INFO = b"omnicare/store/v1/row-mac"
MAC_HEX = 32  # 128-bit truncated HMAC-SHA256, hex
REF_PREFIX = "p:"
#: Patient manifests are padded to these sizes (powers of two from 512 bytes): the ciphertext length says roughly
#: how many records a patient has (0-7, 8-16, 17-34, ... with ~57-byte entries), never the exact count (PROTOCOL 4.4).
MANIFEST_MIN_BUCKET = 512
#: ``integrity.v`` meta: "1" = rows carried the patient token in plaintext, "2" = owner tokens (PROTOCOL.md 4.5).
STORE_VERSION = "2"

Reason = Literal[
    "unreadable",  # envelope malformed, unknown key, GCM tag failed, does not decompress
    "row-mac",  # plaintext row fields (tokens, version, blob/base) changed
    "wrong-patient",  # decrypted record names another patient than the chart it was found for
    "missing",  # listed in the manifest, absent from the store (deleted, or re-linked away)
    "rolled-back",  # older version than the manifest lists
    "not-in-manifest",  # present but not listed (restored deleted record, or manifest rolled back)
    "manifest",  # the manifest itself fails to open or verify
]

MESSAGES: dict[str, str] = {
    "unreadable": "could not be decrypted",
    "row-mac": "was changed outside OmniCare",
    "wrong-patient": "belongs to another patient",
    "missing": "is missing from this device",
    "rolled-back": "was replaced by an older copy",
    "not-in-manifest": "is not one this device saved",
    "manifest": "the list of this patient's records could not be verified",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """One record (or outbox entry) that failed verification: never shown, quarantined, reported."""

    resource_type: str
    id: str
    reason: Reason
    version: int = 0  # the version the manifest expects (0 = unknown): what to re-download

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": self.resource_type, "id": self.id, "reason": self.reason, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        reason = str(data.get("reason"))
        return cls(str(data["resourceType"]), str(data["id"]),
                   reason if reason in MESSAGES else "unreadable", int(data.get("version") or 0))  # type: ignore[arg-type]


# -- keys and MACs --------------------------------------------------------------------------


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def store_key(index_root: bytes) -> bytes:
    """The row-MAC key, derived from the (non-rotating) blind-index root key."""
    return _hkdf(index_root, salt=STORE_SALT, info=STORE_INFO)


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _digest(blob: bytes | None) -> bytes:
    return b"\x00" * 32 if blob is None else hashlib.sha256(blob).digest()


def record_mac(key: bytes, *, resource_type: str, id: str, version: int, tokens: Iterable[str],
               blob: bytes, base: bytes | None) -> str:
    """MAC of a record row's plaintext fields; tokens are compared as a sorted set."""
    toks = "\n".join(sorted(set(tokens))).encode()
    msg = b"".join((b"rec1", _lp(resource_type.encode()), _lp(id.encode()), struct.pack(">Q", version),
                    _lp(toks), _digest(blob), _digest(base)))
    return hmac.digest(key, msg, "sha256").hex()[:MAC_HEX]  # one-shot C HMAC: ~3x hmac.new under Pyodide


def outbox_mac(key: bytes, *, entry_id: str, blob: bytes) -> str:
    """MAC of an outbox row (its order is the sealed ``seq`` inside the entry)."""
    msg = b"".join((b"obx1", _lp(entry_id.encode()), _digest(blob)))
    return hmac.digest(key, msg, "sha256").hex()[:MAC_HEX]  # one-shot C HMAC: ~3x hmac.new under Pyodide


def mac_ok(expected: str, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(expected, str(stored))


def manifest_bucket(size: int) -> int:
    """The padded plaintext size of a patient manifest of ``size`` bytes: the next power of two >= 512."""
    return max(MANIFEST_MIN_BUCKET, 1 << max(0, size - 1).bit_length())


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """A manifest as a compressed-record plaintext with codec 0x00 (stored, PROTOCOL.md 1.2).

    Manifests are lists of ids that the FHIR dictionary does not help with, and priming the 32 KB
    dictionary costs ~1 ms per record: a first sync rewrites one manifest per patient per page.
    A patient manifest is padded with trailing spaces (JSON allows them; older readers parse it) to
    :func:`manifest_bucket`, so its sealed length does not count the patient's records.
    """
    body = bytes((CODEC_STORED,)) + canonical_json(manifest)
    if "entries" not in manifest:  # the outbox manifest: the outbox rows already show how many there are
        return body
    return body + b" " * (manifest_bucket(len(body)) - len(body))


def blob_digest(blob: bytes) -> str:
    """What the outbox manifest records per entry."""
    return hashlib.sha256(blob).hexdigest()[:MAC_HEX]


# -- patient binding ----------------------------------------------------------------------------


def patient_ref(resource: Mapping[str, Any]) -> str | None:
    """Patient id a record belongs to: itself for a Patient, else its ``subject``/``patient``/``beneficiary``
    reference (an Appointment: the first Patient among its participants)."""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id"))
    refs: list[Any] = [resource.get(k) for k in ("subject", "patient", "beneficiary")]
    if resource.get("resourceType") == "Appointment":  # the patient is one of the participants
        refs += [p.get("actor") for p in resource.get("participant") or [] if isinstance(p, Mapping)]
    for ref in refs:
        if isinstance(ref, Mapping):
            r = str(ref.get("reference") or "")
            if r.startswith("Patient/"):
                return r.split("/", 1)[1]
    return None


def ref_tokens(tokens: Iterable[str]) -> list[str]:
    """The plaintext patient-reference tokens among a row's tokens: store v1 only (read once, to upgrade)."""
    return sorted({t for t in tokens if t.startswith(REF_PREFIX)})


def upgrade_tokens(tokens: Sequence[str], owners: Sequence[str]) -> tuple[str, ...]:
    """A v1 row's tokens in v2: its plaintext patient tokens replaced by ``owners`` (their sealed owner tokens,
    one per :func:`ref_tokens` entry, in that order); the search tokens stay as they are."""
    return (*(t for t in tokens if not t.startswith(REF_PREFIX)), *owners)


# -- manifests ------------------------------------------------------------------------------------


#: The stored version (and AAD version) of a v2 patient manifest row: constant, so the row does not count how
#: often the patient's records were written; the generation is sealed inside (``"g"``).
MANIFEST_ROW_VERSION = 0


@dataclass
class Manifest:
    """Sealed list of one patient's records: (type, id) -> version; ``generation`` counts its rewrites (sealed)."""

    entries: dict[tuple[str, str], int] = field(default_factory=dict)
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": MANIFEST_TYPE, "v": 1, "g": self.generation,
                "entries": [[t, i, v] for (t, i), v in sorted(self.entries.items())]}

    def keys(self) -> list[tuple[str, str]]:
        """The rows a chart of this patient reads, sorted by (type, id) like ``Store.lookup_token``."""
        return sorted(self.entries)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], generation: int) -> Manifest:
        """``generation``: the row version, which was the generation in store v1 (v2 seals it as ``"g"``)."""
        if data.get("resourceType") != MANIFEST_TYPE or data.get("v") != 1:
            raise ValueError("not a store manifest")
        return cls({(str(t), str(i)): int(v) for t, i, v in data.get("entries") or []},
                   int(data.get("g", generation)))


@dataclass
class OutboxManifest:
    """Sealed list of the queued outbox entries: entry id -> blob digest."""

    entries: dict[str, str] = field(default_factory=dict)
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": MANIFEST_TYPE, "v": 1, "outbox": dict(sorted(self.entries.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], generation: int) -> OutboxManifest:
        if data.get("resourceType") != MANIFEST_TYPE or not isinstance(data.get("outbox"), Mapping):
            raise ValueError("not an outbox manifest")
        return cls({str(k): str(v) for k, v in data["outbox"].items()}, generation)


@dataclass(frozen=True, slots=True)
class RowChange:
    """What one commit does to one record row (old and new patient tokens, new version or None = deleted)."""

    resource_type: str
    id: str
    old_refs: tuple[str, ...]
    new_refs: tuple[str, ...]
    new_version: int | None


def plan_manifests(current: Mapping[str, Manifest], changes: Sequence[RowChange]) -> dict[str, Manifest]:
    """New manifests (by patient token) after ``changes``; only the touched ones are returned."""
    out: dict[str, Manifest] = {}

    def get(tok: str) -> Manifest:
        if tok not in out:
            cur = current.get(tok)
            out[tok] = Manifest(dict(cur.entries) if cur else {}, (cur.generation if cur else 0) + 1)
        return out[tok]

    for c in changes:
        key = (c.resource_type, c.id)
        for tok in c.old_refs:
            # Only manifests that exist: an old ref read from an unverified row (a tampered owner token opens
            # to a random value) must not create a manifest.
            if (tok not in c.new_refs or c.new_version is None) and (tok in out or tok in current):
                get(tok).entries.pop(key, None)
        if c.new_version is not None:
            for tok in c.new_refs:
                get(tok).entries[key] = c.new_version
    return out


def plan_outbox_manifest(current: OutboxManifest, puts: Mapping[str, bytes],
                         deletes: Iterable[str]) -> OutboxManifest:
    entries = dict(current.entries)
    for eid in deletes:
        entries.pop(eid, None)
    for eid, blob in puts.items():
        entries[eid] = blob_digest(blob)
    return OutboxManifest(entries, current.generation + 1)


RowKey = tuple[str, str]
#: A row's (version, tokens, mac) without its blob, as the stores' ``row_meta`` returns it.
RowMeta = tuple[int, tuple[str, ...], str | None]


@dataclass(frozen=True, slots=True)
class StoreOpChanges:
    """What a batch of store operations does to the rows the manifests list (input of the two planners)."""

    rows: list[RowChange]  # for :func:`plan_manifests`
    outbox_puts: dict[str, bytes]  # for :func:`plan_outbox_manifest`
    outbox_deletes: list[str]
    cleared: bool  # the batch holds a ClearRecords: every patient manifest starts empty

    def written(self) -> list[RowKey]:
        """The record rows the batch puts, repeats kept (for "seen": a row put, then deleted, may still exist)."""
        return [(c.resource_type, c.id) for c in self.rows if c.new_version is not None]


def _first_clear(ops: Sequence[StoreOp]) -> ClearRecords | None:
    return next((op for op in ops if isinstance(op, ClearRecords)), None)


def row_meta_needed(ops: Sequence[StoreOp], may_hold: Callable[[str, str], bool] | None = None) -> list[RowKey]:
    """The rows whose stored (version, tokens) :func:`row_changes` needs, in the order to read them.

    Every record row ``ops`` puts or deletes (op order, repeats kept) except those ``may_hold`` says certainly
    do not exist (every row of the store went through this tab since a reset), then the rows a ``ClearRecords``
    keeps, sorted. With a ``ClearRecords`` in the batch ``may_hold`` is not asked: it knows the old store.
    """
    keys = [(op.record.resource_type, op.record.id) if isinstance(op, PutRecord) else (op.resource_type, op.id)
            for op in ops if isinstance(op, (PutRecord, DeleteRecord))]
    clear = _first_clear(ops)
    kept = sorted(clear.keep) if clear is not None else []
    if clear is not None:
        may_hold = None
    return [k for k in keys if may_hold is None or may_hold(*k)] + kept


def row_changes(ops: Sequence[StoreOp], metas: Mapping[RowKey, RowMeta | None],
                owner_refs: Callable[[Sequence[str]], tuple[str, ...]]) -> StoreOpChanges:
    """The row and outbox changes of ``ops``, given the stored ``metas`` of :func:`row_meta_needed`'s rows.

    ``owner_refs`` maps a row's tokens to the patient tokens its owner tokens point to. A row's old patient
    tokens are the stored ones, then those of the last put of it in ``ops``; a ``ClearRecords`` lists the rows it
    keeps again (the reset drops every manifest), so after it only those rows have old tokens: any other put is
    a new row, and a kept row put again (or a row put twice) moves from the manifest it was just listed in.
    """
    changes: list[RowChange] = []
    clear = _first_clear(ops)
    kept = sorted(clear.keep) if clear is not None else []
    refs: dict[RowKey, tuple[str, ...]] = {k: owner_refs(m[1]) for k, m in metas.items() if m is not None
                                           and (clear is None or k in clear.keep)}
    for k in kept:
        m = metas.get(k)
        if m is not None:
            changes.append(RowChange(k[0], k[1], (), refs.get(k, ()), m[0]))
    for op in ops:
        if isinstance(op, PutRecord):
            k = (op.record.resource_type, op.record.id)
            new = owner_refs(op.tokens or ())
            # Not "() after a reset": a kept row was listed again above under its stored patient, and a put of
            # it with another patient must take it out of that manifest (else the old chart lists a record
            # that names someone else: a false tampering alarm).
            changes.append(RowChange(k[0], k[1], refs.get(k, ()), new, op.record.version))
            refs[k] = new
        elif isinstance(op, DeleteRecord):
            k = (op.resource_type, op.id)
            changes.append(RowChange(k[0], k[1], refs.pop(k, ()), (), None))
    puts = {op.entry_id: op.blob for op in ops if isinstance(op, PutOutbox)}
    dels = [op.entry_id for op in ops if isinstance(op, DeleteOutbox)]
    return StoreOpChanges(changes, puts, dels, clear is not None)


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowView:
    """A stored row as the verifier sees it: ``mac_ok`` already checked, ``resource`` None if it did not open."""

    resource_type: str
    id: str
    version: int
    mac_ok: bool
    resource: Mapping[str, Any] | None


def check_chart(*, patient_id: str, rows: Sequence[RowView], manifest: Manifest | None,
                manifest_ok: bool = True) -> tuple[list[Mapping[str, Any]], list[Failure]]:
    """Records of one chart that may be shown, and the failures (never shown).

    ``rows`` are the stored rows the patient's manifest lists (store v2; without a usable manifest, the
    rows whose owner tokens name the patient); ``manifest`` the patient's sealed manifest (None = absent). A record is shown only if its row MAC verifies, it
    decrypts, it names this patient, and the manifest lists exactly its version.
    """
    good: list[Mapping[str, Any]] = []
    failures: list[Failure] = []
    listed = dict(manifest.entries) if manifest is not None and manifest_ok else None
    if listed is None and rows:
        failures.append(Failure(MANIFEST_TYPE, patient_id, "manifest"))
    seen: set[tuple[str, str]] = set()
    for r in rows:
        key = (r.resource_type, r.id)
        seen.add(key)
        want = listed.get(key) if listed is not None else None
        if not r.mac_ok:
            failures.append(Failure(r.resource_type, r.id, "row-mac", want or 0))
        elif r.resource is None:
            failures.append(Failure(r.resource_type, r.id, "unreadable", want or r.version))
        elif patient_ref(r.resource) != patient_id or (r.resource.get("resourceType"), r.resource.get("id")) != key:
            failures.append(Failure(r.resource_type, r.id, "wrong-patient", 0))
        elif listed is None:
            continue  # the manifest failure above already covers the chart; nothing unverified is shown
        elif want is None:
            failures.append(Failure(r.resource_type, r.id, "not-in-manifest", 0))
        elif r.version < want:
            failures.append(Failure(r.resource_type, r.id, "rolled-back", want))
        elif r.version > want:
            failures.append(Failure(r.resource_type, r.id, "not-in-manifest", 0))
        else:
            good.append(r.resource)
    for key, v in sorted((listed or {}).items()):
        if key not in seen:
            failures.append(Failure(key[0], key[1], "missing", v))
    return good, failures


def check_rows(rows: Sequence[RowView]) -> tuple[list[Mapping[str, Any]], list[Failure]]:
    """Rows opened outside a chart (patient list, search; no manifest to hold them to): the records that may
    be shown (row MAC verifies, decrypts, is the record its row names) and the failures (never shown)."""
    good: list[Mapping[str, Any]] = []
    failures: list[Failure] = []
    for r in rows:
        if not r.mac_ok:
            failures.append(Failure(r.resource_type, r.id, "row-mac"))
        elif r.resource is None:
            failures.append(Failure(r.resource_type, r.id, "unreadable", r.version))
        elif (r.resource.get("resourceType"), r.resource.get("id")) != (r.resource_type, r.id):
            failures.append(Failure(r.resource_type, r.id, "wrong-patient"))
        else:
            good.append(r.resource)
    return good, failures


def check_outbox(*, rows: Sequence[tuple[str, bytes, bool]], manifest: OutboxManifest | None,
                 manifest_ok: bool = True) -> tuple[list[str], list[Failure]]:
    """Outbox entry ids that may be restored, and the failures.

    ``rows`` = (entry id, blob, row MAC ok). An entry is restored only if its MAC verifies and
    the manifest lists exactly its blob. Entries the manifest lists but the store lacks are
    reported as missing (a deleted pending change). Without a verifiable manifest every entry
    with a good MAC is kept (losing a clinician's edit is worse than keeping an unlisted one)
    and the manifest failure is reported.
    """
    ok: list[str] = []
    failures: list[Failure] = []
    listed = manifest.entries if manifest is not None and manifest_ok else None
    if listed is None and rows:
        failures.append(Failure(MANIFEST_TYPE, OUTBOX_MANIFEST_ID, "manifest"))
    seen = set()
    for eid, blob, good_mac in rows:
        seen.add(eid)
        if not good_mac:
            failures.append(Failure("OutboxEntry", eid, "row-mac"))
        elif listed is None:
            ok.append(eid)
        elif eid not in listed:
            failures.append(Failure("OutboxEntry", eid, "not-in-manifest"))
        elif listed[eid] != blob_digest(blob):
            failures.append(Failure("OutboxEntry", eid, "rolled-back"))
        else:
            ok.append(eid)
    for eid in sorted(set(listed or ()) - seen):
        failures.append(Failure("OutboxEntry", eid, "missing"))
    return ok, failures


# -- quarantine (the device's list of failures: ids only, no PHI) ------------------------------------

#: Key of a quarantined item: (resource type, id); "OutboxEntry" for a pending change, MANIFEST_TYPE with the
#: patient id for a patient's manifest. The value is ``Failure.to_json()`` plus ``"patient"`` (id or None).
QuarantineKey = tuple[str, str]
INTEGRITY_TEXT = ("Part of this patient's record could not be verified on this device, so it is not shown. "
                  "It is being downloaded again from the server.")


def quarantine_from_json(raw: str | None) -> dict[QuarantineKey, dict[str, Any]]:
    """The quarantine as kept in the meta store (a JSON list, :func:`quarantine_to_json`), by key."""
    return {(str(q["resourceType"]), str(q["id"])): q for q in json.loads(raw or "[]")}


def quarantine_to_json(quarantine: Mapping[QuarantineKey, Mapping[str, Any]]) -> str:
    """The quarantine as one JSON list, in (type, id) order."""
    return json.dumps(sorted(quarantine.values(), key=lambda q: (q["resourceType"], q["id"])))


def settled_manifest_failures(quarantine: Mapping[QuarantineKey, Mapping[str, Any]]) -> list[QuarantineKey]:
    """The manifest failures that are settled: none of that patient's records is still quarantined."""
    open_patients = {q.get("patient") for k, q in quarantine.items() if k[0] != MANIFEST_TYPE}
    return [k for k in quarantine if k[0] == MANIFEST_TYPE and k[1] not in open_patients]


def quarantine_notice(quarantine: Mapping[QuarantineKey, Mapping[str, Any]], patient_id: str
                      ) -> dict[str, Any] | None:
    """What the chart says about this patient's quarantined records (counts by type; no content)."""
    by_type: dict[str, int] = {}
    for (t, _i), q in quarantine.items():
        if q.get("patient") == patient_id and t != MANIFEST_TYPE:
            by_type[t] = by_type.get(t, 0) + 1
    if not by_type and (MANIFEST_TYPE, patient_id) not in quarantine:
        return None
    return {"message": INTEGRITY_TEXT, "count": sum(by_type.values()), "byType": by_type}


# -- the anti-rollback exchange (PROTOCOL.md 6.5, ``POST /api/sync/verify``) -------------------------------


def quarantined_records(quarantine: Iterable[QuarantineKey]) -> set[QuarantineKey]:
    """The quarantined records to download again (not outbox entries, not manifests)."""
    return {(t, i) for (t, i) in quarantine if t not in ("OutboxEntry", MANIFEST_TYPE)}


def verify_held(page: Iterable[tuple[str, str, int]], *, quarantined: Container[QuarantineKey],
                pending: Callable[[str, str], bool]) -> list[list[Any]]:
    """The ``held`` entries of one page of stored versions: a version from the server (> 0), not quarantined
    (those are sent at version 0) and with no pending local edit."""
    return [[t, i, v] for t, i, v in page if v > 0 and (t, i) not in quarantined and not pending(t, i)]


def verify_effects(answer: Mapping[str, Any], *, quarantine: Container[QuarantineKey],
                   pending: Callable[[str, str], bool]) -> tuple[list[Effect], int]:
    """(the storage effects, the count of rolled-back copies the server saw) of one ``/api/sync/verify`` answer.

    ``changes``: a newer (or deleted) server version replaces the local copy, unless a local edit is pending;
    ``gone``: only a quarantined copy is removed (scope changes are the pull's ``drop``).
    """
    effects: list[Effect] = []
    for c in answer.get("changes") or []:
        t, i = str(c["resourceType"]), str(c["id"])
        if pending(t, i):
            continue
        if c.get("deleted") or c.get("resource") is None:
            effects.append(RecordDelete(t, i))
        else:
            effects.append(RecordPut(t, i, int(c["versionId"]), c["resource"]))
    for g in answer.get("gone") or []:  # only quarantined copies: scope changes are the pull's "drop"
        t, i = str(g["resourceType"]), str(g["id"])
        if (t, i) in quarantine and not pending(t, i):
            effects.append(RecordDelete(t, i))
    return effects, int(answer.get("stale") or 0)
