"""Conflict resolution accuracy, second half: was an outcome later corrected?

The issue defines accuracy as the share of stale edits resolved *without a person and without a later
correction*. An outcome (an automatic merge, or a person's resolution of a parked conflict) is *corrected* when,
within ``OMNICARE_OPS_CORRECTION_HOURS`` of it, a later version of the same record — by anyone — puts a field the
outcome decided back to a value the outcome overrode (a revert). Ordinary later edits of other fields, or to a
new value, are not corrections: a nurse updating a status is not saying the merge was wrong.

* merge: the fields the merge decided are those that differ between the version before it and the merged
  version; the overridden value is the one before.
* resolve: the fields are the conflict's paths (top element); the overridden values are the side(s) of the
  conflict (server's / client's) the resolution did not keep.

Watches are :class:`ResolutionCheck` rows (ids only). They are created from the audit rollup (merges, from the
push event's ``merged`` ids) and from resolved conflicts, and decided by :func:`resolution_scan` (beat job,
``ops_refresh``): each check costs two indexed reads of one record's history, never a scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from omnicare.fhir.models import ResourceVersion
from omnicare.sync.models import Conflict

from .models import ResolutionCheck, Watermark

_MISSING = object()
_IGNORED = frozenset({"meta", "id", "resourceType", "text"})


def _window() -> timedelta:
    return timedelta(hours=float(getattr(settings, "OMNICARE_OPS_CORRECTION_HOURS", 72)))


def _top(path: str) -> str:
    return re.split(r"[.\[]", str(path), maxsplit=1)[0]


def _get(body: Any, key: str) -> Any:
    return body.get(key, _MISSING) if isinstance(body, dict) else _MISSING


def resolution_watch_merges(refs: Iterable[tuple[str, datetime]]) -> int:
    """Watch merges named ``Type/id/version`` (from push audit events) for a later correction."""
    rows = []
    for ref, at in refs:
        parts = str(ref).rsplit("/", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        rows.append(ResolutionCheck(kind=ResolutionCheck.MERGE, resource_type=parts[0][:64],
                                    resource_id=parts[1][:64], version=int(parts[2]), at=at))
    ResolutionCheck.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def resolution_watch_conflicts(*, now: datetime, limit: int = 5000) -> int:
    """Watch conflicts resolved since the last run (by ``resolved_at``; a watermark row keeps the place)."""
    with transaction.atomic():
        mark, _ = Watermark.objects.select_for_update().get_or_create(name="resolve-watch")
        qs = Conflict.objects.filter(status=Conflict.RESOLVED, resolved_at__isnull=False,
                                     resolved_version__isnull=False)
        if mark.updated is not None:
            qs = qs.filter(resolved_at__gt=mark.updated)
        got = list(qs.order_by("resolved_at").values_list("id", "resource_type", "resource_id",
                                                           "resolved_version", "resolved_at")[:limit])
        ResolutionCheck.objects.bulk_create(
            [ResolutionCheck(kind=ResolutionCheck.RESOLVE, ref=str(cid), resource_type=rt, resource_id=rid,
                             version=v, at=at) for cid, rt, rid, v, at in got], ignore_conflicts=True)
        if got:
            mark.updated = got[-1][4]
            mark.position += len(got)
            mark.save(update_fields=["updated", "position"])
    return len(got)


def _decided_fields(check: ResolutionCheck, bodies: dict[int, Any]) -> dict[str, list[Any]]:
    """field -> the values the outcome overrode."""
    after = bodies.get(check.version)
    if check.kind == ResolutionCheck.MERGE:
        before = bodies.get(check.version - 1)
        if not isinstance(before, dict) or not isinstance(after, dict):
            return {}
        keys = (set(before) | set(after)) - _IGNORED
        return {k: [_get(before, k)] for k in keys if _get(before, k) != _get(after, k)}

    c = Conflict.objects.filter(pk=check.ref).values("paths", "ours", "theirs").first()
    if c is None:
        return {}
    out: dict[str, list[Any]] = {}
    for key in {_top(p) for p in c["paths"] or []} - _IGNORED:
        kept = _get(after, key)
        lost = [v for v in (_get(c["ours"], key), _get(c["theirs"], key)) if v != kept]
        if lost:
            out[key] = lost
    return out


def resolution_scan(*, now: datetime, limit: int = 500) -> dict[str, int]:
    """Decide open watches: corrected (a later version reverted a decided field in the window) or held."""
    window = _window()
    decided = {"corrected": 0, "held": 0}
    for check in ResolutionCheck.objects.filter(decided__isnull=True).order_by("at")[:limit]:
        end = check.at + window
        history = dict(ResourceVersion.objects.filter(
            resource_type=check.resource_type, resource_id=check.resource_id,
            version_id__gte=max(1, check.version - 1), last_updated__lte=end).values_list("version_id", "body"))
        later = sorted(v for v in history if v > check.version)
        fields = _decided_fields(check, history) if later else {}
        hit = next((v for v in later for k, lost in fields.items() if _get(history[v], k) in lost), None)
        if hit is not None:
            check.corrected, check.corrected_version = True, hit
        elif now >= end:
            check.corrected = False
        else:
            continue
        check.decided = now
        check.save(update_fields=["corrected", "corrected_version", "decided"])
        decided["corrected" if check.corrected else "held"] += 1
    return decided


def resolution_counts(*, since: datetime) -> dict[str, int]:
    """Watches of outcomes since ``since``: corrected / held / still watched, per kind (one query)."""
    from django.db.models import Count, Q

    out: dict[str, int] = {}
    for kind in (ResolutionCheck.MERGE, ResolutionCheck.RESOLVE):
        out.update({f"{kind}_corrected": 0, f"{kind}_held": 0, f"{kind}_watching": 0})
    rows = ResolutionCheck.objects.filter(at__gte=since).values("kind").annotate(
        n_corrected=Count("id", filter=Q(corrected=True)), n_held=Count("id", filter=Q(corrected=False)),
        n_watching=Count("id", filter=Q(corrected__isnull=True)))
    for r in rows:
        for k in ("corrected", "held", "watching"):
            out[f"{r['kind']}_{k}"] = int(r[f"n_{k}"])
    return out
