"""The PWA's device-set calls (issue 13, item 1, Pyodide): plan what this device holds, tell the server, show it.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``): the rule is
:func:`pyclient.device_set.plan_device_set`, the words :mod:`pyclient.views.device_set`; this file gathers the
inputs (the server's offer, the patients held, the outbox) and does the I/O through BrowserApp's ``_http``.

Nothing here is written at rest in plaintext: the offer and the on-demand pins live in memory for the
session (an offline restart shows what is held, with the reasons of the last offer it saw, or none).
"""

from __future__ import annotations

import json
from typing import Any

from pyclient import chart as cv
from pyclient import integrity as ig
from pyclient import storage_mode as sm
from pyclient.chart import PATIENT_PAGE
from pyclient.device_set import DevicePlan, DeviceSetOffer, plan_device_set
from pyclient.protocol import ProtocolError
from pyclient.sync import SyncMachine
from pyclient.views.device_set import device_set_view, online_only_device_view

M_SET_POSTED = "device.set.posted"  # "1" once this device told the server a set (no ids: nothing at rest)
#: Re-plan at most this often (seconds) outside a first sync: the offer costs the server a ranking.
REPLAN_S = 900.0


#: The sealed list of patients this device fetched on demand (meta key, envelope type bound into its AAD).
M_DEMAND = "device_set.on_demand"
PINS_TYPE = "DeviceSetPins"


class DeviceSetMixin:
    """Relies on BrowserApp's store, machine, ``_http``, ``_post``, ``_emit``, ``patients`` and sync."""

    _ds_offer: DeviceSetOffer | None = None
    _ds_checked: float = float("-inf")
    _ds_demand: frozenset[str] = frozenset()
    _ds_demand_loaded: bool = False

    def _ds_unsynced(self, machine: SyncMachine) -> tuple[set[str], set[str]]:
        pending: set[str] = set()
        conflicted: set[str] = set()
        for e in machine.entries:
            src = e.resource or e.server_resource or e.base_resource or {}
            pid = e.id if e.resource_type == "Patient" else ig.patient_ref(src)
            if pid:
                (conflicted if e.state == "conflicted" else pending).add(pid)
        return pending, conflicted

    async def _ds_held_now(self) -> list[str]:
        store: Any = self.store  # type: ignore[attr-defined]
        return list(await store.list_ids("Patient"))  # ids from the index alone: no patient record is read

    async def _ds_fetch(self, machine: SyncMachine) -> DeviceSetOffer | None:
        try:
            res = await self._http("GET", f"/api/sync/device-set?deviceId={machine.device_id}", "")  # type: ignore[attr-defined]
            res = res.to_py() if hasattr(res, "to_py") else res
            status, text = int(res[0]), str(res[1] or "")
        except Exception:  # noqa: BLE001 - offline or an old server: the device keeps what it has
            return None
        if status != 200:
            return None
        try:
            return DeviceSetOffer.from_json(json.loads(text))
        except (ProtocolError, ValueError):
            return None

    async def _ds_demand_load(self) -> None:
        """The patients opened on demand, kept sealed across restarts (else the next plan could evict them)."""
        if self._ds_demand_loaded:
            return
        kept = await self._meta_open(PINS_TYPE, M_DEMAND)  # type: ignore[attr-defined]
        ids = kept.get("patients") if isinstance(kept, dict) else None
        self._ds_demand = self._ds_demand | frozenset(str(p) for p in ids or [] if isinstance(p, str))
        self._ds_demand_loaded = True

    async def _ds_stored_bytes(self) -> int | None:
        """What this browser says its IndexedDB databases use (``navigator.storage.estimate().usageDetails``,
        Chromium), or None: the total ``usage`` would count the app's cached runtime too, so it is not used."""
        try:
            from js import navigator  # type: ignore[import-not-found]  # noqa: PLC0415 - only inside Pyodide

            est = await navigator.storage.estimate()
            details = getattr(est, "usageDetails", None)
            value = getattr(details, "indexedDB", None) if details is not None else None
            return int(value) if isinstance(value, int | float) and value > 0 else None
        except Exception:  # noqa: BLE001 - no storage API here (CPython, an older browser): sizes stay estimates
            return None

    async def _ds_plan_now(self, machine: SyncMachine, offer: DeviceSetOffer) -> DevicePlan:
        await self._ds_demand_load()
        pending, conflicted = self._ds_unsynced(machine)
        return plan_device_set(offer, held_now=await self._ds_held_now(), pending=pending, conflicted=conflicted,
                               on_demand=self._ds_demand, stored_bytes=await self._ds_stored_bytes())

    async def _ds_post(self, machine: SyncMachine, ids: list[str], plan: DevicePlan) -> bool:
        body = json.dumps({"deviceId": machine.device_id, "patients": ids, "modelVersion": plan.model_version,
                           "pinned": sum(1 for h in plan.held if h.pinned)}).encode()
        status, _text, _ = await self._post("/api/sync/device-set", body)  # type: ignore[attr-defined]
        if status == 200:
            store: Any = self.store  # type: ignore[attr-defined]
            await store.meta_put(M_SET_POSTED, "1")
        return bool(status == 200)

    async def _device_set_sync(self, machine: SyncMachine, *, now: float, first: bool, force: bool = False) -> str:
        """Before a pull: plan and tell the server. Returns ``"pins"`` when only the pinned patients were asked
        for (a first sync: the chart is usable before the rest — the prefetch tail — arrives; the caller pulls,
        then calls again with ``force``), ``"set"`` when the whole plan was sent, ``""`` when nothing changed."""
        if not (first or force) and now < self._ds_checked + REPLAN_S:
            return ""
        offer = await self._ds_fetch(machine)
        if offer is None:
            return ""
        self._ds_checked = now
        self._ds_offer = offer
        plan = await self._ds_plan_now(machine, offer)  # not kept: one entry per patient in scope
        store: Any = self.store  # type: ignore[attr-defined]
        if first and not force and any(not h.pinned for h in plan.held):
            # Pins first, even when everything fits: the chart is usable before the prefetch tail arrives.
            pins = sorted(h.patient_id for h in plan.held if h.pinned)
            return "pins" if await self._ds_post(machine, pins, plan) else ""
        if not plan.not_held and not plan.evict and not await store.meta_get(M_SET_POSTED):
            return ""  # everything fits and the server was never told otherwise: it sends the whole scope
        ok = await self._ds_post(machine, plan.patient_ids, plan)
        if ok and plan.evict:
            self._emit({"type": "device-set", "evicted": len(plan.evict)})  # type: ignore[attr-defined]
        return "set" if ok else ""

    async def device_set(self, online: bool = True, limit: int = PATIENT_PAGE) -> dict[str, Any]:
        """The "On this device" screen: fresh from the server when online, else the last plan of the session.

        The counts and the space cover every patient; ``rows`` lists the first ``limit`` (``rowsTotal`` says how
        many there are: the screen's "Show more" asks a larger limit), and only their names are decrypted."""
        machine: SyncMachine = self._require_unlocked()  # type: ignore[attr-defined]
        storage: sm.StorageMode | None = getattr(self, "_storage_mode", None)
        if storage is not None and sm.keeps_nothing(storage.mode):
            return online_only_device_view()
        offer = await self._ds_fetch(machine) if online else None
        if offer is not None:
            self._ds_offer = offer
        offer = offer or self._ds_offer
        held_now = await self._ds_held_now()
        if offer is None:  # offline since start-up: what is held, without the server's reasons
            offer = DeviceSetOffer(0, "", ())
        plan = await self._ds_plan_now(machine, offer)
        if not offer.candidates:
            plan = DevicePlan(plan.held, (), 0, 0, 0, "")
        limit = max(1, int(limit))
        keep = {h.patient_id for h in plan.held}
        leaving = [p for p in held_now if p not in keep]
        shown = [h.patient_id for h in plan.held[:limit]] + leaving[:max(0, limit - len(plan.held))]
        held_set = set(held_now)
        opened = await self._resources([("Patient", p) for p in shown if p in held_set])  # type: ignore[attr-defined]
        names = {str(p["id"]): str(cv.patient_summary(p)["display"]) for p in opened}
        view = device_set_view(plan, names=names, online=online, limit=limit)
        extra = [{"patientId": p, "name": names.get(p, "Patient"), "why": "Downloaded earlier (will be removed "
                  "at the next sync)" if offer.candidates else "Downloaded earlier", "pinned": False,
                  "unsynced": False, "size": ""} for p in leaving[:max(0, limit - len(plan.held))]]
        view["rows"] = [*view["rows"], *extra]
        view["rowsTotal"] = len(plan.held) + len(leaving)
        view["heldCount"] = len(held_now)
        if not offer.candidates:
            view["summary"] = f"{len(held_now)} patient{'s' if len(held_now) != 1 else ''} on this device"
            view["space"] = "Connect to the server to see the storage budget"
            view["spaceHow"] = ""
            view["notHeld"] = "The reasons are shown when this device is online."
        return view

    async def fetch_on_demand(self, patient_id: str) -> dict[str, Any]:
        """A patient in scope but not on the device: pin it for this session, tell the server, pull it."""
        machine: SyncMachine = self._require_unlocked()  # type: ignore[attr-defined]
        await self._ds_demand_load()
        self._ds_demand = self._ds_demand | {str(patient_id)}
        await self._meta_seal(PINS_TYPE, M_DEMAND, {"patients": sorted(self._ds_demand)})  # type: ignore[attr-defined]
        await self._device_set_sync(machine, now=0.0, first=False, force=True)
        await self.sync_once()  # type: ignore[attr-defined]
        return {"held": str(patient_id) in await self._ds_held_now()}

    async def search_server(self, text: str) -> dict[str, Any]:
        """Patients of the user's scope NOT on this device whose name matches ``text`` (online only): the
        server's audited FHIR search, cut to the last device-set offer (the scope). Names stay in memory."""
        from urllib.parse import quote  # noqa: PLC0415

        machine: SyncMachine = self._require_unlocked()  # type: ignore[attr-defined]
        text = (text or "").strip()
        if len(text) < 2:
            return {"results": []}
        offer = self._ds_offer or await self._ds_fetch(machine)
        if offer is None:
            return {"results": [], "message": "The server cannot be reached: try again when online."}
        self._ds_offer = offer
        scope = {c.patient_id for c in offer.candidates}
        held = set(await self._ds_held_now())
        try:
            res = await self._http("GET", f"/fhir/R4/Patient?name={quote(text)}&_count=50", "")  # type: ignore[attr-defined]
            res = res.to_py() if hasattr(res, "to_py") else res
            status, body = int(res[0]), str(res[1] or "")
        except Exception:  # noqa: BLE001 - offline: nothing to offer
            return {"results": [], "message": "The server cannot be reached: try again when online."}
        if status != 200:
            return {"results": [], "message": "The server did not answer the search: try again later."}
        try:
            entries = json.loads(body).get("entry") or []
        except (ValueError, AttributeError):
            entries = []
        out = []
        for e in entries:
            p = (e or {}).get("resource") or {}
            if p.get("resourceType") == "Patient" and p.get("id") in scope and p.get("id") not in held:
                s = cv.patient_summary(p)
                out.append({"id": s["id"], "display": s["display"], "birthDate": s["birthDate"], "mrn": s["mrn"]})
        return {"results": sorted(out, key=lambda r: str(r["display"]))}
