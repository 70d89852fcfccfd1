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

This file is the core: construction, the ``call`` dispatcher, PIN set-up and unlock, sealing, the one
commit path, the status bar and the wiring of a sync round (``sync_once``). Each area is a mixin in its own
module: ``browser_integrity`` (row codec, manifests, quarantine), ``browser_read`` (patient list, search,
chart), ``browser_edits`` (clinical forms, conflict resolutions), ``browser_sync`` (push, pull, epochs),
``browser_audit`` (device audit trail, witness), ``browser_telemetry``, and the issue 13 / 18 parts
(``browser_cds``, ``browser_chart``, ``browser_device_set``, ``browser_recovery``, ``browser_drafts``,
``browser_emergency``, ``browser_register``). What they share is in ``browser_base``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pyclient import blindindex as bi
from pyclient import envelope as env
from pyclient import integrity as ig
from pyclient import keys as kh
from pyclient import outcome
from pyclient import pinguard as pg
from pyclient import storage_mode as sm
from pyclient.compress import decode_record, encode_record
from pyclient.errors import AppError, ValidationFailed
from pyclient.integrity_cache import ManifestCache, SeenRows
from pyclient.store import PutMeta, StoreOp
from pyclient.sync import (
    META_EPOCH,
    META_RECOVERY,
    ConflictParked,
    Effect,
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

from .browser_audit import AuditMixin  # the device audit trail and the audit witness
from .browser_base import (
    M_DEVICE,
    M_FIRST_SYNC_DONE,
    UI_SLICE,
    DeviceRevoked,
    _b64,
    _now,
    _unb64,
    _yield_to_ui,
)
from .browser_cds import CdsMixin
from .browser_chart import ChartMixin  # issue 18: permissions, refused changes
from .browser_device_set import DeviceSetMixin  # issue 13: the storage budget
from .browser_drafts import DraftsMixin  # issue 18 item 10: unsaved work kept, sealed, across the lock
from .browser_edits import EditsMixin  # local edits: clinical forms, conflict resolutions
from .browser_emergency import EmergencyMixin  # issue 18 item 7: break-the-glass
from .browser_integrity import M_INTEGRITY, M_QUARANTINE, IntegrityMixin, _BrowserRows  # issue 17
from .browser_read import ReadMixin  # patient list, search, chart (through the manifests)
from .browser_recovery import RecoveryMixin  # issue 13 item 5: escrow copies, "Save recovery file"
from .browser_register import RegisterMixin  # issue 18: registration, authors as references
from .browser_sync import SyncMixin  # push, pull, epoch recovery, lost conflicts
from .browser_telemetry import TelemetryMixin  # PROTOCOL.md §6
from .browser_webauthn import HardwareKeyRefused, prf_unwrap, prf_wrap
from .browser_webauthn import unlock_info as webauthn_unlock_info
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
M_KEYRING, M_USER, M_KEY_CREATED, M_SCHEMA = "keyring", "user", "key.created", "schema"
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


class BrowserApp(IntegrityMixin, ReadMixin, EditsMixin, SyncMixin, AuditMixin, TelemetryMixin, CdsMixin, ChartMixin,
                 DeviceSetMixin, RecoveryMixin, DraftsMixin, EmergencyMixin, RegisterMixin):
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
        return webauthn_unlock_info(await self.store.meta_get(M_KEYRING))

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
        self._quarantine = ig.quarantine_from_json(meta.get(M_QUARANTINE))
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

    # -- the machine's view of what other tabs wrote -------------------------------------

    async def _reload_machine(self) -> None:
        meta = await self.store.meta_get_many(["sync.cursor", "sync.lastSuccess", *SYNC_EPOCH_META, M_DEVICE,
                                               M_QUARANTINE])
        self._quarantine = ig.quarantine_from_json(meta.get(M_QUARANTINE))
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

    async def first_sync_done(self) -> bool:
        return await self.store.meta_get(M_FIRST_SYNC_DONE) == "1"

    # -- diagnostics (benchmarks only; the others are with their areas) ---------------------------

    async def bench_crypto(self, n: int = 200) -> dict[str, Any]:
        """Seal+open ``n`` demo-sized resources in one batch each; ms per resource (closing-note figure)."""
        self._require_unlocked()
        res = {"resourceType": "Observation", "id": "bench", "status": "final", "valueQuantity": {"value": 1},
               "note": [{"text": "x" * 1500}]}
        t0 = time.perf_counter()
        blobs = await self._seal([("Observation", f"b{i}", 1, res) for i in range(n)])
        await self._open([("Observation", f"b{i}", 1, b) for i, b in enumerate(blobs)])
        return {"n": n, "msPerResource": (time.perf_counter() - t0) * 1000 / n}
