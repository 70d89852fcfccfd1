"""The PWA's chart calls added by issue 18 (Pyodide): the role's allowed actions and the refused-changes list.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp`, kept in its own module so the app file only
gains a base class and one-line hooks (``_install`` loads the permissions, ``_edit`` asks them, ``chart``
reports them). Every rule lives in :mod:`pyclient.views`; this file gathers outbox entries and records the
user's decisions (a discard is audited; a retry is a new queued edit).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from pyclient import integrity as ig
from pyclient.errors import AppError, ValidationFailed
from pyclient.sync import OutboxEntry
from pyclient.views import chart_forms as cf
from pyclient.views import fullchart as fc
from pyclient.views import permissions as cp
from pyclient.views import rejected as rj
from pyclient.views.confirm import allergy_change

M_PERMISSIONS = "auth.permissions"  # the server's matrix for this user (no PHI); wiped with the device


def _rejected_input(e: OutboxEntry) -> rj.Rejected:
    return rj.Rejected(entry_id=e.entry_id, op=e.op, resource_type=e.resource_type, id=e.id, resource=e.resource,
                       created=e.base_version is None, reason=e.last_error or "")


def _patient(e: OutboxEntry) -> str | None:
    if e.resource_type == "Patient":
        return e.id
    src = e.resource or e.server_resource or e.base_resource or {}
    return ig.patient_ref(src)


class ChartMixin:
    """Permissions and refused changes; relies on BrowserApp's store, machine, commit, audit and errors."""

    _perms: cp.Permissions | None = None

    # -- the role's allowed actions (server matrix, shipped at sign-in) ----------------------------

    async def set_permissions(self, permissions: Any) -> dict[str, Any]:
        """Keep the permissions the sign-in answer carried (JS passes them on; unknown -> everything offered)."""
        parsed = cp.parse_permissions(permissions)
        self._perms = parsed
        store: Any = self.store  # type: ignore[attr-defined]
        await store.meta_put(M_PERMISSIONS, None if parsed is None else
                             json.dumps({k: sorted(v) for k, v in parsed.items()}))
        return {"actions": cp.chart_actions(parsed)}

    async def _load_permissions(self) -> None:
        store: Any = self.store  # type: ignore[attr-defined]
        raw = await store.meta_get(M_PERMISSIONS)
        self._perms = cp.parse_permissions(json.loads(raw)) if raw else None

    def _check_may(self, resource_type: str, action: str) -> None:
        """Refuse, in words, a write the role does not allow (before it is queued, never hours later)."""
        if not cp.may(self._perms, resource_type, action):
            raise AppError(cp.not_allowed_message(resource_type, action), kind="forbidden")

    def allergy_change_question(self, substance: str, field: str, old: str, new: str) -> dict[str, str]:
        """The confirmation a one-tap allergy change asks first (pyclient.views.confirm)."""
        return allergy_change(substance, field, old, new)

    def _chart_actions(self) -> dict[str, bool]:
        return cp.chart_actions(self._perms)

    # -- refused changes -----------------------------------------------------------------------------

    def _rejected_entries(self) -> list[OutboxEntry]:
        machine = self._require_unlocked()  # type: ignore[attr-defined]
        return sorted((e for e in machine.entries if e.state == "rejected"), key=lambda e: e.seq)

    def rejected(self, patient_id: str | None = None) -> list[dict[str, Any]]:
        """Every change the server refused (optionally: of one patient), in words, with what can be done."""
        entries = self._rejected_entries()
        owners = {e.entry_id: _patient(e) for e in entries}
        if patient_id is not None:
            entries = [e for e in entries if owners[e.entry_id] == patient_id]
        return rj.rejected_view([_rejected_input(e) for e in entries], self._perms, owners)

    def _rejected_entry(self, entry_id: str) -> OutboxEntry:
        entry = next((e for e in self._rejected_entries() if e.entry_id == entry_id), None)
        if entry is None:
            raise AppError("This change was already sent again or discarded.", kind="not_found")
        return entry

    async def discard_rejected(self, entry_id: str) -> dict[str, Any]:
        """The user gives up a refused change: it leaves the device, and the audit trail says so."""
        machine = self._require_writable()  # type: ignore[attr-defined]
        entry = self._rejected_entry(entry_id)
        effects = machine.dismiss_rejected(entry_id=entry_id)
        await self._commit(effects)  # type: ignore[attr-defined]
        pid = _patient(entry)
        await self._audit_quietly("delete", entry.resource_type, entry.id, [pid] if pid else [],  # type: ignore[attr-defined]
                                  detail={"discarded": "change refused by the server", "mutation": entry_id})
        self._emit({"type": "changed", "resourceType": entry.resource_type, "id": entry.id})  # type: ignore[attr-defined]
        return {"status": self.status()}  # type: ignore[attr-defined]

    async def retry_rejected(self, entry_id: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a refused change again, with the user's corrections (validated here first). The refused entry
        and the new one are written in one transaction: the change is never in neither place."""
        machine = self._require_writable()  # type: ignore[attr-defined]
        entry = self._rejected_entry(entry_id)
        item = _rejected_input(entry)
        action = "create" if item.created else "update"
        self._check_may(entry.resource_type, action)
        resource = dict(entry.resource or {})
        if values:
            fixed, errors = rj.apply_fix(item, values, today=date.today().isoformat())
            if errors or fixed is None:
                raise ValidationFailed("Please correct the highlighted fields.", fields=errors)
            resource = fixed
        resource.pop("meta", None)
        effects = machine.dismiss_rejected(entry_id=entry_id)
        effects += machine.record_local_edit(
            now=time.time(), mutation_id=str(uuid.uuid4()), resource_type=entry.resource_type, id=entry.id,
            resource=resource, base_version=entry.server_version if not entry.server_deleted else None,
            base_resource=entry.server_resource)
        try:
            await self._commit(effects)  # type: ignore[attr-defined]
        except Exception:
            await self._reload_machine()  # type: ignore[attr-defined]
            raise
        pid = _patient(entry)
        await self._audit_quietly(action, entry.resource_type, entry.id, [pid] if pid else [],  # type: ignore[attr-defined]
                                  detail={"retry": "change refused by the server", "mutation": entry_id})
        self._emit({"type": "changed", "resourceType": entry.resource_type, "id": entry.id})  # type: ignore[attr-defined]
        return {"status": self.status()}  # type: ignore[attr-defined]

    async def sign_out_warning(self) -> dict[str, Any]:
        """The sign-out dialog's words, counting every change that has not reached the server."""
        machine = self.machine  # type: ignore[attr-defined]
        if machine is None:  # locked ("Forgot PIN"): count the sealed entries
            unsent = len(await self.store.outbox_list())  # type: ignore[attr-defined]
            return {"unsent": unsent, "message": rj.sign_out_warning_sealed(unsent)}
        states = [e.state for e in machine.entries]
        pending = sum(1 for s in states if s in ("pending", "in_flight"))
        return {"unsent": len(states),
                "message": rj.sign_out_warning(pending, states.count("rejected"), states.count("conflicted"))}

    # -- the full chart (issue 18 item 5) ------------------------------------------------------------

    def _full_chart(self, patient: Mapping[str, Any], resources: list[dict[str, Any]], pending: Any,
                    ) -> dict[str, Any]:
        """Banner, flags, trends, grouped reports, problems, notes' authors (pyclient.views.fullchart)."""
        conditions = [r for r in resources if r.get("resourceType") == "Condition"]
        return {**fc.full_chart(patient, resources, pending, today=date.today().isoformat()),
                "problemList": cf.problem_rows(conditions, pending),
                "commonProblems": [name for _c, name in cf.COMMON_PROBLEMS]}

    def _vitals_time(self, values: Mapping[str, Any], now: str) -> str:
        """When the vitals were taken (the form's "taken at"; default now), checked before anything is queued."""
        try:
            offset = int(values.get("tz_offset") or 0)
        except (TypeError, ValueError):
            offset = 0
        return cf.vitals_effective(values.get("taken_at"), now=now, tz_offset_min=offset)

    async def add_problem(self, patient_id: str, text: str, onset: str = "") -> dict[str, Any]:
        """Queue a new problem (Condition) for this patient, coded when the pick list knows it."""
        self._require_writable()  # type: ignore[attr-defined]
        self._check_may("Condition", "create")
        patient = await self._current("Patient", patient_id)  # type: ignore[attr-defined]
        rid = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        res = cf.problem_new(patient_id, id=rid, text=text, onset=onset, today=date.today().isoformat(), now=now,
                             author=self._author(), birth_date=str(patient.get("birthDate") or ""))  # type: ignore[attr-defined]
        out: dict[str, Any] = await self._edit("Condition", rid, res, create=True)  # type: ignore[attr-defined]
        return out

    async def resolve_problem(self, condition_id: str, abatement: str = "") -> dict[str, Any]:
        """Resolve a problem: clinicalStatus resolved, abatementDateTime (a new version, queued)."""
        self._require_writable()  # type: ignore[attr-defined]
        self._check_may("Condition", "update")
        res = cf.problem_resolve(await self._current("Condition", condition_id),  # type: ignore[attr-defined]
                                 abatement=abatement, today=date.today().isoformat())
        out: dict[str, Any] = await self._edit("Condition", condition_id, res, create=False)  # type: ignore[attr-defined]
        return out

    async def record_no_known_allergies(self, patient_id: str) -> dict[str, Any]:
        """Record that the patient was asked and has no known allergies (not the same as never asked)."""
        self._require_writable()  # type: ignore[attr-defined]
        self._check_may("AllergyIntolerance", "create")
        resources = await self._chart_resources(patient_id)  # type: ignore[attr-defined]
        state = str(fc.allergy_banner(resources)["state"])
        rid = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        res = cf.no_known_allergies(patient_id, id=rid, banner_state=state, now=now,
                                    author=self._author())  # type: ignore[attr-defined]
        out: dict[str, Any] = await self._edit("AllergyIntolerance", rid, res, create=True)  # type: ignore[attr-defined]
        return out
