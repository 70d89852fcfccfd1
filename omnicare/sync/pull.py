"""Pull: the scoped change feed, scope transitions (drop / fill) and the page the wire carries (see the
notes "Pull cursor" in services.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, Subquery, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from omnicare.access.services import (
    may_access,
    patients_within,
)
from omnicare.core.errors import (
    Forbidden,
)
from omnicare.fhir.models import Resource, ResourcePatient, ResourceVersion
from omnicare.fhir.services import feed_annotated, feed_cut, feed_head, feed_horizon_applies
from pyclient.protocol import (
    MAX_PULL_LIMIT,
    Change,
    DropEntry,
    PullResponse,
)

from . import scope as scopes
from .cursor import CursorState, User, cursor_decode, cursor_encode, scope_keys_of, scope_set_for
from .device_sets import device_scope_keys
from .models import Device

DEFAULT_PULL_LIMIT = 200
#: At most this many feed rows are scanned per pull (versions outside scope are skipped, not returned).
MAX_SCAN = 5000


# ---------------------------------------------------------------------------------------------------------
# Pull
# ---------------------------------------------------------------------------------------------------------


def _in_scope_q(patients: set[str], others: set[tuple[str, str]]) -> Q:
    q = Q(
        pk__in=Subquery(ResourcePatient.objects.filter(patient_id__in=sorted(patients)).values("resource_id"))
    )
    for rtype, rid in sorted(others):
        q |= Q(resource_type=rtype, resource_id=rid)
    return q


# One feed row as the pull path carries it: (seq, type, id, version, deleted, body as JSON text | None).
# Bodies stay text from the database to the wire: decoding and re-encoding every resource would halve
# pull throughput, and the JSON value is the same.
_Row = tuple[int, str, str, int, bool, str | None]


def _change(row: _Row) -> Change:
    seq, rt, rid, vid, deleted, raw = row
    return Change(
        seq=seq,
        resource_type=rt,
        id=rid,
        version_id=vid,
        deleted=deleted,
        resource=None if deleted or raw is None else json.loads(raw),
    )


def fill_page(
    *,
    keys: frozenset[str],
    at_seq: int,
    after_seq: int,
    limit: int,
    readable: Callable[[str], bool] | None = None,
) -> tuple[list[Change], int, bool]:
    """Current state of the live resources within ``keys`` whose current version has ``after_seq < seq <= at_seq``.

    In seq order (the protocol wants ascending seqs in a page): ``(changes, position, has_more)``. A resource
    updated or deleted since ``at_seq`` is skipped here: the feed, which resumes at ``at_seq``, delivers it.
    """
    rows, position, more = _scan(
        keys=keys, after_seq=after_seq, upto=at_seq, limit=limit, current_only=True, readable=readable
    )
    return [_change(r) for r in rows], position, more


def drops_for(*, leaving: frozenset[str], staying: frozenset[str]) -> list[DropEntry]:
    """Live resources held because of ``leaving`` keys that no ``staying`` key also covers."""
    if not leaving:
        return []
    lp, lo = scopes.split_keys(leaving)
    sp, so = scopes.split_keys(staying)
    qs = Resource.objects.filter(_in_scope_q(lp, lo), deleted=False)
    if sp:
        qs = qs.exclude(
            pk__in=Subquery(ResourcePatient.objects.filter(patient_id__in=sorted(sp)).values("resource_id"))
        )
    out = [
        DropEntry(resource_type=rt, id=rid)
        for rt, rid in qs.order_by("pk").values_list("resource_type", "resource_id")
        if (rt, rid) not in so
    ]
    return out


def _scan_rows(
    *,
    after_seq: int,
    upto: int | None,
    patients: set[str],
    others: set[tuple[str, str]],
    limit: int,
    current_only: bool,
) -> Iterator[tuple[Any, ...] | None]:
    qs = ResourceVersion.objects.filter(seq__gt=after_seq)
    if upto is not None:
        qs = qs.filter(seq__lte=upto)
    if current_only:
        qs = qs.filter(deleted=False).filter(
            Exists(
                Resource.objects.filter(
                    resource_type=OuterRef("resource_type"),
                    resource_id=OuterRef("resource_id"),
                    version_id=OuterRef("version_id"),
                    deleted=False,
                )
            )
        )
    if connection.vendor == "postgresql":
        # jsonb ?| array[...]: "any of these strings is an element of patient_ids", evaluated in the seq index
        # scan. (SQLite has no such operator for arrays: filtered below in Python, within a bounded scan.)
        cond = Q(patient_ids__has_any_keys=sorted(patients)) if patients else Q(pk__in=[])
        for rtype, rid in others:
            cond |= Q(resource_type=rtype, resource_id=rid)
        qs = qs.filter(cond)
    fields = ["seq", "resource_type", "resource_id", "version_id", "deleted", "raw"]
    qs = qs.annotate(raw=Cast("body", TextField()), raw_patients=Cast("patient_ids", TextField()))
    fields.append("raw_patients")
    if upto is None and feed_horizon_applies():  # up to ``upto`` everything is settled already (feed_head)
        qs = feed_annotated(qs)
        fields += ["feed_stamp", "feed_xmin", "feed_xmax"]
    rows = list(qs.order_by("seq").values_list(*fields)[:limit])
    if len(fields) > 7:
        # Stop at the snapshot horizon (core.feed_horizon.feed_settled): a row after the last settled one may
        # have a smaller position still in flight. ``None`` marks the cut for _scan.
        keep = feed_cut(rows, [r[7:10] for r in rows])
        if keep < len(rows):
            return iter([*rows[:keep], None])
    return iter(rows)


def _scan(
    *,
    keys: frozenset[str],
    after_seq: int,
    upto: int | None,
    limit: int,
    current_only: bool,
    readable: Callable[[str], bool] | None = None,
) -> tuple[list[_Row], int, bool]:
    """Scan the feed in seq order for rows within ``keys`` (and of a type ``readable`` allows)."""
    patients, others = scopes.split_keys(keys)
    if not patients and not others:
        return [], max(after_seq, upto if upto is not None else feed_head()), False
    in_sql = connection.vendor == "postgresql"  # the scope filter ran in the query
    rows: list[_Row] = []
    position = after_seq
    scanned = 0
    chunk = max(limit, 500)
    while True:
        n = 0
        for row in _scan_rows(after_seq=position, upto=upto, patients=patients, others=others, limit=chunk,
                              current_only=current_only):
            if row is None:  # the snapshot horizon: the rest is not settled yet; the next pull continues here
                return rows, position, False
            n += 1
            seq, rt, rid, vid, deleted, raw = row[:6]
            position = seq
            withheld = False
            if (rt, rid) not in others:
                named = json.loads(row[6] or "[]")
                if not in_sql and not any(p in patients for p in named):
                    continue
                # access.services.patients_within: a version that also names a patient outside the scope is
                # withheld. In the feed it goes out as a tombstone (type/id/version, no body) so a device that
                # holds an earlier version drops it; a backfill simply skips it.
                withheld = not deleted and not patients_within(patient_ids=named, visible=patients)
                if withheld and current_only:
                    continue
            if readable is not None and not readable(rt):
                continue
            if withheld:
                rows.append((seq, rt, rid, vid, True, None))
            else:
                rows.append((seq, rt, rid, vid, deleted, None if deleted else raw))
            if len(rows) >= limit:
                return rows, position, True
        scanned += n
        if n < chunk:
            return rows, (upto if upto is not None else position), False
        if scanned >= MAX_SCAN:
            return rows, position, True


def feed_page(*, keys: frozenset[str], after_seq: int, limit: int) -> tuple[list[Change], int, bool]:
    """Versions after ``after_seq`` visible in ``keys``, tombstones included: (changes, position, has_more).

    The position advances over versions outside ``keys`` too, so a page that filtered everything out still
    makes progress (at most ``MAX_SCAN`` rows are read per call).
    """
    rows, position, more = _scan(keys=keys, after_seq=after_seq, upto=None, limit=limit, current_only=False)
    return [_change(r) for r in rows], position, more


def readable_types(user: User) -> Callable[[str], bool]:
    """Type-level read permission from ``access_check`` (the role matrix), memoised for one pull: scope says
    which patients, the role says which kinds of record (a role without ``read`` on a type never gets it)."""
    memo: dict[str, bool] = {}

    def readable(resource_type: str) -> bool:
        if resource_type not in memo:
            memo[resource_type] = may_access(user=user, action="read", resource_type=resource_type)
        return memo[resource_type]

    return readable


@dataclass
class _Page:
    rows: list[_Row]
    cursor: str
    has_more: bool
    drop: list[DropEntry]
    reset: bool


def _pull_page(*, user: User, cursor: str | None, limit: int, device_id: str | None) -> _Page:
    if user is None or not user.is_authenticated:
        raise Forbidden("Authentication required")
    limit = max(1, min(int(limit), MAX_PULL_LIMIT))
    # A device with a storage budget receives the part of its scope it chose (issue 13, device_sets.py).
    current = device_scope_keys(user=user, device_id=device_id)
    readable = readable_types(user)
    if cursor is None:
        # First sync: a fill of the whole scope, anchored at the current head (read BEFORE the fill query,
        # so everything newer than the anchor comes through the feed).
        state = CursorState(seq=feed_head(), scope_id=scope_set_for(user=user, keys=frozenset()).pk)
        held: frozenset[str] = frozenset()
    else:
        state = cursor_decode(user=user, cursor=cursor)
        held = scope_keys_of(user=user, scope_id=state.scope_id)
    drop: list[DropEntry] = []
    target_keys: frozenset[str] | None = None
    if state.fill_target is not None:
        target_keys = scope_keys_of(user=user, scope_id=state.fill_target)
        if target_keys != current:
            drop = drops_for(leaving=(held | target_keys) - current, staying=current)
            target_keys, state = (
                current,
                CursorState(state.seq, state.scope_id, scope_set_for(user=user, keys=current).pk, 0),
            )
    elif held != current:
        drop = drops_for(leaving=held - current, staying=current)
        target_keys = current
        state = CursorState(state.seq, state.scope_id, scope_set_for(user=user, keys=current).pk, 0)

    if target_keys is not None:
        assert state.fill_target is not None
        rows, position, more = _scan(
            keys=target_keys - held,
            after_seq=state.fill_after,
            upto=state.seq,
            limit=limit,
            current_only=True,
            readable=readable,
        )
        if more:
            nxt = CursorState(state.seq, state.scope_id, state.fill_target, position)
        else:
            nxt = CursorState(state.seq, state.fill_target)
        # has_more stays true after the last fill page: the feed from N comes next.
        return _Page(rows, cursor_encode(user=user, state=nxt), True, drop, cursor is None)
    rows, position, more = _scan(
        keys=held, after_seq=state.seq, upto=None, limit=limit, current_only=False, readable=readable
    )
    if device_id:
        with transaction.atomic():
            Device.objects.filter(user=user, device_id=device_id).update(
                last_pull_seq=position, last_seen=timezone.now()
            )
    return _Page(rows, cursor_encode(user=user, state=CursorState(position, state.scope_id)), more, [], False)


def pull(
    *, user: User, cursor: str | None, limit: int = DEFAULT_PULL_LIMIT, device_id: str | None = None
) -> PullResponse:
    """One page of what ``user`` may see after ``cursor`` (see the module docstring for the algorithm)."""
    page = _pull_page(user=user, cursor=cursor, limit=limit, device_id=device_id)
    return PullResponse(
        changes=tuple(_change(r) for r in page.rows),
        cursor=page.cursor,
        has_more=page.has_more,
        drop=tuple(page.drop),
        reset=page.reset,
    )


def pull_json(
    *, user: User, cursor: str | None, limit: int = DEFAULT_PULL_LIMIT, device_id: str | None = None
) -> bytes:
    """:func:`pull` as wire bytes: the ``pyclient.protocol.PullResponse`` shape, with each resource's stored
    JSON text spliced in unparsed (the fast path of ``/api/sync/pull``; tests check it parses with
    ``PullResponse.from_json`` to the same message as :func:`pull`)."""
    return pull_json_page(user=user, cursor=cursor, limit=limit, device_id=device_id)[0]


@dataclass
class PullAudit:
    """What a pull page delivered, for its one audit event: the patients on it and the counts."""

    patients: list[str]
    changes: int
    drops: int
    reset: bool


def pull_json_page(
    *, user: User, cursor: str | None, limit: int = DEFAULT_PULL_LIMIT, device_id: str | None = None
) -> tuple[bytes, PullAudit]:
    """:func:`pull_json` plus what the page delivered (patients: one extra indexed query by seq)."""
    page = _pull_page(user=user, cursor=cursor, limit=limit, device_id=device_id)
    patients: set[str] = set()
    seqs = [row[0] for row in page.rows]
    for start in range(0, len(seqs), 900):  # SQLite's bound-parameter limit
        for ids in ResourceVersion.objects.filter(seq__in=seqs[start : start + 900]).values_list(
            "patient_ids", flat=True
        ):
            patients.update(str(p) for p in ids or [])
    audit = PullAudit(sorted(patients), len(page.rows), len(page.drop), page.reset)
    dump = json.dumps
    parts = [
        f'{{"seq":{seq},"resourceType":{dump(rt)},"id":{dump(rid)},"versionId":{vid},'
        f'"deleted":{"true" if deleted else "false"},"resource":{"null" if deleted or raw is None else raw}}}'
        for seq, rt, rid, vid, deleted, raw in page.rows
    ]
    tail = {"cursor": page.cursor, "hasMore": page.has_more, "drop": [d.to_json() for d in page.drop]}
    if page.reset:
        tail["reset"] = True
    return ('{"changes":[' + ",".join(parts) + "]," + dump(tail, separators=(",", ":"))[1:]).encode(), audit


