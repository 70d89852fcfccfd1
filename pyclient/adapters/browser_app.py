"""The narrow Python API the PWA's JavaScript calls for everything that decides, merges or encrypts.

JS owns pixels, timers and events; this module owns the rules: key hierarchy
(PIN-wrapped keyring, :mod:`pyclient.keys`), sealing every record
(:mod:`pyclient.envelope` + :mod:`pyclient.compress`), blind-index search
(:mod:`pyclient.blindindex`), the sync state machine (:mod:`pyclient.sync`) and
form validation. I/O is injected: ``idb`` (``pwa/app/idb.js``), ``crypto``
(``pwa/app/crypto.js``: batched WebCrypto, driven by :mod:`pyclient.adapters.webcrypto`,
the browser's one crypto path) and ``http`` (an async JS function).
Every AES batch and every store batch crosses the JS boundary once.

Safety rules kept here:

* Nonces: the AES-GCM counter state is advanced with a compare-and-swap inside
  ONE IndexedDB readwrite transaction (``webcrypto.IdbKeyState``), so two tabs sharing a
  key always reserve disjoint nonce blocks (:func:`pyclient.keys.lease_nonces`).
* A revoked device (403 + ``OmniCare-Device: revoked; wipe``, or the WebSocket's
  ``device-revoked`` message) forgets its keys and deletes its database at once.
* Every read, search and write on the device is an audit event with its own
  gap-free per-device sequence, sealed and queued in the outbox and uploaded to
  ``/api/audit/device-events`` on the next sync.
* ``bench_*`` calls exist for the benchmark harness only: refused unless the
  page constructed the app with ``bench=True``.

JS calls ``await app.call(name, args_json)`` and gets a JSON string back:
``{"ok": result}`` or ``{"error": {"kind", "message", "fields"?}}``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from pyclient import blindindex as bi
from pyclient import chart as cv
from pyclient import conflict_choices as cc
from pyclient import envelope as env
from pyclient import forms, outcome
from pyclient import integrity as ig
from pyclient import keys as kh
from pyclient import pinguard as pg
from pyclient import storage_mode as sm
from pyclient import telemetry as tm
from pyclient.chart import ref_patient as _ref_patient
from pyclient.compress import CURRENT_DICTIONARY_ID, decode_record, encode_record
from pyclient.dosage import form_spec as dosage_form_spec
from pyclient.errors import AppError, ValidationFailed
from pyclient.integrity_cache import ManifestCache, SeenRows
from pyclient.protocol import (
    ProtocolError,
    PullRequest,
    PullResponse,
    PushResponse,
    dumps,
    loads,
    parse_retry_after,
)
from pyclient.store import (
    PutMeta,
    StoreOp,
)
from pyclient.sync import (
    META_EPOCH,
    META_RECOVERY,
    ConflictParked,
    Effect,
    MetaPut,
    MutationRejected,
    RecordDelete,
    RecordPut,
    SyncMachine,
    notices,
    seal_items,
    store_ops,
)
from pyclient.views.rejected import rejected_banner
from pyclient.views.status import PERSISTENCE_NOTE, status_views

from .browser_base import (
    M_DEVICE,
    M_FIRST_SYNC_DONE,
    UI_SLICE,
    DeviceRevoked,
    _b64,
    _iso_now,
    _now,
    _unb64,
    _yield_to_ui,
)
from .browser_cds import CdsMixin
from .browser_chart import ChartMixin  # issue 18: permissions, refused changes
from .browser_device_set import DeviceSetMixin  # issue 13: the storage budget
from .browser_drafts import DraftsMixin  # issue 18 item 10: unsaved work kept, sealed, across the lock
from .browser_emergency import EmergencyMixin  # issue 18 item 7: break-the-glass
from .browser_integrity import M_INTEGRITY, M_QUARANTINE, IntegrityMixin, _BrowserRows  # issue 17
from .browser_recovery import RecoveryMixin  # issue 13 item 5: escrow copies, "Save recovery file"
from .browser_register import RegisterMixin  # issue 18: registration, authors as references
from .indexeddb_store import IndexedDBStore, StorageFull, js_to_py
from .webcrypto import KEY_STATE_META, IdbKeyState, JsCipher, WebCrypto

__all__ = ["AppError", "BrowserApp", "DeviceRevoked", "ValidationFailed"]

UNEXPECTED = ("Something went wrong on this device and that action did not finish. Your saved changes are safe. "
              "Try again; if it keeps happening, tell your administrator.")
#: A call still running when the app locked (idle lock, Lock button): its keys left memory under it.
LOCKED_MID_CALL = ("The app locked before this finished, so it stopped. Your saved changes are safe. Enter your "
                   "PIN to continue.")

#: Bumped when the local data layout changes; a tab with another value must not write.
LOCAL_SCHEMA = 1
PBKDF2_ITERATIONS = kh.MIN_PBKDF2_ITERATIONS
SYNC_EPOCH_META = (META_EPOCH, META_RECOVERY)  # issue 13 item 6: the server epoch and a recovery in progress
AUDIT_TYPE = "DeviceAuditEvent"
AUDIT_PREFIX = "audit:"
AUDIT_BATCH = 500
M_KEYRING, M_USER, M_KEY_CREATED, M_SCHEMA = "keyring", "user", "key.created", "schema"
# The newest audit checkpoint the server proved consistent, and a history rewrite this device saw (no PHI).
M_AUDIT_CHECKPOINT, M_AUDIT_VIOLATION = "audit.checkpoint", "audit.violation"
M_TELE_COUNTERS, M_TELE_PENDING, M_KB_VERSIONS = "telemetry.counters", "telemetry.pendingSince", "kb.versions"
FIRST_SYNC_NONCE_BLOCK = 8192  # nonces reserved at a time during a first sync (webcrypto.WebCrypto.nonce_block)
M_PIN_GUARD = "pin.guard"  # pyclient.pinguard state: consecutive wrong PINs and the earliest next try
M_PIN_UNREPORTED = "pin.unreported"  # wrong PINs not yet reported to the server


def _settle_heap() -> None:
    """Collect, then freeze the long-lived heap (keys, machine state, caches) out of the cyclic GC.

    Otherwise every later collection walks tens of thousands of live objects and shows up as the tail of
    search latency (measured: p95 over 50,000 records 20 ms -> 12 ms, bench/PROFILING.md notes 4).
    """
    import gc  # noqa: PLC0415

    gc.collect()
    gc.freeze()

_LIST_BATCH = 200  # patients decrypted at a time for a list or a search (see _patient_page)


class BrowserApp(IntegrityMixin, CdsMixin, ChartMixin, DeviceSetMixin, RecoveryMixin, DraftsMixin, EmergencyMixin,
                 RegisterMixin):
    """One signed-in user on one device. Create it once per page; ``unlock`` before anything else."""

    def __init__(self, *, idb: Any, crypto: Any, http: Callable[..., Awaitable[Any]],
                 on_event: Callable[[str], Any] | None = None, bench: bool = False) -> None:
        self.store = IndexedDBStore(idb)
        self._idb = idb
        self._cipher = JsCipher(crypto)  # pwa/app/crypto.js behind the browser's one crypto adapter
        self._http = http
        self._on_event = on_event
        self._read_only: str | None = None
        self._clear_keys()
        self.needs_login = False
        self.syncing = False
        self.revoked = False
        self._conflicts_checked = float("-inf")  # last GET /api/sync/conflicts (adopt lost conflicts)
        self.audit_violation: str | None = None
        self._bench = bool(bench)
        self._checks = True  # store integrity checks; only bench_integrity(False) turns them off (to measure them)
        self.integrity_s = 0.0  # wall time spent in the integrity checks (MACs, manifests): bench attribution
        self._background: set[Any] = set()  # audit writes of reads, kept alive until done
        self.pin_policy = pg.PinPolicy()  # attempts before delay / wipe (configurable: set before unlock)
        self._rows = _BrowserRows(self)

    # -- plumbing --------------------------------------------------------------

    def _clear_keys(self) -> None:
        # Counts the unlocked sessions: a call that sees it move while it runs was cut short by the lock.
        self._session = getattr(self, "_session", 0) + 1
        self._keyring: kh.Keyring | None = None
        self._wc: WebCrypto | None = None  # the unlocked keyring's CryptoKeys and nonce lease
        self._index: bi.IndexKeys | None = None
        self._ref_key: bytes | None = None
        self._owner_key: bytes | None = None  # opens the rows' owner tokens (blindindex.owner_token)
        self.machine: SyncMachine | None = None
        self._username: str | None = None
        self._store_key: bytes | None = None  # row-MAC key (pyclient.integrity.store_key)
        self._quarantine: dict[tuple[str, str], dict[str, Any]] = {}
        self._recovery_info = None  # the recovery token leaves memory on lock too
        self._held_verified = False  # the anti-rollback exchange ran in this unlocked session
        self._drop_key_caches()

    def _drop_key_caches(self) -> None:
        """Forget what was derived from the installed keys: at lock, and when another keyring is installed."""
        self._owner_made: dict[str, str] = {}  # owner token -> patient token, made since the last commit
        self._ref_memo: dict[str, str] = {}  # patient id -> patient token
        # Patient manifests as this tab last read or wrote them, the most recent ones only (bounded: issue 13,
        # memory flat in the scope). Safe to be stale: every write compare-and-swaps the row MAC and a mismatch
        # re-reads.
        self._mcache = ManifestCache()
        # Rows written since a pull reset (a first sync), when every one went through this tab: a row it
        # certainly never wrote does not exist, so its old patient token need not be read (fixed size).
        self._seen: SeenRows | None = None

    def _emit(self, event: Mapping[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(json.dumps(event))

    async def call(self, name: str, args_json: str = "{}") -> str:
        """Dispatcher for JS: one JSON string in, one JSON string out; errors as values."""
        method = getattr(self, name, None)
        if name.startswith("_") or method is None or name == "call" or not callable(method):
            return json.dumps({"error": {"kind": "bug", "message": f"no such call {name!r}"}})
        if name.startswith("bench_") and not self._bench:
            # Synthetic records must never reach a clinician's store: only the benchmark page enables these.
            return json.dumps({"error": {"kind": "forbidden", "message": f"{name} is only available to benchmarks"}})
        session = self._session
        try:
            args = json.loads(args_json or "{}")
            result = method(**args)
            if hasattr(result, "__await__"):
                result = await result
            return json.dumps({"ok": result})
        except AppError as exc:
            return json.dumps({"error": {"kind": exc.kind, "message": exc.message, "fields": exc.fields}})
        except kh.WrongPin:
            await self._telemetry_failed_unlock()
            return json.dumps({"error": {"kind": "wrong_pin", "message": "That PIN is not correct."}})
        except StorageFull as exc:
            return json.dumps({"error": {"kind": "quota", "message": str(exc)}})
        except Exception:  # the UI shows a generic message; details go to the console only
            if session != self._session:
                # The lock cleared the keys under a running call (a first sync of 200,000 records outlasts the
                # 5-minute idle lock, and a patient list asked meanwhile): that is not a fault of this device.
                return json.dumps({"error": {"kind": "locked", "message": LOCKED_MID_CALL}})
            import traceback  # noqa: PLC0415

            traceback.print_exc()
            # Never the exception text on screen (issue 18): a sentence, the details stay in the console.
            return json.dumps({"error": {"kind": "bug", "message": UNEXPECTED}})

    def _require_unlocked(self) -> SyncMachine:
        if self.machine is None or self._keyring is None:
            raise AppError("The app is locked. Enter your PIN.", kind="locked")
        return self.machine

    def _require_writable(self) -> SyncMachine:
        machine = self._require_unlocked()
        if self._read_only:
            raise AppError(self._read_only, kind="read_only")
        return machine

    # -- device state ------------------------------------------------------------

    async def boot(self) -> dict[str, Any]:
        """What the start screen needs: is there a keyring on this device, for whom."""
        meta = await self.store.meta_get_many([M_KEYRING, M_USER, M_SCHEMA, M_DEVICE])
        schema = meta.get(M_SCHEMA)
        if schema is not None and int(schema) > LOCAL_SCHEMA:
            self._read_only = "A newer version of OmniCare stored data on this device. Reload to update."
        return {"hasKeyring": meta.get(M_KEYRING) is not None, "username": meta.get(M_USER),
                "deviceId": meta.get(M_DEVICE), "schema": LOCAL_SCHEMA}

    def pin_rule(self) -> str:
        """The PIN set-up form's hint (pyclient.keys: the rule ``setup_pin`` enforces)."""
        return kh.PIN_RULE

    def set_read_only(self, reason: str) -> None:
        """An update is waiting (or the schema moved on): refuse every write until reload."""
        self._read_only = reason

    async def setup_pin(self, pin: str, username: str, scope: str = "care-team",
                        prf: dict[str, Any] | None = None, device_id: str | None = None) -> dict[str, Any]:
        """First sign-in on this device: new data + blind-index keys, wrapped under the PIN (and, with ``prf``
        from ``webauthn.js``, a second time under the device's authenticator: ``browser_webauthn``)."""
        kh.unlock_secret_check(pin, scope=scope, hardware_bound=bool(prf))  # the one rule (trust: wide scope)
        if await self.store.meta_get(M_KEYRING) is not None:
            raise AppError("This device already has an offline PIN. Sign out to reset it.")
        kid = "dk-" + os.urandom(4).hex()
        keyring = kh.new_keyring(data_key_id=kid, data_key=os.urandom(32), index_key_id="bi-1",
                                 index_root_key=os.urandom(32))
        blob = await kh.keyring_wrap(self._cipher, pin=pin, keyring=keyring, salt=os.urandom(16),
                                     nonces=[os.urandom(env.NONCE_LEN) for _ in keyring.entries],
                                     iterations=PBKDF2_ITERATIONS)
        if prf:  # trust: hardware-bound unlock, the stored blob is only the doubly wrapped one
            from .browser_webauthn import prf_wrap  # noqa: PLC0415

            blob = await prf_wrap(self, blob, prf)
        state = kh.KeyState(key_id=kid, nonce_prefix=os.urandom(kh.NONCE_PREFIX_LEN))
        # device_id: the same device going online only mid-session (issue 13) keeps its id, which its
        # server session is bound to; otherwise a new one.
        device = device_id if device_id and re.fullmatch(r"[0-9a-f-]{36}", device_id) else str(uuid.uuid4())
        await self.store.apply([
            PutMeta(M_KEYRING, _b64(blob)),
            PutMeta(M_USER, username),
            PutMeta(M_DEVICE, device),
            PutMeta(M_KEY_CREATED, repr(_now())),
            PutMeta(M_SCHEMA, str(LOCAL_SCHEMA)),
            PutMeta(M_INTEGRITY, ig.STORE_VERSION),
            PutMeta(KEY_STATE_META + kid, json.dumps(state.to_dict())),
        ])
        await self._install(keyring, username)
        return {"deviceId": device}

    # -- PIN attempts (issue 10, item 16): delay after 3 failures, wipe after 10 (pyclient.pinguard) --------

    async def unlock_info(self) -> dict[str, Any]:
        """Is this device's key also locked to its authenticator (WebAuthn PRF)? Then the unlock screen asks it
        first (``webauthn.unlockSecret``) and passes its output as ``prf``."""
        from .browser_webauthn import unlock_info  # noqa: PLC0415

        return unlock_info(await self.store.meta_get(M_KEYRING))

    async def unlock(self, pin: str, prf: str | None = None) -> dict[str, Any]:
        """Unlock with the PIN under the attempt policy: too early is refused with the wait, a wrong PIN counts
        (the count is kept in IndexedDB, so it survives reloads), the 10th wrong PIN in a row wipes the device.
        Failures are reported to the audit trail (as security events) at the next successful unlock.
        ``prf``: the authenticator's output when the key is hardware-bound (``unlock_info``)."""
        self._prf_secret = prf
        state = pg.PinState.from_json(await self.store.meta_get(M_PIN_GUARD))
        wait = pg.pin_wait(state, now=_now())
        if wait > 0:
            raise AppError(f"Too many wrong PINs. Try again in {int(wait + 0.999)} seconds.", kind="pin_delay",
                           fields={"retryAfter": str(int(wait + 0.999))})
        try:
            result = await self._unlock_with_pin(pin)
        except kh.WrongPin:
            verdict = pg.pin_failed(state, self.pin_policy, now=_now())
            if verdict.wipe:
                await self.wipe()
                raise AppError("Too many wrong PINs: this device's data was erased. Sign in again.",
                               kind="wiped") from None
            await self.store.meta_put(M_PIN_GUARD, verdict.state.to_json())
            if verdict.delay > 0:
                raise AppError(f"That PIN is not correct. Wait {int(verdict.delay)} seconds before the next try "
                               f"({verdict.attempts_left} left before this device is erased).",
                               kind="wrong_pin") from None
            raise
        fresh, to_report = pg.pin_succeeded(state)
        if state.failures:
            await self.store.meta_put(M_PIN_GUARD, fresh.to_json())
        await self._report_pin_failures(to_report)
        return result

    async def _report_pin_failures(self, new: int) -> None:
        """Tell the server (a security event) how many wrong PINs preceded this unlock; kept and retried at the
        next unlock when offline."""
        pending = int(await self.store.meta_get(M_PIN_UNREPORTED) or 0) + new
        if not pending:
            return
        device = await self.store.meta_get(M_DEVICE)
        status = 0
        try:
            body = json.dumps({"deviceId": device, "failures": min(pending, 1000)}).encode()
            status, _text, _ = await self._post("/api/access/pin-failures", body)
        except Exception:  # noqa: BLE001 - offline: report next time
            status = 0
        await self.store.meta_put(M_PIN_UNREPORTED, None if status == 204 else str(pending))

    async def _unlock_with_pin(self, pin: str) -> dict[str, Any]:
        """Derive the KEK from the PIN, unwrap the keyring; a wrong PIN unwraps nothing and reads nothing."""
        meta = await self.store.meta_get_many([M_KEYRING, M_USER])
        if meta.get(M_KEYRING) is None:
            raise AppError("No offline PIN on this device yet: sign in first.", kind="no_keyring")
        raw = _unb64(str(meta[M_KEYRING]))
        if kh.is_prf_wrapped(raw):  # trust: the outer wrapping opens only with this device's authenticator
            from .browser_webauthn import HardwareKeyRefused, prf_unwrap  # noqa: PLC0415

            try:
                raw = await prf_unwrap(self, raw, getattr(self, "_prf_secret", None))
                self._prf_secret = None
            except HardwareKeyRefused as exc:
                raise AppError(str(exc), kind="hardware_key") from None
        keyring = await kh.keyring_unlock(self._cipher, pin=pin, blob=raw)
        await self._install(keyring, str(meta.get(M_USER) or ""))
        _settle_heap()
        return {"username": self._username}

    async def _install(self, keyring: kh.Keyring, username: str) -> None:
        root = keyring.index_root
        if root is None:
            raise AppError("The keyring has no search key.")
        # Tokens and manifests cached under another keyring are wrong under this one: online only's tab key,
        # then a PIN when the device may keep data again (issue 13) installs a second keyring without a lock.
        self._drop_key_caches()
        raw_state = await self.store.meta_get(KEY_STATE_META + keyring.active_data.key_id)
        if raw_state is None:
            raise AppError("Encryption counter state is missing: sign out and in again to rotate keys.")
        self._wc = await WebCrypto.create(self._cipher, keyring=keyring,
                                          state=kh.KeyState.from_dict(json.loads(raw_state)),
                                          persist_state=IdbKeyState(self._idb, str(raw_state)))
        self._keyring = keyring
        self._store_key = ig.store_key(root)
        self._index = bi.IndexKeys.derive(root)
        self._ref_key = bi.patient_ref_key(root)
        self._owner_key = bi.patient_owner_key(root)
        self._username = username
        meta = await self.store.meta_get_many(["sync.cursor", "sync.lastSuccess", *SYNC_EPOCH_META, M_DEVICE, M_INTEGRITY,
                                               M_QUARANTINE])
        self._quarantine = {(str(q["resourceType"]), str(q["id"])): q for q in json.loads(meta.get(M_QUARANTINE) or "[]")}
        device = meta.get(M_DEVICE) or "unknown-device"
        # A machine with no outbox first, so the integrity audit events below have somewhere to go.
        self.machine = SyncMachine.restore(device_id=device, meta={}, outbox=[])
        if meta.get(M_INTEGRITY) == "1":
            await self._owner_upgrade()  # store v1: plaintext patient tokens become sealed owner tokens, once
        elif meta.get(M_INTEGRITY) != ig.STORE_VERSION:
            await self._integrity_adopt()  # a store from before issue 17: MAC and list what is there, once
        outbox = await self._restore_outbox()
        self.machine = SyncMachine.restore(
            device_id=device, meta={k: meta.get(k) for k in ("sync.cursor", "sync.lastSuccess", *SYNC_EPOCH_META)},
            outbox=outbox)
        await self._load_permissions()  # issue 18 hook (browser_chart)
        await self._load_practitioner()  # issue 18 hook (browser_register): authors as references

    def lock(self) -> dict[str, Any]:
        """Idle timeout / manual lock: every key and decrypted record leaves memory."""
        self._clear_keys()
        return {"locked": True}

    async def wipe(self) -> dict[str, Any]:
        """Sign-out: forget keys and delete the local database (JS warns about unsynced changes first)."""
        self._clear_keys()
        await self._idb.wipe()
        return {"wiped": True}

    # -- sealing (one WebCrypto crossing per batch: pyclient.adapters.webcrypto) ------------------------------

    async def _seal(self, items: Sequence[tuple[str, str, int, Mapping[str, Any]]]) -> list[bytes]:
        if not items:
            return []
        assert self._wc is not None
        plain: list[tuple[str, str, int, bytes]] = []
        for k in range(0, len(items), UI_SLICE):
            if k:
                await _yield_to_ui()
            plain += [(t, i, v, ig.encode_manifest(res) if t == ig.MANIFEST_TYPE else encode_record(res))
                      for t, i, v, res in items[k:k + UI_SLICE]]
        return await self._wc.seal(plain)  # still one nonce reservation and one WebCrypto crossing

    async def _open(self, items: Sequence[tuple[str, str, int, bytes]]) -> list[dict[str, Any] | None]:
        """Decrypt many records in one crossing; a record that fails in any way comes back as None.

        Malformed headers, unknown keys, tag failures and records that do not decompress all give None:
        one bad byte must never take a chart, the patient list or unlock down (issue 17).
        """
        if not items:
            return []
        assert self._wc is not None
        result: list[dict[str, Any] | None] = []
        for pt in await self._wc.open_blobs([(env.RecordRef(t, i, v), blob) for t, i, v, blob in items]):
            try:
                result.append(None if isinstance(pt, env.EnvelopeError) else decode_record(pt))
            except ValueError:
                result.append(None)
        return result

    async def _commit(self, effects: Sequence[Effect]) -> list[Effect]:
        """Seal the storage effects in one batch and write them in ONE IndexedDB transaction.

        The effects become store ops through pyclient's one path (``seal_items`` / ``store_ops``, the same as
        the CPython stores and the tests); only the sealing (one WebCrypto crossing) and the row codec
        (blind-index tokens, row MACs) are this adapter's.
        """
        effects = list(effects)
        sealed = await self._seal(seal_items(effects))
        ops: list[StoreOp] = []
        at = 0
        for k in range(0, len(effects), UI_SLICE):  # tokens and row MACs, a slice per browser task
            if k:
                await _yield_to_ui()
            part = effects[k:k + UI_SLICE]
            n = len(seal_items(part))
            ops += store_ops(part, sealed[at:at + n], self._rows)
            at += n
        if at != len(sealed):  # a long batch would pair blobs with the wrong rows
            raise ValueError(f"{len(sealed)} sealed blobs for {at} items")
        q_changed = False
        for e in effects if self._quarantine else ():  # (a pull page: 1,000 isinstance checks for nothing)
            if isinstance(e, (RecordPut, RecordDelete)):
                q_changed = self._quarantine.pop((e.resource_type, e.id), None) is not None or q_changed
        if q_changed:  # a re-downloaded (or deleted) record leaves quarantine in the same transaction
            self._drop_settled_manifest_failures()
            ops.append(self._quarantine_op())
        ops += await self._recovery_escrow_ops(effects)  # sealed-to-server copies move with the outbox
        await self._apply_with_manifests(ops)
        return notices(effects)

    # -- device audit trail -------------------------------------------------------

    async def _audit(self, action: str, resource_type: str = "", rid: str = "",
                     patient_ids: Sequence[str] = (), *, outcome: str = "success",
                     detail: Mapping[str, Any] | None = None) -> None:
        """Seal one access event and append it to the outbox; IndexedDB gives it the next device sequence."""
        await self._audit_many([(action, resource_type, rid, patient_ids)], outcome=outcome, detail=detail)

    async def _audit_many(self, events: Sequence[tuple[str, str, str, Sequence[str]]], *, outcome: str = "success",
                          detail: Mapping[str, Any] | None = None) -> None:
        """Seal access events (action, resource type, id, patient ids) in one batch, append them in ONE transaction.

        Each sequence is allocated inside the same readwrite transaction as its append
        (``idb.apply`` op ``putAudit``, in order), so tabs never share or skip a number.
        """
        if self._wc is None or self.machine is None or not events:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        items: list[tuple[str, str, int, Mapping[str, Any]]] = [
            (AUDIT_TYPE, AUDIT_PREFIX + str(uuid.uuid4()), 0,
             {"action": action, "occurred": now, "resourceType": resource_type, "id": rid,
              "patientIds": [p for p in patient_ids if p][:100], "outcome": outcome, "purpose": "TREAT",
              "detail": {str(k)[:40]: str(v)[:200] for k, v in (detail or {}).items()}})
            for action, resource_type, rid, patient_ids in events]
        blobs = await self._seal(items)
        await self.store.audit_append_many([(eid, blob) for (_t, eid, _v, _e), blob in zip(items, blobs, strict=True)])

    async def _audit_quietly(self, *args: Any, **kwargs: Any) -> None:
        await self._quietly(self._audit(*args, **kwargs))

    @staticmethod
    async def _quietly(write: Awaitable[None]) -> None:
        try:
            await write
        except Exception:  # noqa: BLE001 - a full disk must not hide a chart; the console keeps the trace
            import traceback  # noqa: PLC0415

            traceback.print_exc()

    def _audit_later(self, *args: Any, **kwargs: Any) -> None:
        """Audit a read without adding its IndexedDB transaction to the latency the clinician waits for."""
        import asyncio  # noqa: PLC0415

        task = asyncio.ensure_future(self._audit_quietly(*args, **kwargs))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def audit_flush(self) -> int:
        """Wait for queued read audits to be written; returns how many events wait for upload."""
        import asyncio  # noqa: PLC0415

        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        return await self.store.audit_count()

    async def _push_audit(self, machine: SyncMachine, *, manual: bool = False) -> None:
        """Upload queued device audit events (bounded retries, refused ones parked): ``browser_audit``."""
        from .browser_audit import push_audit  # noqa: PLC0415

        await push_audit(self, machine, full=AUDIT_BATCH, audit_type=AUDIT_TYPE, revoked=DeviceRevoked,
                         manual=manual)

    async def audit_upload_state(self) -> dict[str, Any]:
        """Device audit upload: events parked after the server refused them (kept on the device), and why."""
        from pyclient import audit_upload as au  # noqa: PLC0415

        from .browser_audit import upload_state  # noqa: PLC0415

        st = await upload_state(self)
        return {"parked": st.parked_total, "message": au.parked_message(st), "notBefore": st.not_before,
                "reasons": [p.reason for p in st.parked][-5:], "queued": await self.store.audit_count()}

    # -- reading -------------------------------------------------------------------

    async def _resources(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        rows = [r for r in await self.store.get_records(keys) if r is not None]
        return await self._verified_rows(rows)

    async def _patient_page(self, ids: Sequence[str], limit: int | None,
                            keep: Callable[[list[dict[str, Any]]], Sequence[Mapping[str, Any]]] | None = None
                            ) -> cv.PatientPage:
        """The first ``limit`` (None: all) of the patients ``ids`` that verify (and pass ``keep``), in name
        order, with their count. Decrypted _LIST_BATCH at a time and only the page kept: a device holding
        9,090 patients opened them all at once for every list drawn (issue 13, memory flat in the scope)."""
        page = cv.PatientPage(len(ids) if limit is None else limit)
        for k in range(0, len(ids), _LIST_BATCH):
            batch = await self._resources([("Patient", i) for i in ids[k:k + _LIST_BATCH]])
            opened = batch if keep is None else keep(batch)
            page.add([self._with_pending(cv.patient_summary(p), "Patient") for p in opened])
        return page

    async def patients(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The local patients that verify, sorted by name: the first ``limit`` of them (None: every one)."""
        self._require_unlocked()
        return (await self._patient_page(await self.store.list_ids("Patient"), limit)).results

    def _with_pending(self, summary: dict[str, Any], resource_type: str) -> dict[str, Any]:
        assert self.machine is not None
        summary["pending"] = self.machine.has_pending_edit(resource_type, str(summary["id"]))
        return summary

    async def search(self, text: str, date_order: str = "mdy", limit: int = cv.PATIENT_PAGE) -> dict[str, Any]:
        """Search by name prefix, MRN or birth date over the blind index; candidates decrypted and re-checked.

        ``date_order`` is how the device's locale writes a date ('dmy', 'mdy', 'ymd'; routes.js asks Intl).
        Every patient held is searched (or listed, for no text); the first ``limit`` in name order are returned
        with ``total`` (all of them) and ``more`` (some left out: the screen's "Show more" asks a larger limit)."""
        self._require_unlocked()
        assert self._index is not None
        started = time.perf_counter()
        text = (text or "").strip()
        limit = max(1, int(limit))
        if not text:
            page = await self._patient_page(await self.store.list_ids("Patient"), limit)
            self._audit_later("search", "Patient", "", [], detail={"kind": "list", "results": page.total})
            storage: sm.StorageMode | None = getattr(self, "_storage_mode", None)  # online only keeps nothing
            return {"kind": None, "results": page.results, "ms": 0.0, "total": page.total, "more": page.more,
                    "moreLabel": cv.SHOW_MORE,
                    "summary": sm.patients_summary(page.total, storage.mode if storage else "device",
                                                   shown=len(page.results))}
        kind = cv.search_kind(text)
        try:
            text = cv.normalize_query(kind, text, "dmy" if date_order == "dmy" else "mdy")
            tokens = bi.tokens_for_query(self._index, kind, text)
        except bi.InvalidQuery as exc:
            raise ValidationFailed(str(exc), fields={"q": str(exc)}) from None
        if not tokens:
            return {"kind": kind, "results": [], "ms": 0.0}
        candidates: set[tuple[str, str]] | None = None
        for tok in tokens:
            found = set(await self.store.lookup_token(tok, "Patient"))
            candidates = found if candidates is None else candidates & found
            if not candidates:
                break
        ids = sorted(i for t, i in candidates or () if t == "Patient")
        page = await self._patient_page(ids, limit, keep=lambda ps: bi.filter_candidates(ps, kind, text))
        out = page.results
        # The query text itself stays on the device (it may be a name); the kind and the hits shown are audited.
        self._audit_later("search", "Patient", "", [str(p["id"]) for p in out],
                          detail={"kind": kind, "results": len(out), "matches": page.total})
        return {"kind": kind, "results": out, "total": page.total, "more": page.more, "moreLabel": cv.SHOW_MORE,
                "ms": round((time.perf_counter() - started) * 1000, 2)}

    async def chart(self, patient_id: str) -> dict[str, Any]:
        """Everything the chart screen shows for one patient (decrypted in one batch)."""
        machine = self._require_unlocked()
        resources = await self._chart_resources(patient_id)
        patient = next((r for r in resources if r.get("resourceType") == "Patient" and r.get("id") == patient_id),
                       None)
        if patient is None:
            if self._integrity_notice(patient_id):
                raise AppError("This patient's record could not be verified on this device, so it is not shown. "
                               "It is being downloaded again from the server.", kind="integrity")
            raise AppError("This patient is not on this device.", kind="not_found")
        self._audit_later("read", "Patient", patient_id, [patient_id], detail={"view": "chart"})

        def pending(r: Mapping[str, Any]) -> bool:
            return machine.has_pending_edit(str(r.get("resourceType")), str(r.get("id")))

        return {**cv.chart_view(patient, resources, pending), "integrity": self._integrity_notice(patient_id),
                # issue 18 hooks (browser_chart): the role's controls, refused changes, "conflict" marks
                "actions": self._chart_actions(), "rejected": self.rejected(patient_id),
                "conflictIds": sorted({v.id for v in machine.conflicts()}),
                **self._full_chart(patient, resources, pending)}  # issue 18 item 5 (browser_chart)

    async def _patient_index(self, patient_id: str) -> tuple[list[tuple[str, str]], ig.Manifest | None]:
        """(the rows of one patient, sorted; the patient's verified manifest or None), read through the manifest.

        Rows carry no shared patient token (store v2, PROTOCOL.md 4.5): the patient's sealed manifest is the
        index, one more read and decrypt per chart (none when this tab last wrote or read that very row: same
        row MAC). Without a manifest that opens and verifies (deleted, tampered, or checks off for a bench),
        every row's owner token is opened instead: a scan of the store's row metadata, the rare repair path.
        """
        tok = self._ref_token(patient_id)
        row = await self.store.get_record(ig.MANIFEST_TYPE, tok)
        cached = self._mcache.get(tok) if tok in self._mcache else None
        manifest: ig.Manifest | None = None
        if row is not None and cached is not None and cached[0] is not None and row.mac and cached[1] == row.mac:
            manifest = cached[0]
        elif row is not None:
            (o,) = await self._open([(row.resource_type, row.id, row.version, row.blob)])
            if o is not None and self._row_ok(row):
                try:
                    manifest = ig.Manifest.from_json(o, row.version)
                    self._mcache.put(tok, manifest, row.mac or "")  # the next chart open or write skips the decrypt
                    self._mcache.trim()
                except (ValueError, TypeError):
                    manifest = None
        if manifest is not None:
            return manifest.keys(), manifest
        return await self._owner_scan(tok), None

    async def _owner_scan(self, ref: str) -> list[tuple[str, str]]:
        """Every row whose owner token opens to the patient token ``ref`` (no manifest to read them through)."""
        keys = [(t, i) for t, i, _v in await self.store.list_held()]
        metas = await self.store.row_meta(keys)
        return sorted(k for k, m in zip(keys, metas, strict=True) if m is not None and ref in self._owner_refs(m[1]))

    async def _patient_keys(self, patient_id: str) -> list[tuple[str, str]]:
        """The (type, id) of one patient's records on this device (CDS context, purge); rows are checked on read."""
        return (await self._patient_index(patient_id))[0]

    async def _chart_resources(self, patient_id: str) -> list[dict[str, Any]]:
        """The records of one chart that verify (pyclient.integrity.check_chart); the others are quarantined."""
        keys, manifest = await self._patient_index(patient_id)
        data = [r for r in await self.store.get_records([k for k in keys if k not in self._quarantine])
                if r is not None]
        opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in data])
        views = [ig.RowView(r.resource_type, r.id, r.version, self._row_ok(r), o)
                 for r, o in zip(data, opened, strict=True)]
        if manifest is not None:  # already-quarantined records are not "missing" again
            manifest = ig.Manifest({k: v for k, v in manifest.entries.items() if k not in self._quarantine},
                                   manifest.generation)
        good, failures = ig.check_chart(patient_id=patient_id, rows=views, manifest=manifest)
        if any(f.reason == "manifest" for f in failures):  # nothing of this chart verifies: re-download it all
            failures = [ig.Failure(ig.MANIFEST_TYPE, patient_id, "manifest"),
                        *(ig.Failure(v.resource_type, v.id, "manifest") for v in views),
                        *(f for f in failures if f.reason != "manifest")]
        if failures:
            await self._quarantine_records(patient_id, failures)
        return [g for g in good if isinstance(g, dict)]

    # -- writing -------------------------------------------------------------------

    async def _edit(self, resource_type: str, rid: str, resource: dict[str, Any] | None,
                    *, create: bool) -> dict[str, Any]:
        return (await self._edits([(resource_type, rid, resource, create)]))[0]

    async def _edits(self, edits: Sequence[tuple[str, str, dict[str, Any] | None, bool]]) -> list[dict[str, Any]]:
        """Queue several local edits (type, id, resource or None to delete, create?) as ONE store batch.

        One form that creates several records (a vitals set: one Observation per measurement) is saved whole
        or not at all, in one sealing crossing and one IndexedDB transaction.
        """
        machine = self._require_writable()
        for resource_type, _rid, resource, create in edits:  # issue 18: refused before anything is queued
            self._check_may(resource_type, "create" if create else "delete" if resource is None else "update")
        bases: list[dict[str, Any] | None] = []
        effects: list[Effect] = []
        queued = False  # the machine's memory changed: a failure from here on must rebuild it from disk
        try:
            for resource_type, rid, resource, create in edits:
                base_version: int | None = None
                base: dict[str, Any] | None = None
                if not create:
                    row = await self.store.get_record(resource_type, rid)
                    if row is None:
                        raise AppError("That record is no longer on this device.", kind="not_found")
                    if not machine.has_pending_edit(resource_type, rid):
                        opened = (await self._open([(resource_type, rid, row.version, row.blob)]))[0]
                        base, base_version = opened, row.version
                bases.append(base)
                queued = True
                effects += machine.record_local_edit(now=_now(), mutation_id=str(uuid.uuid4()),
                                                     resource_type=resource_type, id=rid, resource=resource,
                                                     base_version=base_version, base_resource=base)
            effects += await self._telemetry_note_edit(machine)  # same transaction as the edits
            await self._commit(effects)
        except Exception:
            # Not saved: rebuild the machine from what IS durable so memory never claims more than disk.
            if queued:
                await self._reload_machine()
            raise
        events = []
        for (resource_type, rid, resource, create), base in zip(edits, bases, strict=True):
            source = resource if resource is not None else base or {}
            pid = rid if resource_type == "Patient" else _ref_patient(source)
            events.append(("create" if create else "delete" if resource is None else "update",
                           resource_type, rid, [pid] if pid else []))
        await self._quietly(self._audit_many(events))  # one audit transaction for the whole batch
        for resource_type, rid, _resource, _create in edits:
            self._emit({"type": "changed", "resourceType": resource_type, "id": rid})
        status = self.status()
        return [{"id": rid, "status": status} for _t, rid, _r, _c in edits]

    async def _reload_machine(self) -> None:
        meta = await self.store.meta_get_many(["sync.cursor", "sync.lastSuccess", *SYNC_EPOCH_META, M_DEVICE,
                                               M_QUARANTINE])
        self._quarantine = {(str(q["resourceType"]), str(q["id"])): q for q in json.loads(meta.get(M_QUARANTINE) or "[]")}
        outbox = await self._restore_outbox()
        self.machine = SyncMachine.restore(
            device_id=meta.get(M_DEVICE) or "unknown-device",
            meta={k: meta.get(k) for k in ("sync.cursor", "sync.lastSuccess", *SYNC_EPOCH_META)},
            outbox=outbox)

    def mark_dirty(self) -> None:
        """Another tab wrote to the database: rebuild the outbox view before the next sync."""
        self._dirty = True
        self._mcache.clear()
        self._seen = None

    async def reload_if_stale(self) -> None:
        """Called under the sync lock: adopt what other tabs queued."""
        if getattr(self, "_dirty", False) and self.machine is not None:
            self._dirty = False
            await self._reload_machine()

    async def _current(self, resource_type: str, rid: str) -> dict[str, Any]:
        row = await self.store.get_record(resource_type, rid)
        if row is None:
            raise AppError("That record is no longer on this device.", kind="not_found")
        res = (await self._open([(resource_type, rid, row.version, row.blob)]))[0]
        if res is None:
            raise AppError("That record could not be decrypted.")
        return res

    def _author(self) -> dict[str, str]:
        return self._author_ref()  # issue 18 item 6: Practitioner reference + display (browser_register)

    async def record_vitals(self, patient_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and queue vital signs (one Observation per measurement, BP as a panel)."""
        self._require_writable()
        now = _iso_now()
        taken = self._vitals_time(values, now)  # issue 18 item 5: vitals taken earlier
        created = forms.vitals(patient_id, values, now=taken, author=self._author(), recorded=now)
        ids = [str(uuid.uuid4()) for _ in created]
        # One batch: five measurements are one transaction, so a full disk or a crash saves none, never three.
        await self._edits([("Observation", rid, {**res, "id": rid}, True) for rid, res in zip(ids, created, strict=True)])
        return {"ids": ids, "status": self.status()}

    async def add_allergy(self, patient_id: str, substance: str, criticality: str = "unable-to-assess",
                          reaction: str = "", status: str = "active") -> dict[str, Any]:
        """Queue a new AllergyIntolerance."""
        rid = str(uuid.uuid4())
        res = forms.allergy_new(patient_id, id=rid, substance=substance, criticality=criticality, reaction=reaction,
                                status=status, now=_iso_now(), author=self._author())
        return await self._edit("AllergyIntolerance", rid, res, create=True)

    async def update_allergy(self, allergy_id: str, criticality: str | None = None,
                             status: str | None = None) -> dict[str, Any]:
        """Change criticality and/or clinical status of an allergy (a new version, merged on the server)."""
        res = forms.allergy_update(await self._current("AllergyIntolerance", allergy_id),
                                   criticality=criticality, status=status)
        return await self._edit("AllergyIntolerance", allergy_id, res, create=False)

    async def dosage_form(self, medication_id: str | None = None) -> dict[str, Any]:
        """The structured dosage form's choices and values (issue 18 item 4), prefilled from an order's dosage."""
        self._require_unlocked()
        current = (await self._current("MedicationRequest", medication_id)).get("dosageInstruction") \
            if medication_id else None
        return dosage_form_spec(current)

    async def start_medication(self, patient_id: str, name: str, dosage: forms.DosageInput) -> dict[str, Any]:
        """Queue a new active MedicationRequest."""
        rid = str(uuid.uuid4())
        res = forms.medication_new(patient_id, id=rid, name=name, dosage=dosage, now=_iso_now(),
                                   author=self._author())
        return await self._edit("MedicationRequest", rid, res, create=True)

    async def change_medication(self, medication_id: str, dosage: forms.DosageInput) -> dict[str, Any]:
        """New dosage instruction for an active medication (structured fields, or one line of text)."""
        forms.check_new_dosage(dosage)
        current = await self._current("MedicationRequest", medication_id)
        forms.medication_order_check("", dosage, need_name=False, previous=current.get("dosageInstruction"))
        res = forms.medication_change(current, dosage)
        return await self._edit("MedicationRequest", medication_id, res, create=False)

    async def stop_medication(self, medication_id: str, reason: str = "") -> dict[str, Any]:
        """Stop a medication (status stopped, with the reason)."""
        res = forms.medication_stop(await self._current("MedicationRequest", medication_id), reason)
        return await self._edit("MedicationRequest", medication_id, res, create=False)

    async def add_note(self, patient_id: str, title: str, text: str) -> dict[str, Any]:
        """Queue a clinical note (DocumentReference with a text/plain attachment)."""
        rid = str(uuid.uuid4())
        res = forms.note_new(patient_id, id=rid, title=title, text=text, now=_iso_now(), author=self._author())
        return await self._edit("DocumentReference", rid, res, create=True)

    async def update_contact(self, patient_id: str, phone: str | None = None,
                             birth_date: str | None = None, gender: str | None = None) -> dict[str, Any]:
        """Edit demographics: phone, birth date, gender."""
        res = forms.contact_update(await self._current("Patient", patient_id), phone=phone, birth_date=birth_date,
                                   gender=gender, today=date.today().isoformat())
        return await self._edit("Patient", patient_id, res, create=False)

    # -- sync ------------------------------------------------------------------------

    def storage_decision(self, event: str = "start", facts: Mapping[str, Any] | None = None,
                         condition: str = "") -> dict[str, Any]:
        """Online only or not (issue 13 item 4): ``start`` with the facts of this page start, then ``hit`` /
        ``check`` / ``accept`` … during the session (switching back included). The table is pyclient.storage_mode
        (one rule, one place)."""
        machine: sm.StorageMode | None = getattr(self, "_storage_mode", None)
        if machine is None or event == "start":
            machine = self._storage_mode = sm.StorageMode()
        try:
            return machine.on(event, facts, condition).to_json()
        except ValueError as exc:
            raise AppError(str(exc), kind="bug") from None

    def persistence_note(self) -> str:
        """Said once when the browser refuses persistent storage (issue 18), instead of on every status."""
        return PERSISTENCE_NOTE

    def status(self, signed_out: bool = False) -> dict[str, Any]:
        """What the always-visible status bar shows: counts, and ``view``, its words (pyclient.views.status).
        ``signed_out``: asked by the sign-in screen (no keyring on this device)."""
        if self.machine is None:
            out: dict[str, Any] = {
                "locked": True, "signedOut": signed_out, "revoked": self.revoked, "pending": 0, "conflicted": 0,
                "rejected": 0, "lastSuccess": None, "lastError": None, "synced": False,
                "needsLogin": self.needs_login, "readOnly": self._read_only, "syncing": False}
            out["view"] = status_views(out)
            return out
        s = self.machine.status()
        records = sum(1 for k in self._quarantine if k[0] not in ("OutboxEntry", ig.MANIFEST_TYPE))
        changes = self._unreadable_changes()
        synced = s.synced and not (records or changes)  # never "Synced" while something is quarantined (issue 17)
        out = {"locked": False, "revoked": False, "pending": s.pending, "conflicted": s.conflicted, "rejected": s.rejected,
               "lastSuccess": s.last_success, "lastError": s.last_error, "synced": synced,
               "unverified": records, "unreadableChanges": changes,
               "needsLogin": self.needs_login, "readOnly": self._read_only, "syncing": self.syncing,
               "nextWake": self.machine.next_wake(_now())}
        out["view"] = status_views(out)  # issue 18: the status line in words (pyclient.views.status)
        return out

    async def _post(self, path: str, body: bytes) -> tuple[int, str, str | None]:
        """POST through JS ``http``; raises :class:`DeviceRevoked` when the server orders a wipe."""
        res = js_to_py(await self._http("POST", path, body.decode("utf-8")))
        status, text, retry_after = int(res[0]), str(res[1] or ""), res[2]
        device_header = res[3] if len(res) > 3 else None
        if outcome.device_revoked(status, text, None if device_header is None else str(device_header)):
            raise DeviceRevoked()
        return status, text, None if retry_after is None else str(retry_after)

    async def device_revoked(self) -> dict[str, Any]:
        """The server revoked this device (lost or stolen): forget the keys and erase every local record.

        Called by :meth:`sync_once` on a revoked answer and by JS on the WebSocket's
        ``device-revoked`` message. Works locked or unlocked: erasing needs no key.
        """
        self._clear_keys()
        self.revoked = True
        self._read_only = "This device was revoked."
        await self._idb.wipe()
        self._emit({"type": "revoked"})
        return {"wiped": True}

    async def sync_once(self, first: bool = False, manual: bool = False) -> dict[str, Any]:
        """Push what is due (by priority), then pull until caught up. One page per transaction.

        JS runs this under a Web Lock so only one tab syncs at a time.
        """
        machine = self._require_unlocked()
        if self._read_only:
            return self.status()
        if first and await self.first_sync_done():
            # The pins arrived already: the round that asked for a first sync was cut short in its prefetch tail
            # (the idle lock outlasted by a large scope; the runner asks again). Asking for the pins only now
            # would make the server drop the tail on the device and send it again: go on from the cursor instead.
            first = False
        self.syncing = True
        try:
            await self._register_device(machine)
            await self._recovery_key_refresh(machine)
            notices = await self._push(machine)
            if self.needs_login:
                return self.status()
            recovering = machine.recovery is not None
            notices += await self._epoch_recover(machine)
            phase = await self._device_set_sync(machine, now=_now(), first=first, force=manual)  # issue 13
            notices += await self._pull(machine, first=first)
            if machine.recovery == "collect":  # the pull met a new server epoch (a restored server)
                recovering = True
                notices += await self._epoch_recover(machine)
                notices += await self._pull(machine, first=False)
            if phase == "pins":  # the pinned charts are on the device and usable; now the prefetch tail
                self._emit({"type": "device-set", "phase": "pinned-ready"})
                if await self._device_set_sync(machine, now=_now(), first=first, force=True):
                    notices += await self._pull(machine, first=False)
            if recovering and machine.recovery is None:
                notices += await self._push(machine)  # re-send at once what the restored server lacks
            notices += await self._adopt_conflicts(machine)
            if not first and machine.last_error is None:
                await self._integrity_sync(machine)
            await self._push_audit(machine, manual=manual)
            await self.cds_refresh_if_due()  # signed CDS bundles (browser_cds.py), when due
        except DeviceRevoked:
            await self.device_revoked()
            return self.status()
        finally:
            self.syncing = False
        if first:
            _settle_heap()
        conflicts = [n for n in notices if isinstance(n, ConflictParked)]
        rejected = [n for n in notices if isinstance(n, MutationRejected)]
        if conflicts:
            self._emit({"type": "conflict", "count": len(conflicts)})
        if rejected:
            self._emit({"type": "rejected", "count": len(rejected), "message": rejected_banner(len(rejected))})
        return self.status()

    async def _adopt_conflicts(self, machine: SyncMachine) -> list[Effect]:
        """Once per session and then every 15 minutes: park the server's open conflicts of this device
        that its outbox lost (restored from a backup, or an answer lost before a crash)."""
        now = _now()
        if now < self._conflicts_checked + 900.0:
            return []
        try:
            res = js_to_py(await self._http("GET", f"/api/sync/conflicts?deviceId={machine.device_id}", ""))
            status, text = int(res[0]), str(res[1] or "")
        except Exception:  # noqa: BLE001 - tried again next time
            return []
        if status != 200:
            return []
        self._conflicts_checked = now
        try:
            effects = machine.adopt_server_conflicts(loads(text))
        except ProtocolError:
            return []
        return await self._commit(effects) if effects else []

    async def _register_device(self, machine: SyncMachine) -> None:
        """Tell the server about this device once (idempotent there); it tracks last mutation and pull."""
        if await self.store.meta_get("device.registered") == machine.device_id:
            return
        body = json.dumps({"deviceId": machine.device_id, "name": "OmniCare PWA"}).encode()
        try:
            status, _text, _ = await self._post("/api/sync/devices", body)
        except DeviceRevoked:
            raise
        except Exception:  # noqa: BLE001 - retried on the next sync
            return
        if status == 200:
            await self.store.meta_put("device.registered", machine.device_id)
        elif outcome.needs_sign_in(status):
            self.needs_login = True

    async def _push(self, machine: SyncMachine) -> list[Effect]:
        notices: list[Effect] = []
        for _ in range(100):
            req = machine.next_push(_now())
            if req is None:
                break
            try:
                status, text, retry_after = await self._post("/api/sync/push", dumps(req))
            except DeviceRevoked:
                raise
            except Exception as exc:  # noqa: BLE001 - a network failure of any kind
                status, text, retry_after = 0, str(exc), None
            now = _now()
            if status == 200:
                self.needs_login = False
                effects = machine.on_push_response(now, req, PushResponse.from_json(loads(text)))
            else:
                self.needs_login = self.needs_login or outcome.needs_sign_in(status)
                error = outcome.sync_failure(status)
                effects = machine.on_push_failed(now, req, rng_value=int.from_bytes(os.urandom(2)) / 65536,
                                                 retry_after=parse_retry_after(retry_after, now=now), error=error)
                notices += await self._commit(effects)
                break
            notices += await self._commit(effects)
        return notices

    async def _epoch_recover(self, machine: SyncMachine) -> list[Effect]:
        """Server epochs (PROTOCOL.md): hand every record this device holds to the machine, which keeps what the
        restored server may lack as recover entries until the re-pull shows what it has."""
        if machine.recovery != "collect":
            return []
        held: list[tuple[str, str, int, dict[str, Any]]] = []
        for t in sorted({t for t, _i, _v in await self.store.list_held()}):
            rows = await self.store.list_records(t)
            opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in rows])
            held += [(r.resource_type, r.id, r.version, o) for r, o in zip(rows, opened, strict=True) if o is not None]
        return await self._commit(machine.recover_held(held))

    async def _pull_fetch(self, machine: SyncMachine, req: PullRequest) -> tuple[int, str]:
        """One pull page over HTTP: (status, body); status 0 = no answer (offline)."""
        try:
            status, text, _retry = await self._post(f"/api/sync/pull?deviceId={machine.device_id}", dumps(req))
        except DeviceRevoked:
            raise
        except Exception as exc:  # noqa: BLE001
            status, text = 0, str(exc)
        return status, text

    async def _pull(self, machine: SyncMachine, *, first: bool) -> list[Effect]:
        """Pull until caught up, pipelined: page n+1 is requested (``SyncMachine.pull_ahead``) before page n is
        sealed and written, so the network and the server's page work overlap the local writes."""
        import asyncio  # noqa: PLC0415

        notices: list[Effect] = []
        received = 0
        ahead: tuple[PullRequest, asyncio.Task[tuple[int, str]]] | None = None
        block = self._wc.nonce_block(FIRST_SYNC_NONCE_BLOCK) if first and self._wc is not None else None
        try:
            for _ in range(10_000):
                req = machine.next_pull()
                if ahead is not None and ahead[0] == req:
                    status, text = await ahead[1]
                else:
                    if ahead is not None:
                        ahead[1].cancel()
                    status, text = await self._pull_fetch(machine, req)
                ahead = None
                if status != 200:
                    self.needs_login = self.needs_login or outcome.needs_sign_in(status)
                    machine.last_error = outcome.sync_failure(status)
                    break
                self.needs_login = False
                raw = loads(text)
                resp = PullResponse.from_json(raw)
                nxt = machine.pull_ahead(resp)
                if nxt is not None:
                    ahead = (nxt, asyncio.ensure_future(self._pull_fetch(machine, nxt)))
                notices += await self._commit(machine.on_pull_response(_now(), req, resp))
                if machine.recovery == "collect":
                    break  # a new server epoch: sync_once hands over the held records, then re-pulls
                received += len(resp.changes)
                if resp.changes or resp.drop:
                    self._emit({"type": "pulled", "received": received, "hasMore": resp.has_more,
                                "seq": max((c.seq for c in resp.changes), default=None),
                                "total": raw.get("total") if isinstance(raw, dict) else None,
                                "remaining": raw.get("remaining") if isinstance(raw, dict) else None,
                                "ids": [c.id for c in resp.changes][:200]})
                if not resp.has_more:
                    await self._audit_witness(raw.get("auditCheckpoint") if isinstance(raw, dict) else None)
                    if machine.last_error in ("offline", "sign in again to sync") or (
                            machine.last_error or "").startswith("server error"):
                        machine.last_error = None
                    if first:
                        await self.store.meta_put(M_FIRST_SYNC_DONE, "1")
                    break
        finally:
            if ahead is not None:  # a page fetched ahead but not used (an error while writing): drop it
                ahead[1].cancel()
            if block is not None and self._wc is not None:
                self._wc.nonce_block(block)
        return notices

    async def _audit_witness(self, offered_json: Any) -> None:
        """Keep the newest audit checkpoint the server proved consistent (``pyclient.auditlog``); a server
        whose history no longer extends what this device saw is flagged (``audit_log_state``)."""
        from pyclient import auditlog  # noqa: PLC0415

        if offered_json is None:
            return
        try:
            offered = auditlog.Checkpoint.from_json(offered_json)
            raw_held = await self.store.meta_get(M_AUDIT_CHECKPOINT)
            held = auditlog.Checkpoint.from_json(json.loads(raw_held)) if raw_held else None
            decision = auditlog.checkpoint_offered(held, offered)
            if decision.kind == "need-proof" and held is not None:
                res = js_to_py(await self._http(
                    "GET", f"/api/audit/log/consistency?first={decision.first}&second={decision.second}", None))
                if int(res[0]) == 400 and offered.tree_size < held.tree_size:
                    # The server no longer has the (bigger) checkpoint this device was handed: it was removed.
                    decision = auditlog.Decision("violation", reason=f"the server lost the audit checkpoint of "
                                                                     f"size {held.tree_size} this device holds")
                elif int(res[0]) != 200:
                    return  # try again on the next sync
                else:
                    decision = auditlog.checkpoint_proof_check(held, offered, loads(str(res[1])))
            if decision.kind == "adopt":
                await self.store.meta_put(M_AUDIT_CHECKPOINT, json.dumps(offered.to_json()))
            elif decision.kind == "violation":
                from .browser_audit import report_rewrite  # noqa: PLC0415  (a security event to the server)

                await report_rewrite(self, held, offered, decision.reason)
                self.audit_violation = decision.reason
                await self.store.meta_put(M_AUDIT_VIOLATION, decision.reason)
                self._emit({"type": "audit-violation", "reason": decision.reason})
        except Exception:  # noqa: BLE001 - the witness never stops a sync
            return

    async def audit_log_state(self) -> dict[str, Any]:
        """The audit checkpoint this device holds (tree size) and any inconsistency it saw."""
        raw = await self.store.meta_get(M_AUDIT_CHECKPOINT)
        held = json.loads(raw) if raw else None
        return {"treeSize": held["treeSize"] if held else None, "root": held["root"] if held else None,
                "violation": await self.store.meta_get(M_AUDIT_VIOLATION)}

    async def first_sync_done(self) -> bool:
        return await self.store.meta_get(M_FIRST_SYNC_DONE) == "1"

    # -- conflicts ---------------------------------------------------------------------

    def conflicts(self) -> list[dict[str, Any]]:
        """Parked conflicts with base / mine / theirs per field, for the side-by-side screen."""
        return cc.conflict_list(self._require_unlocked().conflicts())

    async def resolve_conflict(self, entry_id: str, choices: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a person's per-field decisions (:func:`pyclient.conflict_choices.resolved_resource`); the result
        is pushed as a new version based on the server's."""
        machine = self._require_writable()
        view = next((c for c in machine.conflicts() if c.entry_id == entry_id), None)
        if view is None:
            raise AppError("This conflict was already resolved.", kind="not_found")
        chosen = cc.resolved_resource(view, choices, today=date.today().isoformat())  # issue 18: Edit is validated
        effects = machine.resolve_conflict(now=_now(), entry_id=entry_id, resource=chosen,
                                           mutation_id=str(uuid.uuid4()))
        await self._commit(effects)
        res = chosen if isinstance(chosen, Mapping) else view.server or view.local or {}
        pid = view.id if view.resource_type == "Patient" else _ref_patient(res)
        await self._audit_quietly("update", view.resource_type, view.id, [pid] if pid else [],
                                  detail={"conflict": "resolved"})
        self._emit({"type": "changed", "resourceType": view.resource_type, "id": view.id})
        return {"status": self.status()}

    # -- diagnostics -------------------------------------------------------------------

    async def bench_crypto(self, n: int = 200) -> dict[str, Any]:
        """Seal+open ``n`` demo-sized resources in one batch each; ms per resource (closing-note figure)."""
        self._require_unlocked()
        res = {"resourceType": "Observation", "id": "bench", "status": "final", "valueQuantity": {"value": 1},
               "note": [{"text": "x" * 1500}]}
        t0 = time.perf_counter()
        blobs = await self._seal([("Observation", f"b{i}", 1, res) for i in range(n)])
        await self._open([("Observation", f"b{i}", 1, b) for i, b in enumerate(blobs)])
        return {"n": n, "msPerResource": (time.perf_counter() - t0) * 1000 / n}

    async def bench_fill(self, resources: int, start: int = 0, batch: int = 2000) -> dict[str, Any]:
        """Add ``resources`` synthetic sealed records (1 patient per 10) for search benchmarks.

        Goes through the real path (seal in batches, blind-index tokens, one IndexedDB transaction per batch).
        """
        self._require_writable()
        syll = ["ka", "lo", "mi", "ner", "sto", "va", "ri", "den", "bel", "tor", "shi", "ma", "ron", "el", "gu"]
        t0 = time.perf_counter()
        made = start
        while made < start + resources:
            effects: list[Effect] = []
            for n in range(made, min(start + resources, made + batch)):
                p = n // 10
                pid = f"bench-p{p}"
                if n % 10 == 0:
                    family = (syll[p % 15] + syll[(p // 15) % 15] + syll[(p // 225) % 15]).capitalize()
                    res: dict[str, Any] = {
                        "resourceType": "Patient", "id": pid, "meta": {"versionId": "1"},
                        "name": [{"use": "official", "family": family, "given": [syll[(p * 7) % 15].capitalize() + "na"]}],
                        "identifier": [{"system": "urn:bench", "value": f"BENCH-{p:06d}",
                                        "type": {"coding": [{"code": "MR"}]}}],
                        "birthDate": f"{1940 + p % 70}-{1 + p % 12:02d}-{1 + p % 28:02d}"}
                    effects.append(RecordPut("Patient", pid, 1, res))
                else:
                    oid = f"bench-o{n}"
                    res = {"resourceType": "Observation", "id": oid, "meta": {"versionId": "1"}, "status": "final",
                           "code": {"text": "Heart rate"}, "subject": {"reference": f"Patient/{pid}"},
                           "effectiveDateTime": "2026-01-01T10:00:00Z",
                           "valueQuantity": {"value": 60 + n % 40, "unit": "/min"}}
                    effects.append(RecordPut("Observation", oid, 1, res))
            await self._commit(effects)
            made += len(effects)
        return {"resources": made - start, "seconds": round(time.perf_counter() - t0, 2),
                "total": int(js_to_py(await self._idb.countRecords()))}

    async def bench_search(self, queries: Sequence[str], rounds: int = 3) -> dict[str, Any]:
        """p50 / p95 / max of :meth:`search` over ``queries`` (ms, wall clock inside Python)."""
        times: list[float] = []
        hits = 0
        for _ in range(rounds):
            for q in queries:
                t0 = time.perf_counter()
                r = await self.search(q)
                times.append((time.perf_counter() - t0) * 1000)
                hits += len(r["results"])
        times.sort()
        return {"n": len(times), "p50": round(times[len(times) // 2], 2),
                "p95": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2), "max": round(times[-1], 2),
                "avgHits": round(hits / max(1, len(times)), 1)}

    # -- device telemetry (PROTOCOL.md §6; no PHI: counts, sizes, ages and versions only) ---------------

    async def _telemetry_pending(self) -> dict[str, float]:
        if getattr(self, "_tele_pending", None) is None:
            raw = await self.store.meta_get(M_TELE_PENDING)
            try:
                loaded = json.loads(raw) if raw else {}
                self._tele_pending: dict[str, float] | None = {str(k): float(v) for k, v in loaded.items()}
            except (ValueError, TypeError, AttributeError):
                self._tele_pending = {}
        return dict(self._tele_pending or {})

    async def _telemetry_note_edit(self, machine: SyncMachine) -> list[Effect]:
        """The first-seen time of each unsynced outbox entry, written with the edit that created it."""
        ids = [e.entry_id for e in machine.entries if e.state in ("pending", "in_flight", "conflicted")]
        self._tele_pending = tm.pending_since_update(await self._telemetry_pending(), ids, _now())
        return [MetaPut(M_TELE_PENDING, json.dumps(self._tele_pending))]

    async def _telemetry_counters(self) -> tm.Counters:
        raw = await self.store.meta_get(M_TELE_COUNTERS)
        try:
            return tm.Counters.from_json(json.loads(raw) if raw else {})
        except ValueError:
            return tm.Counters()

    async def _telemetry_failed_unlock(self) -> None:
        try:
            c = await self._telemetry_counters()
            await self.store.meta_put(M_TELE_COUNTERS, json.dumps(tm.counters_tick(
                c, elapsed=0, online=True, offline_ready=False, failed_unlocks=1).to_json()))
        except Exception:  # noqa: BLE001 - counting must never change what a wrong PIN shows
            return

    async def telemetry_tick(self, online: bool, offline_ready: bool = False) -> dict[str, Any]:
        """JS calls this when the network state changes (with the state that just ENDED) and before a report:
        the time since the last tick is added to the counters as online or offline app time."""
        now = _now()
        last = getattr(self, "_tele_tick", None)
        self._tele_tick: float | None = now
        c = await self._telemetry_counters()
        if last is not None:
            ready = bool(offline_ready) and await self.first_sync_done()  # shell cached AND data on the device
            c = tm.counters_tick(c, elapsed=now - last, online=bool(online), offline_ready=ready)
            await self.store.meta_put(M_TELE_COUNTERS, json.dumps(c.to_json()))
        return c.to_json()

    async def telemetry_report(self, reason: str = "timer", online: bool = True, offline_ready: bool = False,
                               storage: Mapping[str, Any] | None = None, app_version: str = "") -> dict[str, Any]:
        """Build the device report (pyclient.telemetry) and send it; counters reset only once it was accepted."""
        import pyclient  # noqa: PLC0415

        machine = self.machine
        if machine is None or self.revoked or reason not in tm.REASONS:
            return {"sent": False, "status": None}
        await self.telemetry_tick(online, offline_ready)
        counters = await self._telemetry_counters()
        unsynced = [e.entry_id for e in machine.entries if e.state in ("pending", "in_flight", "conflicted")]
        now = _now()
        self._tele_pending = tm.pending_since_update(await self._telemetry_pending(), unsynced, now)
        st = dict(storage or {})

        def num(key: str) -> int | None:
            v = st.get(key)
            return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None

        try:
            records: int | None = int(js_to_py(await self._idb.countRecords()))
        except Exception:  # noqa: BLE001 - an older database without the count: unknown
            records = None
        persisted = st.get("persisted")
        kb = {"pyclient": pyclient.__version__, "compress-dict": f"fhir-r4-v{CURRENT_DICTIONARY_ID}"}
        raw_kb = await self.store.meta_get(M_KB_VERSIONS)  # filled by whatever installs a knowledge base
        try:
            kb.update({str(k): str(v) for k, v in (json.loads(raw_kb) if raw_kb else {}).items()})
        except (ValueError, AttributeError):
            pass
        try:
            report = tm.build_report(
                device_id=machine.device_id, report_id=str(uuid.uuid4()), reason=reason,  # type: ignore[arg-type]
                app_version=re.sub(r"[^A-Za-z0-9._:/-]", "", app_version)[:64] or "pyclient-" + pyclient.__version__,
                now=now, entry_states=[e.state for e in machine.entries], pending_since=self._tele_pending,
                last_success=machine.last_success,
                storage=tm.Storage(used=num("used"), quota=num("quota"),
                                   persisted=persisted if isinstance(persisted, bool) else None, records=records,
                                   indexed_db=num("indexedDb")),
                counters=counters, kb_versions=kb)
        except ValueError as exc:  # a value out of range: a bug to see in the console, never a crash
            return {"sent": False, "status": None, "error": str(exc)}
        await self.store.meta_put(M_TELE_PENDING, json.dumps(self._tele_pending))
        try:
            status, _text, _ = await self._post("/api/ops/telemetry", report.dumps())
        except DeviceRevoked:
            await self.device_revoked()
            return {"sent": False, "status": 403}
        except Exception:  # noqa: BLE001 - offline: the counters keep accumulating
            return {"sent": False, "status": 0}
        if status == 200:
            after = tm.counters_after_sent(await self._telemetry_counters(), report)
            await self.store.meta_put(M_TELE_COUNTERS, json.dumps(after.to_json()))
        return {"sent": status == 200, "status": status, "report": report.to_json()}

