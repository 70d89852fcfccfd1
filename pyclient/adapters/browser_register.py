"""The PWA's registration calls (issue 18 items 1 and 6), a mixin of :class:`browser_app.BrowserApp`.

Registering a walk-in works offline: the MRN comes from this device's id and a counter kept in IndexedDB
(reserved by compare-and-swap, so two tabs never take the same number), possible duplicates are looked up
in the blind index before anything is saved, and the new Patient goes through the ordinary sealed outbox.
The server puts the registering clinician on the patient's care team when it receives it.

Also the signed-in user's Practitioner (from ``/api/auth/me``), so authors are written as references.
Every rule is in :mod:`pyclient.registration`, :mod:`pyclient.authors` and :mod:`pyclient.views.register`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

from pyclient import authors
from pyclient import blindindex as bi
from pyclient import choices as ch
from pyclient import registration as reg
from pyclient.chart import DateOrder, patient_summary
from pyclient.errors import AppError
from pyclient.keys import MAX_CAS_RETRIES
from pyclient.views import permissions as cp
from pyclient.views.register import duplicate_warning, registered_message

from .indexeddb_store import js_to_py

M_COUNTER = "registration.counter"  # how many patients this device registered (no PHI)
M_PRACTITIONER = "auth.practitioner"  # {"id", "display"} of the signed-in user's Practitioner (no patient data)
M_CLINICIANS = "auth.clinicians"  # front desk: [{"id", "display"}] the registration form offers (no patient data)


class RegisterMixin:
    """Patient registration and the user's Practitioner; relies on BrowserApp's store, index, edit and audit."""

    _practitioner: dict[str, str] | None = None
    _clinicians: list[dict[str, str]] | None = None

    # -- who is signed in (authors as references) -----------------------------------------------------

    async def set_practitioner(self, practitioner: Any, clinicians: Any = None) -> dict[str, Any]:
        """Keep the signed-in user's Practitioner from the sign-in answer (``{"id", "display"}`` or null), and
        for the front desk the clinicians a registration may name as responsible (``clinicians``, or null)."""
        value: dict[str, str] | None = None
        if isinstance(practitioner, Mapping) and isinstance(practitioner.get("id"), str) and practitioner["id"]:
            value = {"id": str(practitioner["id"]), "display": str(practitioner.get("display") or "")}
        self._practitioner = value
        self._clinicians = reg.clinician_choices(clinicians)
        store: Any = self.store  # type: ignore[attr-defined]
        await store.meta_put(M_PRACTITIONER, None if value is None else json.dumps(value))
        await store.meta_put(M_CLINICIANS, None if self._clinicians is None else json.dumps(self._clinicians))
        return {"practitioner": value}

    async def _load_practitioner(self) -> None:
        store: Any = self.store  # type: ignore[attr-defined]
        raw, listed = await store.meta_get(M_PRACTITIONER), await store.meta_get(M_CLINICIANS)
        try:
            loaded = json.loads(raw) if raw else None
            offered = json.loads(listed) if listed else None
        except ValueError:
            loaded = offered = None
        self._practitioner = loaded if isinstance(loaded, dict) else None
        self._clinicians = reg.clinician_choices(offered)

    def register_form(self) -> dict[str, Any]:
        """What the registration form offers beyond the fixed fields: the responsible-clinician choices (front
        desk only; None = not asked, the registering clinician joins the care team)."""
        return {"responsible": self._clinicians or None}

    def _author_ref(self) -> dict[str, str]:
        p = self._practitioner or {}
        username = str(getattr(self, "_username", None) or "")
        return authors.author_reference(p.get("id"), p.get("display") or username, username)

    # -- registration ------------------------------------------------------------------------------------

    def register_allowed(self) -> dict[str, Any]:
        """Whether to offer "Register patient" (the role's matrix: Patient create)."""
        perms = getattr(self, "_perms", None)
        return {"allowed": cp.may(perms, "Patient", "create")}

    def form_choices(self) -> dict[str, list[list[str]]]:
        """The pick lists of a form that opens without a chart (registration): pyclient.choices."""
        return ch.form_choices()

    def _draft(self, values: Mapping[str, Any], date_order: str, mrn: str, rid: str) -> dict[str, Any]:
        order: DateOrder = "mdy" if date_order == "mdy" else "ymd" if date_order == "ymd" else "dmy"
        return reg.patient_new(values, id=rid, mrn=mrn, today=date.today().isoformat(), date_order=order,
                               clinicians=self._clinicians)

    async def _duplicates(self, patient: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Possible duplicates on this device, found through the blind index and re-checked on the records."""
        index = self._index  # type: ignore[attr-defined]
        store: Any = self.store  # type: ignore[attr-defined]
        assert index is not None
        queries = reg.duplicate_queries(patient)
        found: set[tuple[str, str]] = set()
        pair: set[tuple[str, str]] | None = None
        for n, (kind, text) in enumerate(queries):
            hits: set[tuple[str, str]] | None = None
            for tok in bi.tokens_for_query(index, kind, text):
                got = set(await store.lookup_token(tok, "Patient"))
                hits = got if hits is None else hits & got
            hits = hits or set()
            if kind in ("name", "birthdate") and n < 2:
                pair = hits if pair is None else pair & hits  # name AND birth date
            else:
                found |= hits
        found |= pair or set()
        candidates = await self._resources(sorted(found))  # type: ignore[attr-defined]
        return reg.duplicate_matches(patient, candidates)

    async def register_check(self, values: Mapping[str, Any], date_order: str = "dmy") -> dict[str, Any]:
        """Validate the form and look for the same person on this device; nothing is saved."""
        self._require_writable()  # type: ignore[attr-defined]
        self._check_may("Patient", "create")  # type: ignore[attr-defined]
        device = str(self.machine.device_id)  # type: ignore[attr-defined]
        draft = self._draft(values, date_order, reg.local_mrn(device, 1), "draft")
        matches = await self._duplicates(draft)
        self._audit_later("search", "Patient", "", [str(m["id"]) for m in matches],  # type: ignore[attr-defined]
                          detail={"kind": "duplicate-check", "results": len(matches)})
        return {"warning": duplicate_warning(matches)}

    async def _next_counter(self) -> int:
        """Reserve this device's next registration number (compare-and-swap: tabs never share one)."""
        idb: Any = self._idb  # type: ignore[attr-defined]
        store: Any = self.store  # type: ignore[attr-defined]
        from pyodide.ffi import jsnull  # type: ignore[import-not-found]  # noqa: PLC0415 - browser only

        current = await store.meta_get(M_COUNTER)
        for _ in range(MAX_CAS_RETRIES):  # the nonce lease's bound: 8 losses in a row is a holder gone wrong
            nxt = int(current or 0) + 1
            # "absent" must reach idb.metaCas as JS null (a Python None would arrive as undefined, never equal)
            res = js_to_py(await idb.metaCas(M_COUNTER, jsnull if current is None else current, str(nxt)))
            if res[0]:
                return nxt
            current = None if res[1] is None else str(res[1])
        raise AppError("Could not reserve a new MRN: another OmniCare tab keeps registering. Try again.")

    async def register_patient(self, values: Mapping[str, Any], date_order: str = "dmy",
                               confirmed: bool = False, online: bool = True) -> dict[str, Any]:
        """Register a new patient: validated, checked for duplicates (unless the clinician confirmed it is a
        different person), given the next local MRN and queued through the sealed outbox."""
        machine = self._require_writable()  # type: ignore[attr-defined]
        self._check_may("Patient", "create")  # type: ignore[attr-defined]
        device = str(machine.device_id)
        draft = self._draft(values, date_order, reg.local_mrn(device, 1), "draft")  # the form's errors first
        if not confirmed:
            warning = duplicate_warning(await self._duplicates(draft))
            if warning is not None:
                return {"saved": False, "warning": warning}
        rid = str(uuid.uuid4())
        mrn = reg.local_mrn(device, await self._next_counter())
        patient = self._draft(values, date_order, mrn, rid)
        await self._edit("Patient", rid, patient, create=True)  # type: ignore[attr-defined]
        s = patient_summary(patient)
        return {"saved": True, "id": rid, "mrn": mrn, "message": registered_message(str(s["display"]), mrn, online),
                "status": self.status()}  # type: ignore[attr-defined]
