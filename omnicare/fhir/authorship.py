"""Checks on what a user writes that the permission matrix cannot express (issue 18 items 1 and 6).

* Authors are the writer: an author / recorder / performer / requester (``pyclient.authors.AUTHOR_FIELDS``, the
  one table the device writes with) that names a Practitioner must be the signed-in user's own Practitioner,
  unless it was already there in the current version (editing a colleague's allergy keeps its recorder). An
  author given only as a name is completed with the user's own reference. Nobody writes as someone else.
  Bearer-token integrations (interface engines, migrations) write results performed by others and are exempt.
* A new or changed Patient is checked with the registration rules (``pyclient.registration.patient_problems``:
  the same ones the device's form applies), and a local MRN must not belong to another patient.

Called by the write path (``services._apply``) for every user write: REST, Bundles and the sync push.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from omnicare.access import roles as rbac
from omnicare.access.services import user_practitioner
from omnicare.core.errors import Forbidden, Unprocessable
from pyclient import authors
from pyclient import registration as reg

from .models import SearchToken

__all__ = ["write_checked"]


def _key(ref: Any) -> str:
    return str(ref.get("reference") or "") if isinstance(ref, dict) else ""


def _authors_checked(user: Any, rtype: str, body: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    refs = authors.author_refs(rtype, body)
    if not refs:
        return body
    before = {_key(r) for r in authors.author_refs(rtype, current or {})} - {""}
    mine_cache: list[dict[str, str] | None] = []

    def mine() -> dict[str, str] | None:
        if not mine_cache:
            mine_cache.append(user_practitioner(user=user))
        return mine_cache[0]

    fill = False
    for ref in refs:
        target = _key(ref)
        if not target:
            fill = fill or mine() is not None
            continue
        if target in before or not target.startswith("Practitioner/"):
            continue
        own = mine()
        if own is None or target != f"Practitioner/{own['id']}":
            raise Forbidden("A record can only be signed by the person writing it: the author must be your own "
                            "practitioner record.", expression=[authors.AUTHOR_FIELDS[rtype][0]])
    if fill:
        own = mine()
        assert own is not None
        element, many = authors.AUTHOR_FIELDS[rtype]
        body = dict(body)
        ref = {"reference": f"Practitioner/{own['id']}", "display": own["display"]}
        if many:
            wrapped = rtype in ("Immunization", "Procedure")
            items = []
            for item in body.get(element) or []:
                inner = item.get("actor") if wrapped and isinstance(item, dict) else item
                if isinstance(inner, dict) and not _key(inner):
                    inner = ref
                items.append({**item, "actor": inner} if wrapped and isinstance(item, dict) else inner)
            body[element] = items
        elif isinstance(body.get(element), dict) and not _key(body[element]):
            body[element] = ref
    return body


def _patient_checked(rid: str, body: dict[str, Any]) -> None:
    problems = reg.patient_problems(body, today=timezone.localdate().isoformat())
    if problems:
        field, text = next(iter(problems.items()))
        raise Unprocessable(text, expression=[{"mrn": "Patient.identifier", "birth_date": "Patient.birthDate"}[field]])
    for ident in body.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == reg.LOCAL_MRN_SYSTEM:
            taken = SearchToken.objects.filter(
                resource_type="Patient", param="identifier", system=reg.LOCAL_MRN_SYSTEM,
                code=str(ident.get("value") or ""), resource__deleted=False,
            ).exclude(resource__resource_id=rid).exists()
            if taken:
                raise Unprocessable(f"Another patient already has the MRN {ident.get('value')}.",
                                    expression=["Patient.identifier"])


def write_checked(*, user: Any, resource_type: str, resource_id: str, body: dict[str, Any],
                  current: dict[str, Any] | None) -> dict[str, Any]:
    """``body`` as it may be written by ``user`` (authors completed), or raise Forbidden / Unprocessable."""
    if user is None or not getattr(user, "is_authenticated", False) or rbac.token_only(user):
        return body
    if resource_type == "Patient" and body != current:
        _patient_checked(resource_id, body)
    if resource_type in authors.AUTHOR_FIELDS:
        body = _authors_checked(user, resource_type, body, current)
    return body
