"""BrowserApp's part for break-the-glass (issue 18 item 7): lookup, request, banner and removal at the end.

The rules (reason, lookup, words, which grants still run) are in ``pyclient.views.break_glass``; this mixin
talks to ``/api/access/break-glass`` and keeps the device's list of grants sealed in the meta store. The
records of a granted patient arrive through the ordinary pull (the server's sync scope includes active
grants). When a grant ends the device removes them itself: at the next sweep after the clock passes its
expiry, or when the server no longer lists it (ended early or revoked), and the next pull's drop list
removes anything left. Online only: the server decides every grant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pyclient import outcome
from pyclient.chart import DateOrder
from pyclient.errors import AppError, ValidationFailed
from pyclient.sync import Effect, RecordDelete
from pyclient.views import break_glass as bg

from .indexeddb_store import js_to_py

GRANTS_TYPE = "EmergencyGrants"  # envelope type of the sealed grant list (bound into its AAD)
M_GRANTS = "emergency.grants"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class EmergencyMixin:
    """Relies on BrowserApp's ``_post``, ``_http``, ``_meta_seal``/``_meta_open`` (DraftsMixin), ``store``,
    ``machine``, ``_commit``, ``_patient_keys``, ``_perms`` (ChartMixin) and ``_require_unlocked``."""

    def emergency_allowed(self) -> bool:
        """Whether to show the emergency-access control: only roles the server says may break the glass."""
        perms = getattr(self, "_perms", None)
        return perms is not None and bg.PERMISSION[1] in perms.get(bg.PERMISSION[0], frozenset())

    def emergency_intro(self, online: bool = True) -> dict[str, Any]:
        """What the emergency-access screen says first (and, offline, that it needs a connection)."""
        if not self.emergency_allowed():
            return {"allowed": False, "message": bg.NOT_ALLOWED, "offline": None}
        return {"allowed": True, "message": bg.INTRO, "offline": None if online else bg.ONLINE_ONLY}

    def _emergency_check(self) -> None:
        self._require_unlocked()  # type: ignore[attr-defined]
        if not self.emergency_allowed():
            raise AppError(bg.NOT_ALLOWED, kind="forbidden")

    async def _emergency_post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            status, text, _ = await self._post(path, json.dumps(body).encode())  # type: ignore[attr-defined]
        except Exception as exc:
            if type(exc).__name__ == "DeviceRevoked":
                raise
            raise AppError(bg.ONLINE_ONLY, kind="offline") from None
        if status == 0:
            raise AppError(bg.ONLINE_ONLY, kind="offline")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        if status in (401,):
            raise AppError("Your session has ended. Sign in again to use emergency access.", kind="auth")
        if status >= 400:
            raise AppError(outcome.text(parsed, "The server refused the request. Try again."), kind="refused")
        return status, parsed

    async def emergency_lookup(self, family: str = "", birth_date: str = "", mrn: str = "",
                               date_order: DateOrder = "mdy") -> dict[str, Any]:
        """Ask the server whether one patient outside the care team matches (the answer names nobody)."""
        self._emergency_check()
        query = bg.lookup_query(family=family, birth_date=birth_date, mrn=mrn, date_order=date_order)
        _status, body = await self._emergency_post("/api/access/break-glass/lookup", query)
        matches = int((body or {}).get("matches") or 0)
        token = (body or {}).get("patientId") if matches == 1 else None
        return {"matches": matches, "token": token, "message": bg.lookup_words(matches)}

    async def emergency_request(self, token: str, reason: str) -> dict[str, Any]:
        """Request emergency access (the server records it as a security alert); keep the grant, sealed."""
        self._emergency_check()
        problem = bg.reason_problem(reason)
        if problem:
            raise ValidationFailed(problem, fields={"reason": problem})
        machine = self._require_unlocked()  # type: ignore[attr-defined]
        _status, body = await self._emergency_post("/api/access/break-glass", {
            "patientId": token, "reason": reason.strip(), "deviceId": machine.device_id})
        grant = {"id": int(body["id"]), "patientId": str(body["patientId"]), "expiresS": _epoch(str(body["expires"]))}
        grants = [g for g in await self._grants() if g.get("id") != grant["id"]]
        await self._meta_seal(GRANTS_TYPE, M_GRANTS, {"grants": [*grants, grant]})  # type: ignore[attr-defined]
        return {"patientId": grant["patientId"], "expiresS": grant["expiresS"]}

    async def _grants(self) -> list[dict[str, Any]]:
        kept = await self._meta_open(GRANTS_TYPE, M_GRANTS)  # type: ignore[attr-defined]
        return list((kept or {}).get("grants") or [])

    async def emergency_banner(self, patient_id: str, tz_offset_min: int = 0) -> dict[str, Any] | None:
        """The banner for this patient's screens while a grant lasts (None: not an emergency patient)."""
        if getattr(self, "_keyring", None) is None:
            return None
        now = time.time()
        live, _ended = bg.active_grants(await self._grants(), now)
        mine = [g for g in live if g.get("patientId") == patient_id]
        if not mine:
            return None
        expires = max(float(g["expiresS"]) for g in mine)
        local = datetime.fromtimestamp(expires, UTC) - timedelta(minutes=int(tz_offset_min))
        return {"message": bg.banner_words(expires_s=expires, now_s=now, local_time=local.strftime("%H:%M")),
                "expiresS": expires}

    async def emergency_sweep(self, online: bool = False, ended: Sequence[int] = ()) -> dict[str, Any]:
        """Remove from the device the patients whose grant has ended (by the clock, or per the server).
        ``ended``: grant ids the server pushed as ended (``emergency-ended`` on the sync socket); ``online``:
        also ask the server's list of running grants (the 15 s fallback)."""
        if getattr(self, "_keyring", None) is None:
            return {"removed": [], "message": ""}
        grants = await self._grants()
        if not grants:
            return {"removed": [], "message": ""}
        told = {int(i) for i in ended}  # JSON numbers
        grants = [{**g, "ended": True} if int(g["id"]) in told else g for g in grants]
        if online:
            try:
                res = await self._http("GET", "/api/access/break-glass", "")  # type: ignore[attr-defined]

                res = js_to_py(res)
                if int(res[0]) == 200:
                    running = {int(g["id"]) for g in json.loads(str(res[1]))}
                    grants = [g if int(g["id"]) in running else {**g, "ended": True} for g in grants]
            except Exception:  # noqa: BLE001, S110 - offline: the clock still ends grants
                pass
        live, gone = bg.active_grants(grants, time.time())
        removed = []
        for pid in gone:
            await self._purge_patient(pid)
            removed.append(pid)
        if len(live) != len(grants):
            await self._meta_seal(GRANTS_TYPE, M_GRANTS, {"grants": live} if live else None)  # type: ignore[attr-defined]
        return {"removed": removed, "message": bg.removed_words(len(removed)) if removed else ""}

    async def _purge_patient(self, patient_id: str) -> None:
        """Every record of ``patient_id``'s compartment leaves the device (a pending edit of ours stays)."""
        machine = self._require_unlocked()  # type: ignore[attr-defined]
        keys = await self._patient_keys(patient_id)  # type: ignore[attr-defined]
        effects: list[Effect] = [RecordDelete(t, i) for t, i in keys if not machine.has_pending_edit(t, i)]
        if effects:
            await self._commit(effects)  # type: ignore[attr-defined]
