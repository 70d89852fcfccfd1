"""What a user may see through sync: THE extension point for roles and break-the-glass.

``scope_patient_ids(user=...)`` is the one function that decides which patients' compartments a user's
devices receive. Today the rule is the care team:

    a patient is in scope when a current (not deleted, not ``inactive``/``entered-in-error``) CareTeam
    whose subject is that patient lists, as a ``participant.member``, a Practitioner carrying the
    identifier ``urn:omnicare:user|<username>``.

Plus the patients of the user's active break-the-glass grants (``access.services.patient_ids_granted``):
they sync for the grant's duration and are dropped from devices when it ends.

Administrators (staff/superusers) get no implicit clinical scope: an admin account does not read charts.
The access-control work extends this function (role-based rules, time-limited break-the-glass grants)
and everything downstream follows: pull filtering, scope-entry backfill and drop lists, push permission
checks, WebSocket notification routing and snapshots all call it and nothing else.

Besides patient compartments, the user's own Practitioner resource(s) are delivered
(``scope_extra_keys``), so a device knows who is signed in.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator
from typing import Any

from omnicare.fhir.models import Resource, SearchReference, SearchToken
from omnicare.fhir.search import parse_reference

USER_IDENTIFIER_SYSTEM = "urn:omnicare:user"
_INACTIVE_CARETEAM = frozenset({"inactive", "entered-in-error"})


def user_practitioner_ids(*, user: Any) -> set[str]:
    """Ids of the live Practitioner resources that identify ``user`` (``urn:omnicare:user|<username>``)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    rows = SearchToken.objects.filter(
        resource_type="Practitioner",
        param="identifier",
        system=USER_IDENTIFIER_SYSTEM,
        code=user.get_username(),
        resource__deleted=False,
    ).values_list("resource__resource_id", flat=True)
    return set(rows)


# Per-request memo (see ``scope_cache``): a push of 100 mutations asks for the scope ~200 times.
_memo: contextvars.ContextVar[dict[Any, frozenset[str]] | None] = contextvars.ContextVar(
    "omnicare_scope", default=None
)


@contextlib.contextmanager
def scope_cache() -> Iterator[None]:
    """Within this block, :func:`scope_patient_ids` is computed once per user (call
    :func:`scope_cache_clear` after a write that can change scope: a CareTeam or Practitioner)."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def scope_cache_clear() -> None:
    memo = _memo.get()
    if memo is not None:
        memo.clear()


def scope_patient_ids(*, user: Any) -> set[str]:
    """Patient ids whose compartment ``user`` may sync (see the module docstring for the rule).

    Extension point: roles and break-the-glass grants add patients here; nothing else decides sync scope.
    """
    memo = _memo.get()
    key = getattr(user, "pk", None)
    if memo is not None and key is not None:
        if key not in memo:
            memo[key] = frozenset(_compute_scope_patient_ids(user=user))
        return set(memo[key])
    return _compute_scope_patient_ids(user=user)


def _compute_scope_patient_ids(*, user: Any) -> set[str]:
    from omnicare.access.services import patient_ids_granted  # lazy: access imports this module

    granted = patient_ids_granted(user=user)  # active break-the-glass grants
    practitioners = user_practitioner_ids(user=user)
    if not practitioners:
        return granted
    team_pks = SearchReference.objects.filter(
        resource_type="CareTeam",
        param="participant",
        target_type="Practitioner",
        target_id__in=practitioners,
        resource__deleted=False,
    ).values_list("resource_id", flat=True)
    patients: set[str] = set()
    for body in Resource.objects.filter(pk__in=list(team_pks), deleted=False).values_list("body", flat=True):
        if body.get("status") in _INACTIVE_CARETEAM:
            continue
        members = {
            parse_reference(str((p.get("member") or {}).get("reference") or ""))
            for p in body.get("participant") or []
            if isinstance(p, dict)
        }
        if not any(m is not None and m[0] == "Practitioner" and m[1] in practitioners for m in members):
            continue
        subject = parse_reference(str((body.get("subject") or {}).get("reference") or ""))
        if subject is not None and subject[0] == "Patient":
            patients.add(subject[1])
    return patients | granted


def scope_extra_keys(*, user: Any) -> set[str]:
    """Non-patient resources the user's devices receive: their own Practitioner(s), as ``Type/id`` keys."""
    return {f"Practitioner/{pid}" for pid in user_practitioner_ids(user=user)}


def scope_keys(*, user: Any) -> frozenset[str]:
    """The full scope as compartment keys: ``Patient/<id>`` for each patient plus :func:`scope_extra_keys`."""
    return frozenset({f"Patient/{p}" for p in scope_patient_ids(user=user)} | scope_extra_keys(user=user))


def scope_digest(keys: frozenset[str] | set[str]) -> str:
    """Order-independent SHA-256 of a scope (what cursors are bound to)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def split_keys(keys: frozenset[str] | set[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """(patient ids, other (type, id) resources) of a scope key set."""
    patients: set[str] = set()
    others: set[tuple[str, str]] = set()
    for key in keys:
        rtype, _, rid = key.partition("/")
        if rtype == "Patient":
            patients.add(rid)
        else:
            others.add((rtype, rid))
    return patients, others


def version_in_scope(
    *,
    resource_type: str,
    resource_id: str,
    patient_ids: list[str],
    patients: set[str],
    others: set[tuple[str, str]],
) -> bool:
    """Whether a feed entry (one version with its compartment) is visible within a scope."""
    if (resource_type, resource_id) in others:
        return True
    return any(p in patients for p in patient_ids)
