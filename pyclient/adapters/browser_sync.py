"""BrowserApp's sync exchanges: register the device, push, pull (pipelined), server-epoch recovery, lost
conflicts. ``BrowserApp.sync_once`` wires them in order under the tab's Web Lock.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``). Every decision is the
sans-IO :class:`pyclient.sync.SyncMachine`'s; this file does the HTTP (``_post``, ``_http``) and commits
the machine's effects.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pyclient import outcome
from pyclient.protocol import (
    ProtocolError,
    PullRequest,
    PullResponse,
    PushResponse,
    dumps,
    loads,
    parse_retry_after,
)
from pyclient.sync import Effect, SyncMachine

from .browser_base import M_FIRST_SYNC_DONE, AppParts, DeviceRevoked, _now
from .indexeddb_store import js_to_py

FIRST_SYNC_NONCE_BLOCK = 8192  # nonces reserved at a time during a first sync (webcrypto.WebCrypto.nonce_block)


class SyncMixin(AppParts):
    """Relies on BrowserApp's ``machine``, ``store``, ``_wc``, ``_post``, ``_http``, ``_open``, ``_commit``,
    ``_emit``, ``needs_login`` and the audit mixin's ``_audit_witness``."""

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
