"""Push: every mutation decided on its own (pyclient.push_rules), written in batches (see the notes "Push" in
services.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from omnicare.access.services import (
    DeviceRevoked,
    access_check,
    device_id_check,
    device_id_ever_revoked,
)
from omnicare.audit.services import NewEvent, append_events
from omnicare.core.errors import (
    ApiError,
    BadRequest,
    PayloadTooLarge,
    Unprocessable,
)
from omnicare.core.errors import (
    Conflict as ConflictError,
)
from omnicare.fhir import bulkwrite
from omnicare.fhir.models import Resource, ResourcePatient, ResourceVersion
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.search import compartment_patients
from omnicare.fhir.services import Write
from omnicare.fhir.validation import check_id, check_type, validate_resource
from pyclient.protocol import (
    MAX_PUSH_MUTATIONS as PROTOCOL_MAX_PUSH,
)
from pyclient.protocol import (
    Mutation,
    MutationResult,
    ProtocolError,
    PushRequest,
    PushResponse,
)
from pyclient.push_rules import decide as push_decide
from pyclient.push_rules import mutation_hash
from pyclient.registration import mrn_device_problem

from . import notify
from . import scope as scopes
from .authorship import ours_author, with_author
from .cursor import User
from .devices import device_register
from .epoch import recover_rewrite
from .models import AppliedMutation, Conflict, Device
from .notify import hint_for, notify_after_commit, send_hint

#: A push with more mutations than this is refused whole with 413 (the shared protocol's limit; split it,
#: or send it to the background-job endpoint).
MAX_PUSH_MUTATIONS = PROTOCOL_MAX_PUSH
#: The background-job endpoint (``/api/sync/push/jobs``, 202 + job id) takes batches up to this size.
MAX_JOB_MUTATIONS = 5000
#: Mutations decided and written together by the batched path (one transaction, one feed bump).
BATCH_CHUNK = 100


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
        epoch = data.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise ProtocolError("PushRequest.epoch: expected a string")
        request = PushRequest(device_id=device_id, mutations=muts, epoch=epoch)
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


def compartment_of(rtype: str, rid: str, body: dict[str, Any] | None) -> set[str]:
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
    if rtype == "Patient" and theirs is not None and not live:  # issue 18: a device registers from its own range
        problem = mrn_device_problem(theirs, device_id)
        if problem:
            raise Unprocessable(problem, expression=["Patient.identifier"])
    live_version = cur_version if live else 0
    ours = cur.body if live and cur is not None else None
    plan = _Plan(m=m, hash=h, cur_version=cur_version, ours=ours)
    base_v = m.base_version
    patients = compartment_of(rtype, rid, ours) | compartment_of(rtype, rid, theirs)
    # Checked before anything else happens: a conflict would store the edit and show the server's copy.
    action = "delete" if m.op == "delete" else ("update" if live else "create")
    check(user=user, action=action, resource_type=rtype, patient_ids=sorted(patients))

    def park(base: dict[str, Any] | None, details: list[dict[str, Any]]) -> _Plan:
        # Who made the version that won, and when (issue 18): shipped with each conflict detail.
        details = with_author(details, *ours_author(resource_type=rtype, resource_id=rid, cur=cur))
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


_LOG_COLUMNS = ("user_id", "mutation_id", "device_id", "request_hash", "status", "result", "resource_type",
                "resource_id", "created")


def _log_insert(rows: list[AppliedMutation]) -> None:
    """Store the batch's idempotency log rows in one statement without the ORM's INSERT compiler: on PostgreSQL
    ``INSERT .. SELECT unnest(arrays)`` (half the Python CPU of ``bulk_create`` for a push of 10, and still
    one round trip), ``COPY`` for a big batch (``fhir.bulkwrite``), ``bulk_create`` elsewhere. A duplicate
    (user, mutationId) is Django's ``IntegrityError`` either way."""
    if connection.vendor != "postgresql":
        AppliedMutation.objects.bulk_create(rows)
        return
    now = timezone.now()
    values = [(r.user_id, r.mutation_id, r.device_id, r.request_hash, r.status, json.dumps(r.result), r.resource_type,
               r.resource_id, now) for r in rows]  # fmt: skip
    if bulkwrite.copy_ok(len(values)):
        bulkwrite.copy_rows(AppliedMutation, _LOG_COLUMNS, values)
        return
    columns = [list(c) for c in zip(*values, strict=True)]
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO sync_appliedmutation ({', '.join(_LOG_COLUMNS)}) SELECT unnest(%s::bigint[]), "  # noqa: S608
            "unnest(%s::text[]), unnest(%s::text[]), unnest(%s::text[]), unnest(%s::text[]), unnest(%s::jsonb[]), "
            "unnest(%s::text[]), unnest(%s::text[]), unnest(%s::timestamptz[])",
            columns,
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


@contextlib.contextmanager
def one_hint_after_commit() -> Iterator[None]:
    """Collect the versions written in this block and send ONE WebSocket hint for them all after COMMIT
    (instead of one per write). Each write's callback (dropped if its savepoint rolled back) adds its
    versions after COMMIT; the flush, registered last, runs after them with the final feed positions.
    Used by batch writers outside the push (e.g. the HL7 worker's batch of messages)."""
    committed: list[ResourceVersion] = []
    token = _batch_versions.set(committed)
    try:
        yield
    finally:
        _batch_versions.reset(token)

    def flush() -> None:
        hint = notify.hint_for(committed)
        if hint is not None:
            notify.send_hint(hint)

    transaction.on_commit(flush)


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


def write_one(
    user: User, rtype: str, rid: str, body: dict[str, Any] | None, expected: int
) -> ResourceVersion | None:
    # join_care_team: a Patient registered on a device puts its registering clinician on its care team (issue 18)
    result = FhirStore(user=user).apply([Write(rtype, rid, body, expected_version=expected)], join_care_team=True)[0]
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
                        version = write_one(
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


class PushRedo(Exception):
    """The first, savepoint-free attempt of a push (``optimistic=True``) wrote something and then met what only
    the careful path handles (a write the store refused, a concurrent duplicate of a mutation). Nothing of that
    attempt may be kept: it leaves the transaction aborted. :func:`push_attempts` lets the caller's transaction
    roll back whole and runs the push again the careful way."""


def push_attempts[T](run: Callable[[bool], T]) -> T:
    """``run(True)``, and when it raises :class:`PushRedo`, ``run(False)``. ``run(optimistic)`` must open and
    close the transaction the push runs in (e.g. ``audited``'s), so the exception rolls back everything of the
    first attempt (its writes, its audit event, its hints) before the second starts from scratch.

    Why: a savepoint costs two round trips, and the push needs one per chunk only to survive failures that
    almost never happen (two devices creating the same new id at the same moment, a mutation sent twice at
    once). Redoing the whole request in those rare cases is cheaper than paying on every push."""
    try:
        return run(True)
    except PushRedo:
        return run(False)


def _apply_batch(
    *, user: User, device_id: str, mutations: tuple[Mutation, ...], optimistic: bool = False
) -> list[MutationResult]:
    """The fast path: decide every mutation against rows read once, then write them all with ONE store call
    (one feed bump) and bulk-insert conflicts and the mutation log, in one transaction. Same answers as the
    careful path (it falls back to it on anything unusual: a resource twice in the batch, a write the store
    refuses, a concurrent duplicate).

    ``optimistic``: no savepoint of its own; a failure after the first write raises :class:`PushRedo` (the
    whole push is redone, see :func:`push_attempts`) instead of undoing this chunk alone."""
    # What a failure once something is written turns into: undo the chunk (its savepoint) or the whole push.
    failed: type[Exception] = PushRedo if optimistic else _Fallback
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
        with transaction.atomic(savepoint=not optimistic):
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
            # No savepoint of its own around the store call or the log insert below: a failure leaves this block
            # as ``failed``, and this block's savepoint (or the whole push's transaction) undoes the chunk before
            # the careful path redoes it (two round trips saved per savepoint, on every push).
            try:
                # _plan validated every body (and the merge result); the store asks the same memo _plan asked,
                # so the access checks already made are not run again.
                # fresh: what the locking read above did not find is not looked up again; one created meanwhile
                # by another writer fails the unique constraint, and the careful path decides it.
                written = FhirStore(user=user, device_id=device_id, policy=check).apply(
                    [plans[i].write for i in writing],  # type: ignore[misc]
                    fresh=frozenset(k for k in keys if k not in current),
                    join_care_team=True,  # issue 18: the registering clinician joins a new patient's team
                    savepoint=False,
                )
            except (ApiError, IntegrityError) as exc:
                raise failed from exc
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
                with transaction.atomic(savepoint=False):
                    _log_insert([_log_row(user, device_id, plans[i], answers[i]) for i in todo])
            except IntegrityError as exc:  # a duplicate of this batch raced us
                raise failed from exc
            if versions:
                _announce(versions)
    return [answers[i] for i in range(len(mutations))]


def push(
    *, user: User, request: PushRequest, optimistic: bool = False, revocation_checked: bool = False
) -> PushResponse:
    """Apply a push batch, one result per mutation (see the module docstring for the contract).

    ``optimistic=True`` (only through :func:`push_attempts`): the batched chunks take no savepoint and may raise
    :class:`PushRedo`; the answers are the same either way. ``revocation_checked``: the caller found that no
    one ever revoked this device id (``device_id_ever_revoked``), in this request; otherwise it is checked here.
    """
    if len(request.mutations) > MAX_JOB_MUTATIONS:
        raise PayloadTooLarge(f"At most {MAX_JOB_MUTATIONS} mutations per batch")
    if not revocation_checked and device_id_ever_revoked(device_id=request.device_id):
        raise DeviceRevoked()  # a burnt device id applies nothing (device_register's rule, checked first)
    original, answered = request, {}
    if any(m.recover for m in request.mutations):  # a device re-sending after a server restore (epoch.py)

        request, answered = recover_rewrite(user=user, request=request)
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
                        _apply_batch(user=user, device_id=request.device_id, mutations=chunk, optimistic=optimistic)
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
    if answered:
        rest = iter(results)
        results = [answered[i] if i in answered else next(rest) for i in range(len(original.mutations))]
    done = [r.mutation_id for r in results if r.status != "rejected"]
    # Replicache-style "last mutation applied for this device" (conflicts count: they are stored).
    seen = {**({"last_mutation_id": done[-1]} if done else {}), "last_seen": timezone.now()}
    with transaction.atomic(savepoint=False):  # a failure fails the push; inside the request's transaction
        # The device's row is only written, never read: a push from a known device costs this one UPDATE.
        # The first push of a new device registers it (same transaction: it exists iff the push committed).
        if not Device.objects.filter(user=user, device_id=request.device_id).update(**seen):
            device = device_register(user=user, device_id=request.device_id, touch=False)
            Device.objects.filter(pk=device.pk).update(**seen)
    return PushResponse(results=tuple(results))


def push_audit(*, note: Any, request: PushRequest, response: PushResponse) -> None:
    """Fill the push batch's ONE audit event (``omnicare.fhir.trail.AuditNote``): every patient and
    resource a mutation touched (applied, merged or parked as a conflict) and the counts per status.
    Mutations refused by access control are recorded as ``denied`` events of their own, in the same
    transaction (the batch itself succeeded)."""
    counts: dict[str, int] = {}
    denied: list[NewEvent] = []
    # A delete names no patient in its body: its compartment rows (kept on the tombstone) say whose chart it
    # touched, read for all of the batch's deletes at once.
    gone = [(m.resource_type, m.id) for m, r in zip(request.mutations, response.results, strict=True)
            if m.resource is None and r.status != "rejected"]  # fmt: skip
    members: dict[tuple[str, str], set[str]] = {}
    if gone:
        rows = ResourcePatient.objects.filter(
            resource__in=Resource.objects.filter(_keys_q(gone)).values("pk")
        ).values_list("resource__resource_type", "resource__resource_id", "patient_id")
        for rtype, rid, pid in rows:
            members.setdefault((rtype, rid), set()).add(pid)
    for m, r in zip(request.mutations, response.results, strict=True):
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status == "merged" and r.version_id:  # ops: watched for a later correction (ids only)
            note.detail.setdefault("merged", []).append(f"{m.resource_type}/{m.id}/{r.version_id}"[:200])
        body = m.resource if m.resource is not None else None
        patients = compartment_of(m.resource_type, m.id, body) if body is not None else set()
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
            patients = members.get((m.resource_type, m.id), set())
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


