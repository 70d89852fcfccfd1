"""Break-the-glass lookup: "is there one patient outside my care team with this family name and birth date
(or this MRN)?" — answered with a count and an opaque patient id, never with demographics.

A clinician at the bedside of an unconscious patient who is not on their team needs the chart; a front-desk
style confirmation gives them the patient id to request emergency access for, without turning the endpoint
into a search of the hospital's patient index:

* only roles with ``break_glass`` may ask (others: 403, audited as denied);
* the query must be a whole family name + full birth date, or a whole MRN (``pyclient.views.break_glass``:
  the same rule the device checks before asking);
* the answer is ``{"matches": n, "patientId": <id when n == 1>, "inCareTeam": m}``: nothing the clinician did
  not type (no name, no birth date, no address), and the id only when exactly one patient matches;
* every lookup is a security audit event (``break-glass-lookup``; the matched patient, never the typed text);
* at most ``LOOKUP_LIMIT`` lookups per ``LOOKUP_WINDOW_S`` per user, counted from those audit events, so the
  limit holds across server processes (429 with Retry-After).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from omnicare.audit.models import AuditEvent
from omnicare.audit.services import audit_record
from omnicare.core.errors import ApiError, BadRequest, Forbidden, NotAuthenticated
from pyclient.errors import ValidationFailed
from pyclient.views import break_glass as bg

from . import roles as rbac
from .directory import directory
from .services import patient_ids_granted, visible_patient_ids

ACTION = "break-glass-lookup"


class TooManyLookups(ApiError):
    status, code = 429, "throttled"


def _audit(user: Any, outcome: str, detail: dict[str, Any], patient_ids: list[str], device_id: str,
           now: datetime) -> None:
    audit_record(user=user, action=ACTION, category="security", outcome=outcome, purpose="ETREAT",
                 resource_type="Patient" if patient_ids else "", resource_id=patient_ids[0] if patient_ids else "",
                 patient_ids=patient_ids, device_id=device_id or None, detail=detail, now=now)


def break_glass_lookup(*, user: Any, family: str = "", birth_date: str = "", mrn: str = "", device_id: str = "",
                       now: datetime | None = None) -> dict[str, Any]:
    """How many patients outside ``user``'s care team match (and the id when exactly one does)."""
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated("Authentication required")
    now = now or timezone.now()
    by = "mrn" if (mrn or "").strip() else "name-birthdate"
    if not any(rbac.ROLES[r].break_glass for r in rbac.user_roles(user)):
        _audit(user, "denied", {"by": by, "why": "role"}, [], device_id, now)
        raise Forbidden("Your role may not use emergency access")
    since = now - timedelta(seconds=bg.LOOKUP_WINDOW_S)
    recent = AuditEvent.objects.filter(user_id=user.pk, action=ACTION, received_at__gte=since).count()
    if recent >= bg.LOOKUP_LIMIT:
        _audit(user, "denied", {"by": by, "why": "rate-limit"}, [], device_id, now)
        raise TooManyLookups(
            f"Too many emergency lookups: at most {bg.LOOKUP_LIMIT} in {bg.LOOKUP_WINDOW_S // 60} minutes. "
            "Wait a few minutes, or ask the front desk.", headers={"Retry-After": str(bg.LOOKUP_WINDOW_S)})
    try:
        query = bg.lookup_query(family=family, birth_date=birth_date, mrn=mrn, date_order="ymd")
    except ValidationFailed as exc:
        _audit(user, "failure", {"by": by, "why": "invalid"}, [], device_id, now)
        raise BadRequest(" ".join(exc.fields.values()) or exc.message, expression=sorted(exc.fields)) from None
    params = [("identifier", query["mrn"])] if "mrn" in query else \
        [("family:exact", query["family"]), ("birthdate", query["birthDate"])]
    found = directory().patient_search_ids(params, 50)
    visible = visible_patient_ids(user=user, device=True)
    own = set(visible) - patient_ids_granted(user=user, now=now) if isinstance(visible, frozenset) else set(found)
    outside = sorted(p for p in found if p not in own)
    answer: dict[str, Any] = {"matches": len(outside), "inCareTeam": len(found) - len(outside)}
    if len(outside) == 1:
        answer["patientId"] = outside[0]
    _audit(user, "success", {"by": by, "matches": len(outside)}, outside[:1] if len(outside) == 1 else [],
           device_id, now)
    return answer
