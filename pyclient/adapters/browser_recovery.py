"""Recovery files on the device (issue 13 item 5; format in ``pyclient.recovery``, PROTOCOL.md "Recovery files").

While unlocked and online the device fetches the server's recovery public key and its token
(``GET /api/sync/recovery-key``); from then on every change it queues is ALSO sealed on its own to that key
(WebCrypto: ECDH P-256, HKDF-SHA256, AES-256-GCM) in the same IndexedDB transaction as the outbox entry, and
the copy is removed with the entry. The copies are ciphertext only the server can open, so
:meth:`RecoveryMixin.recovery_file` works without the PIN — a forgotten PIN or a device that cannot sync
still hands its unsynced changes to an administrator. The key info (it holds the token) is stored sealed
like a record; the escrow map is the sealed items plus mutation ids and order.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pyclient import recovery
from pyclient.store import PutMeta, StoreOp
from pyclient.sync import Effect, OutboxDelete, OutboxEntry, OutboxPut

from .indexeddb_store import js_to_py

M_RECOVERY_KEY = "recovery.key"  # sealed {"publicKey", "keyId", "user", "token"}
M_ESCROW = "recovery.escrow"  # {"<entryId>": {"seq": n, "item": SealedItem JSON}}
KEY_TYPE = "RecoveryKey"

def _u8(data: bytes) -> Any:
    import js  # type: ignore[import-not-found]  # noqa: PLC0415

    arr = js.Uint8Array.new(len(data))
    if data:
        arr.assign(data)
    return arr


async def seal_item(
    crypto: Any, *, public_key: bytes, device_id: str, payload: recovery.EscrowPayload, iv: bytes
) -> recovery.SealedItem:
    """The WebCrypto twin of ``cpython_crypto.recovery_seal`` (``recoverySeal`` in pwa/app/crypto.js; the page's
    CSP allows no eval, so the JS lives there). Every byte string is built here."""
    key_id = recovery.key_id_of(public_key)
    mid = payload.mutation.mutation_id
    aad = recovery.item_aad(key_id=key_id, device_id=device_id, mutation_id=mid)
    prefix = recovery.FORMAT.encode() + b"\x00"
    out = await crypto.recoverySeal(_u8(public_key), _u8(prefix), _u8(aad), _u8(iv),
                                    _u8(recovery.payload_bytes(payload)))
    return recovery.SealedItem(key_id, mid, bytes(out[0].to_bytes()), iv, bytes(out[1].to_bytes()))


class RecoveryMixin:
    """Escrow copies and "Save recovery file"; relies on BrowserApp's store, sealing, HTTP and machine."""

    _recovery_info: dict[str, Any] | None = None

    async def _recovery_key_refresh(self, machine: Any) -> list[StoreOp]:
        """Fetch the server's recovery key once per session (online); back-fill copies of waiting changes."""
        if self._recovery_info is not None:
            return []
        try:
            res = await self._http("GET", f"/api/sync/recovery-key?deviceId={machine.device_id}", "")  # type: ignore[attr-defined]

            res = js_to_py(res)
            status, text = int(res[0]), str(res[1] or "")
            if status != 200:
                return []
            info = json.loads(text)
            raw = base64.urlsafe_b64decode(info["publicKey"] + "=" * (-len(info["publicKey"]) % 4))
            if recovery.key_id_of(raw) != info["keyId"]:
                return []
        except Exception:  # noqa: BLE001 - tried again at the next sync; the status says copies are missing
            return []
        self._recovery_info = {"publicKey": info["publicKey"], "keyId": info["keyId"], "user": info["user"],
                               "token": info["token"]}
        (blob,) = await self._seal([(KEY_TYPE, "server", 0, self._recovery_info)])  # type: ignore[attr-defined]
        ops: list[StoreOp] = [PutMeta(M_RECOVERY_KEY, base64.b64encode(blob).decode())]
        # Changes queued before the key was known (or under an older key) get their copies now.
        ops += await self._recovery_escrow_ops([OutboxPut(e.entry_id, e.to_json()) for e in machine.entries],
                                               rebuild=True)
        await self._apply_with_manifests(ops)  # type: ignore[attr-defined]
        return ops

    async def _recovery_key_load(self) -> None:
        """After unlock: the key info stored at the last sync (no network needed to keep sealing copies)."""
        if self._recovery_info is not None:
            return
        raw = await self.store.meta_get(M_RECOVERY_KEY)  # type: ignore[attr-defined]
        if not raw:
            return
        try:
            (opened,) = await self._open([(KEY_TYPE, "server", 0, base64.b64decode(raw))])  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            return
        if isinstance(opened, dict) and {"publicKey", "keyId", "user", "token"} <= opened.keys():
            self._recovery_info = opened

    async def _recovery_escrow_ops(self, effects: Sequence[Effect], *, rebuild: bool = False) -> list[StoreOp]:
        """Store ops that keep the escrow copies in step with the outbox changes in ``effects``."""
        puts = [e for e in effects if isinstance(e, OutboxPut)]
        deletes = [e for e in effects if isinstance(e, OutboxDelete)]
        if not puts and not deletes:
            return []
        if self._recovery_info is None and puts:
            await self._recovery_key_load()
        current = await self._recovery_escrow()
        escrow = {} if rebuild else dict(current)
        for d in deletes:
            escrow.pop(d.entry_id, None)
        info = self._recovery_info
        if info is not None:
            public = base64.urlsafe_b64decode(info["publicKey"] + "=" * (-len(info["publicKey"]) % 4))
            device = str(self.machine.device_id)  # type: ignore[attr-defined]
            for p in puts:
                entry = OutboxEntry.from_json(p.entry)
                if entry.state == "rejected" or entry.entry_id.startswith("recover-"):
                    escrow.pop(entry.entry_id, None)  # refused, or a held copy re-sent after a server restore
                    continue
                if entry.resource is None and entry.base_version is None:
                    continue  # never a valid mutation (a create undone before it was sent)
                payload = recovery.EscrowPayload(user=str(info["user"]), device_id=device, token=str(info["token"]),
                                                 queued=float(entry.next_try), mutation=entry.to_mutation())
                item = await seal_item(self._cipher.js, public_key=public, device_id=device,  # type: ignore[attr-defined]
                                       payload=payload, iv=os.urandom(12))
                escrow[entry.entry_id] = {"seq": entry.seq, "item": item.to_json()}
        if escrow == current:
            return []
        return [PutMeta(M_ESCROW, json.dumps(escrow, separators=(",", ":")) if escrow else None)]

    async def _recovery_escrow(self) -> dict[str, Any]:
        raw = await self.store.meta_get(M_ESCROW)  # type: ignore[attr-defined]
        try:
            out = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}

    async def recovery_file(self) -> dict[str, Any]:
        """JS: "Save recovery file". Works locked (no PIN): the copies are sealed to the server, not to us."""
        import js  # noqa: PLC0415

        escrow = await self._recovery_escrow()
        rows = sorted(escrow.values(), key=lambda r: int(r.get("seq", 0)))
        items = [recovery.SealedItem.from_json(r["item"]) for r in rows if isinstance(r, Mapping) and "item" in r]
        waiting = None
        if getattr(self, "machine", None) is not None and getattr(self, "_wc", None) is not None:
            waiting = sum(e.state != "rejected" for e in self.machine.entries)  # type: ignore[attr-defined]
        missing = max(0, waiting - len(items)) if waiting is not None else 0
        if not items:
            text = ("There are no unsent changes to save." if not missing else
                    f"{missing} unsent change(s) were made before this device had the server's recovery key and "
                    "cannot be saved to a file. Bring the device online to send them.")
            return {"count": 0, "missing": missing, "text": text, "data": None, "name": None}
        device = await self.store.meta_get("device.id") or "device"  # type: ignore[attr-defined]
        created = str(js.Date.new().toISOString())
        data = recovery.file_of(str(device), created, items).decode()
        stamp = created[:16].replace(":", "").replace("-", "")
        text = (f"{len(items)} unsent change{'s' if len(items) != 1 else ''} saved. Give the file to your "
                "administrator: only the server can open it.")
        if missing:
            text += f" {missing} older change(s) could not be included; bring the device online to send them."
        return {"count": len(items), "missing": missing, "text": text, "data": data,
                "name": f"omnicare-recovery-{stamp}.omnicare-recovery"}
