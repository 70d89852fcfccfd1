"""What a user's devices receive through sync: scope keys, digests and routing, on top of ``access``'s policy.

Which patients' compartments a user's devices receive is decided by
``omnicare.access.services.visible_patient_ids(user=..., device=True)`` (``scope_patient_ids`` here is a thin
alias). The rule is the care team:

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

import hashlib
from typing import Any

from omnicare.access.services import (
    USER_IDENTIFIER_SYSTEM,
    patients_within,
    user_practitioner_ids,
    visible_patient_ids,
    visible_patients_cache,
    visible_patients_cache_clear,
)

__all__ = [
    "USER_IDENTIFIER_SYSTEM",
    "scope_cache",
    "scope_cache_clear",
    "scope_digest",
    "scope_extra_keys",
    "scope_keys",
    "scope_patient_ids",
    "split_keys",
    "user_practitioner_ids",
    "version_in_scope",
]

# The memo lives with the policy in ``omnicare.access``; these names are kept for the sync code.
scope_cache = visible_patients_cache
scope_cache_clear = visible_patients_cache_clear


def scope_patient_ids(*, user: Any) -> set[str]:
    """Patient ids whose compartment ``user``'s devices receive: ``visible_patient_ids(device=True)``."""
    ids = visible_patient_ids(user=user, device=True)
    assert isinstance(ids, frozenset)  # device=True never answers "all"
    return set(ids)


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
    """Whether a feed entry (one version with its compartment) is visible within a scope: every patient it names
    is in scope (``access.services.patients_within``, the same rule as read, search, history and pull)."""
    if (resource_type, resource_id) in others:
        return True
    return patients_within(patient_ids=patient_ids, visible=patients)
