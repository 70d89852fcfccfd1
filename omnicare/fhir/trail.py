"""Auditing API interactions: one helper that every FHIR REST and sync endpoint wraps its work in.

``with audited(user=..., action="read", resource_type="Observation", resource_id=...) as note:`` runs the
body in a database transaction and appends ONE audit event as the last statement of that transaction, with
the patients the body put in ``note.patients`` (a search or pull page: every patient on the page, one event
per page, not one per resource). Consequences:

* Writes fail closed: if the audit event cannot be stored, ``AuditUnavailable`` (503 OperationOutcome)
  propagates and the write rolls back with it: nothing is written that is not audited.
* Reads fail closed too (the HIPAA-safe default): a read whose access cannot be recorded is answered 503,
  not with the data.
* Denials are audited: a ``Forbidden`` raised in the body rolls the transaction back, and the ``denied``
  event is then appended *outside* it (so it survives), before the 403 propagates. If even that fails the
  caller gets 503 (still no data).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from omnicare.access import services as access
from omnicare.audit.services import NewEvent, audit_record
from omnicare.core.errors import Forbidden

from .models import ResourcePatient
from .search import compartment_patients

#: Most resource keys listed in one event's detail (a 1,000-row pull page lists its patients, always all).
MAX_DETAIL_RESOURCES = 200


@dataclass
class AuditNote:
    """What the audited body learned: which patients (and resources) it touched, and extra detail."""

    patients: set[str] = field(default_factory=set)
    resources: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    resource_id: str = ""
    user: Any = None
    skip: bool = False  # nothing to record (e.g. a no-op); the body decides

    def touch(self, *, resource_type: str, resource_id: str, patient_ids: Iterable[str] = ()) -> None:
        self.patients.update(str(p) for p in patient_ids if p)
        if len(self.resources) < MAX_DETAIL_RESOURCES:
            self.resources.append(f"{resource_type}/{resource_id}")


def _detail(note: AuditNote, extra: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(extra or {})
    out.update(note.detail)
    if note.resources:
        out["resources"] = note.resources
    return out


@contextlib.contextmanager
def audited(
    *,
    user: Any,
    action: str,
    resource_type: str = "",
    resource_id: str = "",
    patient_ids: Iterable[str] = (),
    device_id: str | None = None,
    purpose: str = "TREAT",
    detail: dict[str, Any] | None = None,
    denied_patients: Any = None,
    atomic: bool = True,
) -> Iterator[AuditNote]:
    """Run the body in a transaction that ends with its audit event (see the module docstring).

    ``denied_patients``: optional callable returning the patient ids to record on a denial (the body
    did not get far enough to know them, e.g. a read refused by ``access_check``).
    ``atomic=False`` is for bodies that write nothing (read, vread, search, history): the event is then one
    autocommitted INSERT after the body, still before any data leaves (a failure is 503, no data), and the
    request saves the BEGIN and COMMIT round trips. Under READ COMMITTED a transaction gave such a body no
    common snapshot anyway.
    """
    note = AuditNote(patients={str(p) for p in patient_ids if p}, resource_id=resource_id, user=user)
    try:
        # visible_patients_cache: the access check and the audit purpose share one scope and grant lookup.
        with transaction.atomic() if atomic else contextlib.nullcontext(), access.visible_patients_cache():
            yield note
            if not note.skip:
                audit_record(
                    user=user, action=action, resource_type=resource_type, resource_id=note.resource_id,
                    patient_ids=sorted(note.patients), device_id=device_id or None,
                    purpose=_purpose(user, note.patients, purpose),
                    detail=_detail(note, detail),
                    savepoint=False,  # the last statement of this block: a failure rolls the block back whole
                )
    except Forbidden as exc:
        patients = set(note.patients)
        if denied_patients is not None:
            with contextlib.suppress(Exception):
                patients |= {str(p) for p in denied_patients()}
        audit_record(
            user=user, action=action, resource_type=resource_type, resource_id=note.resource_id,
            patient_ids=sorted(patients), outcome="denied", device_id=device_id or None, purpose=purpose,
            detail={**_detail(note, detail), "reason": exc.diagnostics[:200]},
        )
        raise


def _purpose(user: Any, patients: set[str], purpose: str) -> str:
    """Access that only a break-the-glass grant allows is recorded as emergency treatment (ETREAT)."""
    if purpose != "TREAT" or not patients:
        return purpose
    granted = access.patient_ids_granted(user=user)
    if granted and (patients & granted) - access.care_team_patient_ids(user=user):
        return "ETREAT"
    return purpose


def compartment_of(resource_type: str, resource_id: str) -> list[str]:
    """The stored patient compartment of a resource (for recording a denial), [] if unknown."""
    return list(
        ResourcePatient.objects.filter(
            resource__resource_type=resource_type, resource__resource_id=resource_id
        ).values_list("patient_id", flat=True)
    )


def _entry_action(method: str, url: str) -> tuple[str, str, str]:
    """(action, resource type, id) of one Bundle entry, named as the equivalent single request is audited."""
    from urllib.parse import urlsplit

    parts = [p for p in urlsplit(url).path.split("/") if p]
    rtype = parts[0] if parts else ""
    rid = parts[1] if len(parts) > 1 else ""
    if method == "GET":
        action = "search" if not rid else ("vread" if len(parts) == 4 else "read")
    else:
        action = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower()[:20])
    return action, rtype[:64], rid[:128]


def bundle_entry_events(*, user: Any, bundle: Any, response: dict[str, Any], kind: str) -> list[Any]:
    """One audit event per Bundle entry, like the single request it stands for (patients, denials).

    A batch that searched 42 Observations lists those patients on the search entry's event; an entry the
    server refused is a ``denied`` event naming the patients it was about.
    """
    requests = bundle.get("entry") if isinstance(bundle, dict) else None
    answers = response.get("entry") or []
    events = []
    for i, answer in enumerate(answers):
        raw = requests[i] if isinstance(requests, list) and i < len(requests) and isinstance(requests[i], dict) else {}
        req = raw.get("request") if isinstance(raw.get("request"), dict) else {}
        action, rtype, rid = _entry_action(str(req.get("method") or "").upper(), str(req.get("url") or ""))
        status = str(((answer or {}).get("response") or {}).get("status") or "")
        code = int(status[:3]) if status[:3].isdigit() else 0
        patients: set[str] = set()
        resources: list[str] = []
        res = (answer or {}).get("resource")
        found = [res] if isinstance(res, dict) else []
        if isinstance(res, dict) and res.get("resourceType") == "Bundle":  # a search entry: every match
            found = [e.get("resource") for e in res.get("entry") or [] if isinstance(e, dict)]
        for r in found:
            if isinstance(r, dict) and r.get("resourceType") and r.get("id") and r["resourceType"] != "OperationOutcome":
                patients.update(compartment_patients(str(r["resourceType"]), str(r["id"]), r))
                if len(resources) < MAX_DETAIL_RESOURCES:
                    resources.append(f"{r['resourceType']}/{r['id']}")
        if code >= 400:
            submitted = raw.get("resource")
            if isinstance(submitted, dict) and rtype:
                patients.update(compartment_patients(rtype, rid or str(submitted.get("id") or ""), submitted))
            elif rtype and rid:
                patients.update(compartment_of(rtype, rid))
        outcome = "success" if 0 < code < 400 else ("denied" if code in (401, 403) else "failure")
        detail: dict[str, Any] = {"bundle": kind, "entry": i, "status": code}
        if resources:
            detail["resources"] = resources
        events.append(NewEvent(action=action or "batch-entry", user=user, resource_type=rtype, resource_id=rid,
                               patient_ids=sorted(patients), outcome=outcome, detail=detail))
    return events
