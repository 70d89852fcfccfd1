"""Server sync engine: pull (scoped change feed with an opaque signed cursor), push (idempotent, merged with
pyclient), conflicts, devices, snapshots and push jobs. The API router and Celery tasks only call these.

Pull cursor — why it never skips, and how scope changes are handled
--------------------------------------------------------------------
The feed is ``omnicare.fhir.models.ResourceVersion`` ordered by ``seq``. ``seq`` values are handed out by a
single-row counter whose row lock is held until the writing transaction commits (``fhir.services._bump_feed``),
so seq order == commit order: once a reader sees seq N committed, every seq < N is committed too, and
``seq > cursor`` can never step over a change that commits later. (SQLite serialises writers anyway.)

A cursor is ``django.core.signing`` of ``{"u": user pk, "s": N, "p": ScopeSet pk, "f": fill-state | absent}``
(salted, HMAC with SECRET_KEY): opaque to clients, bound to the user, and a cursor we never issued is a 400.
It says: "this client holds, as of feed position N, everything in the scope ScopeSet ``p``".

On each pull the current scope S (``scope.scope_keys``) is compared with ``p``:

* S == p: a feed page: versions with ``seq > N`` whose compartment (``ResourceVersion.patient_ids``) meets S,
  tombstones included. The cursor advances to the last version *scanned* (in scope or not), so a page that
  filtered everything out still makes progress; the scan per request is bounded.
* S != p (patients ENTERED or LEFT scope): a transition to target T = S.
  - ``drop``: the live resources in the compartments of patients that left (and that no patient still in
    scope also holds) — the client deletes its copies.
  - backfill ("fill"): the *current* state of every live resource in the compartments of patients that
    entered, whose current version has ``seq <= N``, in seq order (cursor ``f = {"t": T, "a": last seq}``).
    Resources whose current version is newer than N are left to the feed, which resumes at N with scope T,
    so each version reaches the client once and never older-after-newer.
  - If the scope changes again mid-fill, the fill restarts towards the new target (drops for anything in the
    old or the abandoned target that is not in the new one; duplicates of already-sent records are harmless).
  When the fill completes the cursor becomes ``{"s": N, "p": T}`` and the feed continues.
* The first pull (no cursor) is a fill of the whole scope anchored at the current feed head.

Push — per mutation, documented contract
----------------------------------------
The batch shape is validated first (``pyclient.protocol`` parsers): a malformed batch, a duplicated
mutationId, or more than ``MAX_PUSH_MUTATIONS`` (the protocol's 100) mutations is refused whole (400 / 413),
nothing applied. Bigger batches (up to ``MAX_JOB_MUTATIONS``) go to ``/api/sync/push/jobs``: 202 + job id,
applied by a Celery job with exactly the same per-mutation rules. Then each mutation is decided on its own,
in order; one bad mutation never blocks the others, and none is ever half applied:

* already seen (same user, same mutationId, same canonical hash) → the stored first result, nothing changes;
  same id, different body → ``rejected`` with a 409 OperationOutcome (not stored).
* unknown type / bad id / invalid resource → ``rejected`` (404 / 400 / 422); base version ahead of the server
  → ``rejected`` 422; a compartment outside the caller's scope → ``rejected`` 403.
* base == current → ``applied`` (new version). Stale base → three-way merge with ``pyclient.merge``
  (base from history): clean → ``merged`` (new version, returned); otherwise a stored :class:`Conflict`
  and ``conflict`` (the server keeps its version; the client's edit is parked in the Conflict row).
* ``supersedes`` (a re-sent edit after a person resolved a conflict on the device) closes the stored
  conflict of that earlier mutation (resolution ``superseded``).

How it is executed: chunks of ``BATCH_CHUNK`` mutations are decided against rows read and locked once
(idempotency log, current rows, base versions) and written with ONE store call (one feed position range),
conflicts and the log bulk-inserted, all in one transaction: rejected mutations simply write nothing. If
anything unusual happens (the same resource twice in a chunk, a write the store refuses, a concurrent
duplicate, a CareTeam/Practitioner write that changes scope mid-batch) the chunk is redone one mutation per
transaction — same answers, slower.
"""

from __future__ import annotations

import contextvars
import functools
import gzip
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from omnicare.access.services import (
    DeviceRevoked,
    access_check,
    device_id_check,
    device_id_ever_revoked,
    may_access,
    patients_within,
    visible_patients_cache,
)
from omnicare.core.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from omnicare.core.errors import (
    Conflict as ConflictError,
)
from omnicare.fhir.models import Resource, ResourcePatient, ResourceVersion
from omnicare.fhir.search import compartment_patients
from omnicare.fhir.services import Write, feed_head, resources_apply
from omnicare.fhir.validation import check_id, check_type, validate_resource
from pyclient.protocol import (
    MAX_PULL_LIMIT,
    Change,
    DropEntry,
    Mutation,
    MutationResult,
    ProtocolError,
    PullResponse,
    PushRequest,
    PushResponse,
)
from pyclient.protocol import (
    MAX_PUSH_MUTATIONS as PROTOCOL_MAX_PUSH,
)
from pyclient.push_rules import decide as push_decide
from pyclient.push_rules import mutation_hash

from . import notify
from . import scope as scopes
from .models import AppliedMutation, Conflict, Device, PushJob, PushJobChunk, ScopeSet, Snapshot
from .notify import hint_for, notify_after_commit, send_hint

log = logging.getLogger("omnicare.sync")

type User = Any  # a Django user (AbstractBaseUser); Any while Django has no type stubs here

#: A push with more mutations than this is refused whole with 413 (the shared protocol's limit; split it,
#: or send it to the background-job endpoint).
MAX_PUSH_MUTATIONS = PROTOCOL_MAX_PUSH
#: The background-job endpoint (``/api/sync/push/jobs``, 202 + job id) takes batches up to this size.
MAX_JOB_MUTATIONS = 5000
#: Mutations decided and written together by the batched path (one transaction, one feed bump).
BATCH_CHUNK = 100
DEFAULT_PULL_LIMIT = 200
#: At most this many feed rows are scanned per pull (versions outside scope are skipped, not returned).
MAX_SCAN = 5000
CURSOR_SALT = "omnicare.sync.cursor.v1"
RESOLUTIONS = ("keep-mine", "keep-server", "edited")


# ---------------------------------------------------------------------------------------------------------
# Cursor
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CursorState:
    seq: int
    scope_id: int
    fill_target: int | None = None
    fill_after: int = 0


def cursor_encode(*, user: User, state: CursorState) -> str:
    data: dict[str, Any] = {"v": 1, "u": user.pk, "s": state.seq, "p": state.scope_id}
    if state.fill_target is not None:
        data["f"] = {"t": state.fill_target, "a": state.fill_after}
    return signing.dumps(data, salt=CURSOR_SALT, compress=True)


def cursor_decode(*, user: User, cursor: str) -> CursorState:
    """Verify and decode a cursor we issued to this user; anything else is a 400."""
    try:
        data = signing.loads(cursor, salt=CURSOR_SALT)
    except signing.BadSignature:
        raise BadRequest(
            "Unknown cursor: not issued by this server (start again without a cursor)", expression=["cursor"]
        ) from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("u") != user.pk:
        raise BadRequest("Unknown cursor: not issued to this user", expression=["cursor"])
    fill = data.get("f")
    return CursorState(
        seq=int(data["s"]),
        scope_id=int(data["p"]),
        fill_target=None if fill is None else int(fill["t"]),
        fill_after=0 if fill is None else int(fill["a"]),
    )


def _scope_set(*, user: User, keys: frozenset[str]) -> ScopeSet:
    digest = scopes.scope_digest(keys)
    row = ScopeSet.objects.filter(user=user, digest=digest).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return ScopeSet.objects.create(user=user, digest=digest, keys=sorted(keys))
    except IntegrityError:
        return ScopeSet.objects.get(user=user, digest=digest)


def _scope_keys_of(*, user: User, scope_id: int) -> frozenset[str]:
    row = ScopeSet.objects.filter(pk=scope_id, user=user).first()
    if row is None:
        raise BadRequest("Unknown cursor: its scope is not known here", expression=["cursor"])
    return frozenset(row.keys)


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
) -> Iterator[tuple[Any, ...]]:
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
    return iter(qs.order_by("seq").values_list(*fields)[:limit])


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
        for row in _scan_rows(
            after_seq=position,
            upto=upto,
            patients=patients,
            others=others,
            limit=chunk,
            current_only=current_only,
        ):
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


def _readable_types(user: User) -> Callable[[str], bool]:
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
    current = scopes.scope_keys(user=user)
    readable = _readable_types(user)
    if cursor is None:
        # First sync: a fill of the whole scope, anchored at the current head (read BEFORE the fill query,
        # so everything newer than the anchor comes through the feed).
        state = CursorState(seq=feed_head(), scope_id=_scope_set(user=user, keys=frozenset()).pk)
        held: frozenset[str] = frozenset()
    else:
        state = cursor_decode(user=user, cursor=cursor)
        held = _scope_keys_of(user=user, scope_id=state.scope_id)
    drop: list[DropEntry] = []
    target_keys: frozenset[str] | None = None
    if state.fill_target is not None:
        target_keys = _scope_keys_of(user=user, scope_id=state.fill_target)
        if target_keys != current:
            drop = drops_for(leaving=(held | target_keys) - current, staying=current)
            target_keys, state = (
                current,
                CursorState(state.seq, state.scope_id, _scope_set(user=user, keys=current).pk, 0),
            )
    elif held != current:
        drop = drops_for(leaving=held - current, staying=current)
        target_keys = current
        state = CursorState(state.seq, state.scope_id, _scope_set(user=user, keys=current).pk, 0)

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


# ---------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------


def device_registered(*, user: User, device_id: str) -> bool:
    return Device.objects.filter(user=user, device_id=device_id).exists()


def device_register(*, user: User, device_id: str, name: str = "") -> Device:
    """Register (or touch) a device of ``user``; idempotent. A device id that was ever revoked never registers
    again (``DeviceRevoked``: the client wipes)."""
    device_id_check(device_id=device_id)
    if device_id_ever_revoked(device_id=device_id):
        raise DeviceRevoked()
    # In a transaction: on SQLite that is BEGIN IMMEDIATE, which waits for a busy writer instead of failing.
    with transaction.atomic():
        device, created = Device.objects.get_or_create(
            user=user, device_id=device_id, defaults={"name": name[:100]}
        )
        if not created and name and device.name != name[:100]:
            device.name = name[:100]
        device.last_seen = timezone.now()
        device.save()
    return device


def devices_list(*, user: User) -> list[Device]:
    return list(Device.objects.filter(user=user).order_by("created"))


# ---------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------


def parse_push(data: Any, *, max_mutations: int = MAX_PUSH_MUTATIONS) -> PushRequest:
    """Validate a push body with the shared protocol's rules; structural problems are a 400, more than
    ``max_mutations`` a 413. Nothing is applied when this raises."""
    if (
        isinstance(data, dict)
        and isinstance(data.get("mutations"), list)
        and len(data["mutations"]) > max_mutations
    ):
        raise PayloadTooLarge(
            f"At most {max_mutations} mutations per push (got {len(data['mutations'])}); split the batch"
        )
    try:
        if not isinstance(data, dict) or not isinstance(data.get("mutations"), list):
            raise ProtocolError('PushRequest: expected {"deviceId", "mutations": [...]}')
        # Mutation by mutation with pyclient's parser (PushRequest.from_json would also cap the size at the
        # interactive limit, which the job endpoint exceeds on purpose).
        muts = tuple(
            Mutation.from_json(m, f"PushRequest.mutations[{i}]") for i, m in enumerate(data["mutations"])
        )
        device_id = data.get("deviceId")
        if not isinstance(device_id, str) or not device_id:
            raise ProtocolError("PushRequest.deviceId: expected a non-empty string")
        if len({m.mutation_id for m in muts}) != len(muts):
            raise ProtocolError("PushRequest.mutations: duplicate mutationId in one batch")
        request = PushRequest(device_id=device_id, mutations=muts)
    except ProtocolError as exc:
        raise BadRequest(f"Malformed push: {exc}"[:500], code="structure") from None
    device_id_check(device_id=request.device_id)
    for i, m in enumerate(request.mutations):
        if len(m.mutation_id) > 64:
            raise BadRequest(f"mutations[{i}].mutationId must be at most 64 characters", code="structure")
    return request


def _rejected(m: Mutation, exc: ApiError) -> MutationResult:
    outcome = exc.outcome()
    outcome["issue"][0].setdefault("details", {"text": str(exc.status)})
    return MutationResult(mutation_id=m.mutation_id, status="rejected", outcome=outcome)


def _compartment(rtype: str, rid: str, body: dict[str, Any] | None) -> set[str]:
    return set(compartment_patients(rtype, rid, body)) if body is not None else set()


@dataclass
class _Plan:
    """What to do with one mutation, decided before anything is written.

    Exactly one of: ``result`` (final answer, nothing to write), ``write`` (apply it; the answer is built
    from the new version with ``status``), ``conflict`` (an unsaved Conflict row to store).
    """

    m: Mutation
    hash: str
    cur_version: int = 0
    ours: dict[str, Any] | None = None
    result: MutationResult | None = None
    write: Write | None = None
    status: str = "applied"
    conflict: Conflict | None = None

    def answer(self, version: ResourceVersion | None = None) -> MutationResult:
        m = self.m
        if self.result is not None:
            return self.result
        if self.conflict is not None:
            c = self.conflict
            return MutationResult(
                mutation_id=m.mutation_id,
                status="conflict",
                version_id=self.cur_version or None,
                resource=self.ours,
                conflict_id=str(c.id),
                conflicts=tuple(c.details),
            )
        if version is None:  # a no-op write (delete of something already deleted)
            return MutationResult(
                mutation_id=m.mutation_id,
                status=self.status,  # type: ignore[arg-type]
                version_id=self.cur_version or None,
                resource=self.ours,
            )
        return MutationResult(
            mutation_id=m.mutation_id,
            status=self.status,  # type: ignore[arg-type]
            version_id=version.version_id,
            resource=None if version.deleted else version.body,
        )


def _plan(
    *,
    user: User,
    device_id: str,
    m: Mutation,
    h: str,
    cur: Resource | None,
    base_of: Callable[[int], dict[str, Any] | None],
    check: Callable[..., None] = access_check,
) -> _Plan:
    """Decide one mutation against the locked current row ``cur``. Raises ApiError for a rejection.

    ``base_of(version)`` returns the body of an older version (None for a tombstone / unknown).
    """
    rtype, rid = m.resource_type, m.id
    check_type(rtype)
    check_id(rid)
    theirs = None
    if m.resource is not None:
        theirs = dict(m.resource)
        theirs["id"] = rid
        validate_resource(theirs, expected_type=rtype)
    cur_version = cur.version_id if cur is not None else 0
    live = cur is not None and not cur.deleted
    live_version = cur_version if live else 0
    ours = cur.body if live and cur is not None else None
    plan = _Plan(m=m, hash=h, cur_version=cur_version, ours=ours)
    base_v = m.base_version
    patients = _compartment(rtype, rid, ours) | _compartment(rtype, rid, theirs)
    # Checked before anything else happens: a conflict would store the edit and show the server's copy.
    action = "delete" if m.op == "delete" else ("update" if live else "create")
    check(user=user, action=action, resource_type=rtype, patient_ids=sorted(patients))

    def park(base: dict[str, Any] | None, details: list[dict[str, Any]]) -> _Plan:
        plan.conflict = Conflict(
            resource_type=rtype,
            resource_id=rid,
            base_version=base_v,
            ours_version=cur_version or None,
            base=base,
            ours=ours,
            theirs=theirs,
            paths=[d["path"] for d in details],
            details=details,
            patient_ids=sorted(patients),
            author=user,
            device_id=device_id,
            mutation_id=m.mutation_id,
        )
        return plan

    def write(body: dict[str, Any] | None, status: str = "applied") -> _Plan:
        plan.write, plan.status = Write(rtype, rid, body, expected_version=live_version), status
        return plan

    # The decision itself is pyclient's table, shared with the test simulator (one rule, one place).
    decision = push_decide(
        op=m.op,
        cur_version=cur_version,
        live=live,
        ours=ours,
        base_version=base_v,
        base_of=base_of,
        theirs=theirs,
    )
    if decision.kind == "reject":
        raise Unprocessable(f"{decision.reason} of {rtype}/{rid}", expression=["baseVersion"])
    if decision.kind == "write":
        if decision.status == "merged" and decision.body != theirs:
            validate_resource(decision.body, expected_type=rtype)
        return write(decision.body, decision.status)
    if decision.kind == "noop":
        plan.result = MutationResult(
            mutation_id=m.mutation_id,
            status=decision.status,
            version_id=cur_version or None,
            resource=ours if decision.status == "merged" else None,
        )
        return plan
    base_body = base_of(base_v) if base_v is not None and base_v < cur_version else None
    return park(base_body, list(decision.conflicts))


def _base_loader(rtype: str, rid: str) -> Callable[[int], dict[str, Any] | None]:
    def load(version: int) -> dict[str, Any] | None:
        row = ResourceVersion.objects.filter(resource_type=rtype, resource_id=rid, version_id=version).first()
        return row.body if row is not None and not row.deleted else None

    return load


def _supersede(*, user: User, m: Mutation, version: int | None) -> None:
    if not m.supersedes:
        return
    Conflict.objects.filter(author=user, mutation_id=m.supersedes, status=Conflict.OPEN).update(
        status=Conflict.RESOLVED,
        resolution="superseded",
        resolved_by=user,
        resolved_at=timezone.now(),
        resolved_version=version,
    )


def _log_row(user: User, device_id: str, plan: _Plan, result: MutationResult) -> AppliedMutation:
    return AppliedMutation(
        user=user,
        mutation_id=plan.m.mutation_id,
        device_id=device_id,
        request_hash=plan.hash,
        status=result.status,
        result=result.to_json(),
        resource_type=plan.m.resource_type[:64],
        resource_id=plan.m.id[:64],
    )


def _replay(user: User, m: Mutation, h: str, prev: AppliedMutation | None) -> MutationResult | None:
    if prev is None:
        return None
    if prev.request_hash != h:
        return _rejected(
            m,
            ConflictError(
                f"mutationId {m.mutation_id!r} was already used for a different change; use a new id"
            ),
        )
    return MutationResult.from_json(prev.result)


# Versions written by the current push batch: one hint after the batch instead of one per mutation.
_batch_versions: contextvars.ContextVar[list[ResourceVersion] | None] = contextvars.ContextVar(
    "omnicare_sync_batch", default=None
)


#: Set by ``SyncConfig.ready`` when the FHIR store sends ``versions_written`` for every write; then the
#: signal receiver is the one place hints come from.
STORE_ANNOUNCES_WRITES = False


def announce_versions(versions: list[ResourceVersion]) -> None:
    """Queue a WebSocket hint for committed versions: collected per push batch, else sent after commit."""
    batch = _batch_versions.get()
    if batch is not None:
        transaction.on_commit(lambda: batch.extend(versions))
    else:
        notify_after_commit(versions)


def _announce(versions: list[ResourceVersion]) -> None:
    if not STORE_ANNOUNCES_WRITES:
        announce_versions(versions)


def _write(
    user: User, rtype: str, rid: str, body: dict[str, Any] | None, expected: int
) -> ResourceVersion | None:
    result = resources_apply(user=user, writes=[Write(rtype, rid, body, expected_version=expected)])[0]
    if result.version is not None:
        _announce([result.version])
    return result.version


def _apply_one(*, user: User, device_id: str, m: Mutation) -> MutationResult:
    """The careful path: one mutation in its own transaction (used when the batched path cannot be)."""
    h = mutation_hash(m)
    seen = _replay(user, m, h, AppliedMutation.objects.filter(user=user, mutation_id=m.mutation_id).first())
    if seen is not None:
        return seen
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    cur = (
                        Resource.objects.select_for_update()
                        .filter(resource_type=m.resource_type, resource_id=m.id)
                        .first()
                    )
                    plan = _plan(
                        user=user,
                        device_id=device_id,
                        m=m,
                        h=h,
                        cur=cur,
                        base_of=_base_loader(m.resource_type, m.id),
                    )
                    version = None
                    if plan.write is not None:
                        version = _write(
                            user, m.resource_type, m.id, plan.write.body, plan.write.expected_version or 0
                        )
                    if plan.conflict is not None:
                        plan.conflict.save()
                    result = plan.answer(version)
            except ConflictError as exc:  # transient (concurrent create of the same id): not stored, retry
                return _rejected(m, exc)
            except ApiError as exc:
                plan, result = _Plan(m=m, hash=h), _rejected(m, exc)
            if result.status != "rejected":
                _supersede(user=user, m=m, version=result.version_id)
            _log_row(user, device_id, plan, result).save()
        return result
    except IntegrityError:
        # The same mutation was applied concurrently (a duplicated request racing this one): answer as a replay.
        seen = _replay(
            user, m, h, AppliedMutation.objects.filter(user=user, mutation_id=m.mutation_id).first()
        )
        if seen is None:
            raise
        return seen


def _memo_check() -> Callable[..., None]:
    """``access_check`` memoised for one batch (same user; the answer depends only on the arguments, and
    scope-changing writes are never decided on this path). Failures are remembered too."""
    memo: dict[tuple[str, str, tuple[str, ...]], ApiError | None] = {}

    def check(*, user: User, action: str, resource_type: str, patient_ids: list[str]) -> None:
        key = (action, resource_type, tuple(patient_ids))
        if key not in memo:
            try:
                access_check(user=user, action=action, resource_type=resource_type, patient_ids=patient_ids)
                memo[key] = None
            except ApiError as exc:
                memo[key] = exc
        if memo[key] is not None:
            raise memo[key]  # type: ignore[misc]

    return check


def _base_from(
    bases: dict[tuple[str, str, int], dict[str, Any] | None], rtype: str, rid: str, version: int
) -> dict[str, Any] | None:
    return bases.get((rtype, rid, version))


def _keys_q(keys: Iterable[tuple[str, str]]) -> Q:
    by_type: dict[str, set[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, set()).add(rid)
    q = Q(pk__in=[])
    for rtype, ids in sorted(by_type.items()):
        q |= Q(resource_type=rtype, resource_id__in=sorted(ids))
    return q


class _Fallback(Exception):
    """The batched path met something it does not handle; the batch is redone mutation by mutation."""


def _apply_batch(*, user: User, device_id: str, mutations: tuple[Mutation, ...]) -> list[MutationResult]:
    """The fast path: decide every mutation against rows read once, then write them all with ONE store call
    (one feed bump) and bulk-insert conflicts and the mutation log, in one transaction. Same answers as the
    careful path (it falls back to it on anything unusual: a resource twice in the batch, a write the store
    refuses, a concurrent duplicate)."""
    hashes = [mutation_hash(m) for m in mutations]
    prev = {
        a.mutation_id: a
        for a in AppliedMutation.objects.filter(user=user, mutation_id__in=[m.mutation_id for m in mutations])
    }
    answers: dict[int, MutationResult] = {}
    todo: list[int] = []
    for i, m in enumerate(mutations):
        seen = _replay(user, m, hashes[i], prev.get(m.mutation_id))
        if seen is not None:
            answers[i] = seen
        else:
            todo.append(i)
    keys = [(mutations[i].resource_type, mutations[i].id) for i in todo]
    if len(set(keys)) != len(keys):
        raise _Fallback
    if todo:
        with transaction.atomic():
            current = (
                {
                    (r.resource_type, r.resource_id): r
                    for r in Resource.objects.select_for_update().filter(_keys_q(keys)).order_by("pk")
                }
                if keys
                else {}
            )
            wanted = set()
            for i in todo:
                m = mutations[i]
                cur = current.get((m.resource_type, m.id))
                if m.base_version is not None and cur is not None and m.base_version < cur.version_id:
                    wanted.add((m.resource_type, m.id, m.base_version))
            bases: dict[tuple[str, str, int], dict[str, Any] | None] = {}
            if wanted:
                # One query per type (ids and versions as IN lists), exact triples picked in Python.
                rows = ResourceVersion.objects.filter(
                    _keys_q([(t, i) for t, i, _ in wanted]), version_id__in={v for _, _, v in wanted}
                ).values_list("resource_type", "resource_id", "version_id", "deleted", "body")
                bases = {(t, i, v): (None if d else b) for t, i, v, d, b in rows if (t, i, v) in wanted}
            plans: dict[int, _Plan] = {}
            check = _memo_check()
            for i in todo:
                m = mutations[i]
                try:
                    plans[i] = _plan(
                        user=user,
                        device_id=device_id,
                        m=m,
                        h=hashes[i],
                        cur=current.get((m.resource_type, m.id)),
                        base_of=functools.partial(_base_from, bases, m.resource_type, m.id),
                        check=check,
                    )
                except ApiError as exc:
                    plans[i] = _Plan(m=m, hash=hashes[i], result=_rejected(m, exc))
            writing = [i for i in todo if plans[i].write is not None]
            try:
                with transaction.atomic():
                    # authorized: access_check already ran per mutation in _plan, with the same arguments;
                    # validated: _plan validated every body (and the merge result).
                    written = resources_apply(
                        user=user,
                        writes=[plans[i].write for i in writing],  # type: ignore[misc]
                        validated=True,
                        authorized=True,
                    )
            except (ApiError, IntegrityError) as exc:
                raise _Fallback from exc
            versions = [w.version for w in written if w.version is not None]
            for i, w in zip(writing, written, strict=True):
                answers[i] = plans[i].answer(w.version)
            conflicts = [plans[i].conflict for i in todo if plans[i].conflict is not None]
            if conflicts:
                Conflict.objects.bulk_create(conflicts)  # type: ignore[misc]
            for i in todo:
                if i not in answers:
                    answers[i] = plans[i].answer()
                if answers[i].status != "rejected":
                    _supersede(user=user, m=mutations[i], version=answers[i].version_id)
            try:
                with transaction.atomic():
                    AppliedMutation.objects.bulk_create(
                        [_log_row(user, device_id, plans[i], answers[i]) for i in todo]
                    )
            except IntegrityError as exc:  # a duplicate of this batch raced us
                raise _Fallback from exc
            if versions:
                _announce(versions)
    return [answers[i] for i in range(len(mutations))]


def push(*, user: User, request: PushRequest) -> PushResponse:
    """Apply a push batch, one result per mutation (see the module docstring for the contract)."""
    if len(request.mutations) > MAX_JOB_MUTATIONS:
        raise PayloadTooLarge(f"At most {MAX_JOB_MUTATIONS} mutations per batch")
    device = device_register(user=user, device_id=request.device_id)
    results: list[MutationResult] = []
    committed: list[ResourceVersion] = []
    token = _batch_versions.set(committed)
    try:
        with scopes.scope_cache():
            for start in range(0, len(request.mutations), BATCH_CHUNK):
                chunk = request.mutations[start : start + BATCH_CHUNK]
                # Mutations after a scope-changing write are decided with the new scope: chunk there.
                try:
                    results.extend(
                        _apply_batch(user=user, device_id=request.device_id, mutations=chunk)
                        if not any(m.resource_type in notify.SCOPE_TYPES for m in chunk)
                        else _apply_sequential(user=user, device_id=request.device_id, mutations=chunk)
                    )
                except _Fallback:
                    results.extend(_apply_sequential(user=user, device_id=request.device_id, mutations=chunk))
    finally:
        _batch_versions.reset(token)

        def flush() -> None:
            # Runs after the batch's own on_commit(extend) callbacks (registration order): immediately when
            # nobody holds a transaction, else when the caller's (e.g. the audited API request) commits.
            hint = hint_for(committed)
            if hint is not None:
                send_hint(hint)

        transaction.on_commit(flush)
    done = [r.mutation_id for r in results if r.status != "rejected"]
    # Replicache-style "last mutation applied for this device" (conflicts count: they are stored).
    with transaction.atomic():
        Device.objects.filter(pk=device.pk).update(
            **({"last_mutation_id": done[-1]} if done else {}), last_seen=timezone.now()
        )
    return PushResponse(results=tuple(results))


def push_audit(*, note: Any, request: PushRequest, response: PushResponse) -> None:
    """Fill the push batch's ONE audit event (``omnicare.audit.trail.AuditNote``): every patient and
    resource a mutation touched (applied, merged or parked as a conflict) and the counts per status.
    Mutations refused by access control are recorded as ``denied`` events of their own, in the same
    transaction (the batch itself succeeded)."""
    from omnicare.audit.services import NewEvent, append_events

    counts: dict[str, int] = {}
    denied: list[NewEvent] = []
    for m, r in zip(request.mutations, response.results, strict=True):
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status == "merged" and r.version_id:  # ops: watched for a later correction (ids only)
            note.detail.setdefault("merged", []).append(f"{m.resource_type}/{m.id}/{r.version_id}"[:200])
        body = m.resource if m.resource is not None else None
        patients = _compartment(m.resource_type, m.id, body) if body is not None else set()
        if r.status == "rejected":
            issue = ((r.outcome or {}).get("issue") or [{}])[0]
            if issue.get("code") == "forbidden":
                denied.append(NewEvent(
                    action="sync-push", user=note.user, resource_type=m.resource_type[:64],
                    resource_id=m.id[:64], patient_ids=sorted(patients), outcome="denied",
                    device_id=request.device_id, detail={"mutationId": m.mutation_id[:64]},
                ))
            continue
        if body is None:
            patients = set(
                ResourcePatient.objects.filter(
                    resource__resource_type=m.resource_type, resource__resource_id=m.id
                ).values_list("patient_id", flat=True)
            )
        note.touch(resource_type=m.resource_type, resource_id=m.id, patient_ids=patients)
    note.detail["mutations"] = len(request.mutations)
    note.detail["statuses"] = counts
    if denied:
        append_events(denied)


def _apply_sequential(*, user: User, device_id: str, mutations: tuple[Mutation, ...]) -> list[MutationResult]:
    results = []
    for m in mutations:
        result = _apply_one(user=user, device_id=device_id, m=m)
        results.append(result)
        if m.resource_type in notify.SCOPE_TYPES and result.status in ("applied", "merged"):
            scopes.scope_cache_clear()  # this write may have changed who sees what
    return results


# ---------------------------------------------------------------------------------------------------------
# Push jobs (large batches through Celery)
# ---------------------------------------------------------------------------------------------------------


def _job_setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def push_job_create(*, user: User, request: PushRequest) -> PushJob:
    """Store a batch for :func:`push_job_run`, queued and not yet handed to the broker (the outbox row):
    the caller commits, then calls :func:`push_job_enqueue`; the sweeper retries what was never sent."""
    device_register(user=user, device_id=request.device_id)
    return PushJob.objects.create(
        user=user, device_id=request.device_id, request=request.to_json(), total=len(request.mutations)
    )


def push_job_enqueue(*, job_id: str) -> bool:
    """Hand a committed job to the broker (after commit). False when the broker is unreachable (the row
    stays queued with no outbox mark; the API then answers 503 and removes it, the sweeper retries it)."""
    from omnicare.core.broker import enqueue

    from .tasks import apply_push_job

    if not enqueue(apply_push_job, str(job_id)):
        return False
    PushJob.objects.filter(pk=job_id, enqueued__isnull=True).update(enqueued=timezone.now())
    return True


def _job_claim(job_id: str) -> bool:
    """Take the job for this worker: queued, or running with a stale heartbeat (its worker died). A
    duplicate delivery of a job that another live worker runs (or that is finished) gets False."""
    now = timezone.now()
    stale = now - timedelta(seconds=_job_setting("OMNICARE_JOB_STALE_SECONDS", 60))
    return bool(
        PushJob.objects.filter(pk=job_id)
        .filter(Q(status=PushJob.QUEUED) | Q(status=PushJob.RUNNING, heartbeat__lt=stale))
        .update(status=PushJob.RUNNING, heartbeat=now, started=now, attempts=F("attempts") + 1)
    )


def _job_fail(job: PushJob, error: str) -> PushJob:
    job.status, job.error, job.finished = PushJob.FAILED, error[:500], timezone.now()
    job.save(update_fields=["status", "error", "finished"])
    return job


def push_job_run(*, job_id: str) -> PushJob:
    """Apply a stored batch in chunks of ``OMNICARE_JOB_CHUNK`` mutations, each committed in its own
    transaction with its audit event, its results and the job's progress. So other writers never wait for
    the whole job, and a job whose worker died resumes after its last committed chunk (a re-run of any
    chunk replays its mutations' stored results: nothing is applied twice)."""
    from omnicare.access.services import device_check
    from omnicare.audit.trail import audited

    job = PushJob.objects.select_related("user").get(pk=job_id)
    if job.status in (PushJob.DONE, PushJob.FAILED) or not _job_claim(job_id):
        return job
    job.refresh_from_db()
    try:
        request = parse_push(job.request, max_mutations=MAX_JOB_MUTATIONS)
        device_check(user=job.user, device_id=request.device_id)  # revoked after it was queued: not applied
    except ApiError as exc:
        return _job_fail(job, exc.diagnostics)
    size = max(1, int(_job_setting("OMNICARE_JOB_CHUNK", 100)))
    start = job.progress
    while start < len(request.mutations):
        chunk = PushRequest(device_id=request.device_id, mutations=request.mutations[start : start + size])
        try:
            with audited(user=job.user, action="sync-push", device_id=request.device_id,
                         detail={"job": str(job.pk), "from": start}) as note:  # fmt: skip
                response = push(user=job.user, request=chunk)
                push_audit(note=note, request=chunk, response=response)
                PushJobChunk.objects.update_or_create(
                    job=job, start=start, defaults={"results": response.to_json()["results"]}
                )
                start += len(chunk.mutations)
                PushJob.objects.filter(pk=job.pk).update(progress=start, heartbeat=timezone.now())
        except ApiError as exc:
            return _job_fail(job, exc.diagnostics)
    results: list[Any] = []
    for c in PushJobChunk.objects.filter(job=job).order_by("start"):
        results.extend(c.results)
    job.status, job.progress, job.result, job.finished = PushJob.DONE, start, {"results": results}, timezone.now()
    job.save(update_fields=["status", "progress", "result", "finished"])
    return job


@dataclass(frozen=True)
class SweepReport:
    requeued: int  # running jobs whose worker stopped sending heartbeats
    sent: int  # queued jobs (re)sent to the broker: never sent, or sent long ago and never started
    failed: int  # gave up after OMNICARE_JOB_MAX_ATTEMPTS
    snapshots: int = 0  # pending snapshots whose task was lost (sent long ago, never built): sent again


def push_jobs_sweep() -> SweepReport:
    """The beat task's body (every ~15 s): re-queue jobs whose worker died, send outbox rows the broker
    never got, give up on jobs that keep killing their workers, and re-send snapshots pending for longer than
    ``OMNICARE_JOB_LOST_SECONDS`` (their task was lost). Safe to run anywhere, any time."""
    now = timezone.now()
    stale = now - timedelta(seconds=_job_setting("OMNICARE_JOB_STALE_SECONDS", 60))
    lost = now - timedelta(seconds=_job_setting("OMNICARE_JOB_LOST_SECONDS", 600))
    grace = now - timedelta(seconds=5)  # the API enqueues its own job right after commit
    max_attempts = int(_job_setting("OMNICARE_JOB_MAX_ATTEMPTS", 5))
    dead = PushJob.objects.filter(status=PushJob.RUNNING, heartbeat__lt=stale)
    failed = dead.filter(attempts__gte=max_attempts).update(
        status=PushJob.FAILED, finished=now, error="The job stopped its worker too many times; not finished"
    )
    revived = list(dead.values_list("pk", flat=True)[:500])
    requeued = PushJob.objects.filter(pk__in=revived, status=PushJob.RUNNING, heartbeat__lt=stale).update(
        status=PushJob.QUEUED, enqueued=None, heartbeat=now
    )
    todo = PushJob.objects.filter(status=PushJob.QUEUED).filter(
        Q(pk__in=revived) | Q(enqueued__isnull=True, created__lt=grace) | Q(enqueued__lt=lost)
    )
    sent = 0
    for job_id in list(todo.values_list("pk", flat=True)[:500]):
        PushJob.objects.filter(pk=job_id).update(enqueued=None)
        if not push_job_enqueue(job_id=str(job_id)):
            break  # broker still down: the next sweep tries again
        sent += 1
    snapshots = 0
    from omnicare.core.broker import enqueue

    from .tasks import build_snapshot

    for snap_id in list(Snapshot.objects.filter(status=Snapshot.PENDING, created__lt=lost).values_list("pk", flat=True)[:100]):
        if not enqueue(build_snapshot, str(snap_id)):  # idempotent: a duplicate build gives the same image
            break
        snapshots += 1
    return SweepReport(requeued=requeued, sent=sent, failed=failed, snapshots=snapshots)


def _uuid_or_none(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def push_job_get(*, user: User, job_id: str) -> PushJob:
    key = _uuid_or_none(job_id)  # not a UUID: 404, not a database error (found by schemathesis)
    job = PushJob.objects.filter(pk=key, user=user).first() if key is not None else None
    if job is None:
        raise NotFound("No such push job")
    return job


# ---------------------------------------------------------------------------------------------------------
# Conflicts
# ---------------------------------------------------------------------------------------------------------


def conflict_may_access(*, user: User, conflict: Conflict, action: str = "read") -> bool:
    """THE rule for who may read (``read``) or resolve (``update``) a stored conflict: its author, or a clinician
    whose role and scope cover ``action`` on the conflict's resource type for EVERY patient it names
    (``access.services.may_access``). Administrators, auditors and staff flags give nothing: a conflict holds
    clinical content (base/ours/theirs). A conflict naming no patient is its author's only."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if conflict.author_id == user.pk:
        return True
    patients = [str(p) for p in conflict.patient_ids or [] if p]
    if not patients:
        return False
    return may_access(user=user, action=action, resource_type=conflict.resource_type, patient_ids=patients)


#: How many of the newest conflicts a non-author listing looks through for ones in the caller's scope.
CONFLICT_SCAN = 5000


def conflicts_list(
    *, user: User, status: str | None = "open", limit: int = 100, device_id: str | None = None
) -> list[Conflict]:
    """Conflicts ``user`` may read (:func:`conflict_may_access`): their own and those of patients in their scope.
    With ``device_id``: only the user's own, stored by pushes of that device."""
    limit = max(1, min(limit, 1000))
    qs = Conflict.objects.all()
    if device_id is not None:
        qs = Conflict.objects.filter(author=user, device_id=device_id)
    if status:
        qs = qs.filter(status=status)
    out: list[Conflict] = []
    with visible_patients_cache():
        for c in qs.select_related("author", "resolved_by").order_by("-created")[:CONFLICT_SCAN]:
            if conflict_may_access(user=user, conflict=c):
                out.append(c)
                if len(out) >= limit:
                    break
    return out


def conflict_get(*, user: User, conflict_id: str, action: str = "read") -> Conflict:
    try:
        qs = Conflict.objects.select_related("author", "resolved_by").filter(pk=conflict_id)
        c = qs.first()
    except Exception:  # not a UUID
        c = None
    if c is None or not conflict_may_access(user=user, conflict=c, action=action):
        raise NotFound("No such conflict")
    return c


def conflict_resolve(
    *,
    user: User,
    conflict_id: str,
    resolution: str,
    resource: dict[str, Any] | None = None,
    base_version: int | None = None,
) -> tuple[Conflict, MutationResult]:
    """Resolve an open conflict: ``keep-mine`` (the parked client edit), ``keep-server`` (no change) or
    ``edited`` (``resource``, a hand-merged version). ``base_version`` is the server version the person saw
    (default: the conflict's ``ours_version``); if the record moved on since, 409 and nothing is written.
    """
    if resolution not in RESOLUTIONS:
        raise BadRequest(f"resolution must be one of {', '.join(RESOLUTIONS)}", expression=["resolution"])
    conflict_get(user=user, conflict_id=conflict_id, action="update")  # author or in scope (404 for others)
    with transaction.atomic():
        c = Conflict.objects.select_for_update().get(pk=conflict_id)
        if c.status != Conflict.OPEN:
            raise ConflictError("This conflict is already resolved")
        rtype, rid = c.resource_type, c.resource_id
        cur = Resource.objects.select_for_update().filter(resource_type=rtype, resource_id=rid).first()
        cur_version = cur.version_id if cur is not None else 0
        live_version = cur_version if cur is not None and not cur.deleted else 0
        expected = base_version if base_version is not None else (c.ours_version or 0)
        if expected != cur_version:
            raise ConflictError(
                f"{rtype}/{rid} changed since (now version {cur_version}); reload and resolve again",
                headers={"ETag": f'W/"{cur_version}"'},
            )
        body: dict[str, Any] | None
        if resolution == "keep-server":
            version: ResourceVersion | None = None
        else:
            if resolution == "keep-mine":
                body = c.theirs
            else:
                if resource is None:
                    raise BadRequest("resolution 'edited' needs the resource", expression=["resource"])
                body = dict(resource)
                body["id"] = rid
                validate_resource(body, expected_type=rtype)
            patients = _compartment(rtype, rid, body) | _compartment(
                rtype, rid, cur.body if cur is not None and not cur.deleted else None
            )
            access_check(
                user=user,
                action="update" if live_version else "create",
                resource_type=rtype,
                patient_ids=sorted(patients),
            )
            version = _write(user, rtype, rid, body, live_version)
        c.status, c.resolution, c.resolved_by, c.resolved_at = (
            Conflict.RESOLVED,
            resolution,
            user,
            timezone.now(),
        )
        c.resolved_version = version.version_id if version is not None else (cur_version or None)
        c.save(update_fields=["status", "resolution", "resolved_by", "resolved_at", "resolved_version"])
    if version is not None:
        res = MutationResult(
            mutation_id=c.mutation_id,
            status="applied",
            version_id=version.version_id,
            resource=None if version.deleted else version.body,
        )
    else:
        res = MutationResult(
            mutation_id=c.mutation_id,
            status="applied",
            version_id=cur_version or None,
            resource=cur.body if cur is not None and not cur.deleted else None,
        )
    return c, res


def conflict_json(c: Conflict) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "resourceType": c.resource_type,
        "resourceId": c.resource_id,
        "status": c.status,
        "baseVersion": c.base_version,
        "oursVersion": c.ours_version,
        "base": c.base,
        "ours": c.ours,
        "theirs": c.theirs,
        "paths": c.paths,
        "conflicts": c.details,
        "author": c.author.get_username(),
        "deviceId": c.device_id,
        "mutationId": c.mutation_id,
        "created": c.created.isoformat(),
        "resolution": c.resolution or None,
        "resolvedBy": c.resolved_by.get_username() if c.resolved_by else None,
        "resolvedAt": c.resolved_at.isoformat() if c.resolved_at else None,
        "resolvedVersion": c.resolved_version,
    }


# ---------------------------------------------------------------------------------------------------------
# Snapshots (first sync of a large scope, built by a Celery job)
# ---------------------------------------------------------------------------------------------------------


def snapshot_request(*, user: User, device_id: str) -> Snapshot:
    """Create a pending snapshot for the caller's device (the caller enqueues :func:`snapshot_build`)."""
    device_register(user=user, device_id=device_id)
    return Snapshot.objects.create(user=user, device_id=device_id)


def _fill_all(
    keys: frozenset[str], at_seq: int, readable: Callable[[str], bool], page: int = 2000
) -> Iterable[Change]:
    after = 0
    while True:
        rows, after, more = fill_page(
            keys=keys, at_seq=at_seq, after_seq=after, limit=page, readable=readable
        )
        yield from rows
        if not more:
            return


def snapshot_build(*, snapshot_id: str) -> Snapshot:
    """Build the gzip image: the scope's current state at a feed position, and the cursor to continue from.

    Idempotent: a ready snapshot is left alone; a re-run of a pending one rebuilds it from scratch.
    """
    snap = Snapshot.objects.select_related("user").get(pk=snapshot_id)
    if snap.status == Snapshot.READY:
        return snap
    user = snap.user
    keys = scopes.scope_keys(user=user)
    at = feed_head()
    scope_row = _scope_set(user=user, keys=keys)
    cursor = cursor_encode(user=user, state=CursorState(at, scope_row.pk))
    changes = [c.to_json() for c in _fill_all(keys, at, _readable_types(user))]
    raw = json.dumps({"cursor": cursor, "seq": at, "changes": changes}, separators=(",", ":")).encode()
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    from omnicare.audit.services import audit_record  # every patient the image holds, like a pull page

    with transaction.atomic():
        snap.status, snap.seq, snap.count, snap.cursor = Snapshot.READY, at, len(changes), cursor
        snap.data, snap.size, snap.finished = data, len(data), timezone.now()
        snap.save()
        audit_record(user=user, action="snapshot-build", resource_type="Snapshot", resource_id=str(snap.id),
                     patient_ids=sorted(scopes.split_keys(keys)[0]), device_id=snap.device_id or None,
                     detail={"changes": len(changes)})
    return snap


def snapshot_patients_if_current(*, user: User, snap: Snapshot) -> list[str] | None:
    """The snapshot's patients if it was built for the user's *current* scope, else None.

    A snapshot is an image of a scope at build time: once the scope changed (a break-the-glass grant
    expired, a care team ended) it must not be served any more (the device asks for a new one).
    """
    keys = scopes.scope_keys(user=user)
    try:
        built_for = cursor_decode(user=user, cursor=snap.cursor).scope_id
    except BadRequest:
        return None
    if _scope_set(user=user, keys=keys).pk != built_for:
        return None
    return sorted(scopes.split_keys(keys)[0])


def snapshot_get(*, user: User, snapshot_id: str) -> Snapshot:
    try:
        snap = Snapshot.objects.filter(pk=snapshot_id, user=user).first()
    except Exception:
        snap = None
    if snap is None:
        raise NotFound("No such snapshot")
    return snap
