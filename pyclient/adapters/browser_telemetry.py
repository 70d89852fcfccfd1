"""BrowserApp's device telemetry (PROTOCOL.md §6; no PHI: counts, sizes, ages and versions only).

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``): the counters and the
report are built by :mod:`pyclient.telemetry`; this file keeps the counters and the first-seen times of
unsynced changes in the meta store, ticks app time online/offline and posts ``/api/ops/telemetry``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pyclient
from pyclient import telemetry as tm
from pyclient.compress import CURRENT_DICTIONARY_ID
from pyclient.sync import Effect, MetaPut, SyncMachine

from .browser_base import AppParts, DeviceRevoked, _now
from .indexeddb_store import js_to_py

M_TELE_COUNTERS, M_TELE_PENDING, M_KB_VERSIONS = "telemetry.counters", "telemetry.pendingSince", "kb.versions"


class TelemetryMixin(AppParts):
    """Relies on BrowserApp's ``store``, ``machine``, ``revoked``, ``_idb``, ``_post``, ``first_sync_done`` and
    ``device_revoked``."""

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
                app_version=re.sub(rf"[^{tm.NAME_CHARSET}]", "", app_version)[:64] or "pyclient-" + pyclient.__version__,
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
