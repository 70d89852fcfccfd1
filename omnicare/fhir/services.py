"""FHIR store services: keyword-only functions under the per-request façade (``repository.FhirStore``) and sync.

Every write, whatever its entry point (REST, transaction Bundle, sync push, bulk import, HL7, CDS), goes through
the store's :func:`resources_apply` / :func:`resources_apply_each` (their engine is :func:`_apply`), which writes
the current state, the search index, the compartment rows, and the history rows with their change-feed ``seq``
in one database transaction, asking the store's access policy about every write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from omnicare.access import roles as rbac
from omnicare.access.services import (
    AllPatients,
    access_check,
    patient_recreate_check,
    patient_registered,
    patients_within,
    user_practitioner_ids,
    visible_patient_ids,
    visible_patients_cache,
)
from omnicare.audit.services import audit_record
from omnicare.core.errors import ApiError, BadRequest, Conflict, Gone, NotFound, PreconditionFailed
from omnicare.core.feed_horizon import (  # the proof lives there: access needs it too, below fhir
    FEED_XMAX_SQL,
    FEED_XMIN_SQL,
    feed_horizon_applies,
    feed_settled,
    in_testcase_transaction,
)

from . import bulkwrite, sqlcache
from .authorship import write_checked
from .models import (
    FeedCounter,
    Resource,
    ResourcePatient,
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchString,
    SearchToken,
)
from .search import (
    COMPARTMENT,
    CONTROL_PARAMS,
    SEARCH_PARAMS,
    SORTS,
    SUPPORTED_TYPES,
    IndexRows,
    build_query,
    compartment_patients,
    index_rows,
    parse_date_range,
    parse_reference,
)
from .signals import versions_written
from .validation import check_id, check_type, validate_resource

type User = AbstractBaseUser | AnonymousUser | None
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Write:
    """One write for :func:`resources_apply`.

    ``body`` None means delete. ``expected_version``: None = unconditional; 0 = the resource must not exist
    (or be deleted with no live version); n = the current version must be n (else 412, nothing written).
    """

    resource_type: str
    resource_id: str
    body: dict[str, Any] | None
    expected_version: int | None = None
    #: ``bulkwrite.Ready`` of ``body`` computed ahead (bulk import workers); used only if the body is written as is
    ready: Any = None

    @classmethod
    def valid(
        cls, resource_type: str, resource_id: str, body: dict[str, Any] | None, expected_version: int | None = None
    ) -> Write:
        """A write whose type, id and body the validator accepted (422/400 otherwise): for callers that build
        bodies in code (HL7 mapping, CDS). The write engine never validates: every ``Write`` it gets carries a
        valid body, checked once by whoever made it (the push's ``_plan``, bulk import's pool, a Bundle entry,
        this)."""
        check_type(resource_type)
        check_id(resource_id)
        if body is not None:
            validate_resource(body, expected_type=resource_type)
            if body.get("id") not in (None, resource_id):
                raise BadRequest("The id in the body does not match", expression=["id"])
        return cls(resource_type, resource_id, body, expected_version)


#: The access policy the write engine asks about every write (``access.services.access_check``'s signature).
#: The store passes its own (``repository.FhirStore.policy``; None stands for ``access_check`` itself).
type AccessPolicy = Callable[..., None]


def system_trusted(*, user: User, action: str, resource_type: str, patient_ids: Sequence[str] = ()) -> None:
    """The access policy of a system actor (HL7 interface, CDS re-check, an administrator's trusted import,
    the demo seeder): trusted for every patient, like Medplum's system repository. Chosen only through
    ``repository.FhirStore.system``."""


@dataclass
class WriteResult:
    """What one write did. ``version`` is None for a delete of something already absent (a no-op)."""

    resource_type: str
    resource_id: str
    version: ResourceVersion | None
    created: bool = False
    status: int = 200  # 201 created, 200 updated, 204 deleted / no-op delete


@dataclass
class HistoryPage:
    versions: list[ResourceVersion]
    next_before_seq: int | None  # pass as ``before_seq`` for the next (older) page
    total: int | None = None


@dataclass
class _Prepared:
    write: Write
    existing: Resource | None
    version_id: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    patient_ids: list[str] = field(default_factory=list)
    created: bool = False
    noop: bool = False
    ready: Any = None  # bulkwrite.Ready of ``body``, when computed ahead for exactly this body


# -------------------------------------------------------------------------------------------------------------
# The write path
# -------------------------------------------------------------------------------------------------------------


def _bump_feed(k: int) -> int:
    """SQLite: reserve ``k`` feed positions from the counter row and return the LAST one (the batch gets
    last-k+1 .. last).

    SQLite serialises writers with the database lock (transaction_mode IMMEDIATE), taken at the transaction's
    first statement and held through COMMIT, so positions taken anywhere in the transaction are in commit order
    and a reader doing ``seq > cursor`` never skips. Upsert rather than UPDATE so a flushed table (tests)
    recreates the row. PostgreSQL never calls this: see :func:`feed_settled`.
    """
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO fhir_feedcounter (id, value) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET value = fhir_feedcounter.value + excluded.value "
            "RETURNING value",
            [k],
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _feed_positions(k: int) -> list[int]:
    """``k`` new feed positions, ascending: PostgreSQL's ``fhir_feed_seq`` (no lock), SQLite's counter row."""
    if connection.vendor != "postgresql":
        last = _bump_feed(k)
        return list(range(last - k + 1, last + 1))
    with connection.cursor() as cur:
        cur.execute("SELECT nextval('fhir_feed_seq') FROM generate_series(1, %s)", [k])
        return sorted(int(r[0]) for r in cur.fetchall())


_FEED_KEY = "omnicare.fhir.feed"


def _feed_deferrable() -> bool:
    """True when the feed position can wait for COMMIT: our PostgreSQL backend (``before_commit``), inside a
    transaction that will really commit (a test case's wrapping transaction never does: take it now)."""
    return hasattr(connection, "before_commit") and connection.in_atomic_block and not in_testcase_transaction()


def _provisional_seqs(k: int) -> list[int]:
    """``k`` unique negative positions (no lock: a sequence). Invisible to ``seq > cursor`` pulls."""
    with connection.cursor() as cur:
        cur.execute("SELECT -nextval('fhir_provisional_seq') FROM generate_series(1, %s)", [k])
        return [int(r[0]) for r in cur.fetchall()]


_FEED_UNDOABLE = "omnicare.fhir.feed.undoable"


def _feed_defer(versions: list[ResourceVersion]) -> None:
    state: dict[str, Any] = connection.tx_state  # type: ignore[attr-defined]
    if _FEED_KEY not in state:
        state[_FEED_KEY] = []
        connection.before_commit(_feed_seal)  # type: ignore[attr-defined]
    state[_FEED_KEY].extend(versions)
    # Written under a savepoint: that savepoint may roll back and take these rows with it. Written with none
    # open, they live exactly as long as the transaction (what the sync push and REST writes do).
    if any(connection.savepoint_ids):  # (an atomic(savepoint=False) block is listed as None)
        state[_FEED_UNDOABLE] = True


def _feed_seal() -> None:
    """Right before COMMIT (PostgreSQL): give this transaction's surviving versions their real feed positions,
    in insertion order (versions whose savepoint rolled back are gone from the table and are skipped).

    One round trip and no lock: ONE message that takes every position (``nextval``), then opens a savepoint,
    writes the positions with an UPDATE and releases it. The UPDATE runs in a subtransaction, so the rows it
    writes carry a fresh transaction id (their ``xmin``), assigned after every position was taken: the
    "allocation stamp" that :func:`feed_settled` compares with a reader's snapshot. The order matters: a
    position taken after the stamp would break the proof there, hence positions first, stamp second.
    """
    state: dict[str, Any] = connection.tx_state  # type: ignore[attr-defined]
    pending: list[ResourceVersion] = state.get(_FEED_KEY, [])
    if not pending:
        return
    with connection.cursor() as cur:
        if state.get(_FEED_UNDOABLE):
            cur.execute(
                "SELECT id FROM fhir_resourceversion WHERE id = ANY(%s) AND seq < 0 ORDER BY seq DESC",
                [[v.pk for v in pending]],
            )
            alive = [int(r[0]) for r in cur.fetchall()]
        else:  # none written under a savepoint: all of them survive, in the order they were inserted
            alive = [int(v.pk) for v in pending]
        if not alive:
            return
        seqs = _feed_stamp(alive)
    final = dict(zip(alive, seqs, strict=True))
    for v in pending:
        if v.pk in final:
            v.seq = final[v.pk]


def _feed_stamp(alive: list[int]) -> list[int]:
    """Give the versions ``alive`` (ids, in feed order) new positions and stamp them; returns the positions."""
    with connection.cursor() as cur:
        # One message, no parameters (psycopg sends it as one simple query: one round trip; only integers are
        # formatted in), four statements in this order: (1) take the positions (kept in a transaction-local
        # setting for the UPDATE, and returned); (2)-(4) a savepoint, the UPDATE that writes them, its release
        # (Django never sees the savepoint). The UPDATE's rows get the subtransaction's id as their stamp,
        # assigned after (1) finished: feed_settled's step 2.
        ids_sql = "{" + ",".join(str(int(i)) for i in alive) + "}"
        seal_sql = (
            "SELECT set_config('omnicare.feed_seqs', (SELECT string_agg(n::text, ',' ORDER BY n) FROM "  # noqa: S608
            f"(SELECT nextval('fhir_feed_seq') AS n FROM generate_series(1, {len(alive)})) AS g), true); "
            "SAVEPOINT omnicare_feed_stamp; UPDATE fhir_resourceversion AS v SET seq = u.seq "
            f"FROM unnest('{ids_sql}'::bigint[], "
            "string_to_array(current_setting('omnicare.feed_seqs'), ',')::bigint[]) AS u(id, seq) "
            "WHERE v.id = u.id; RELEASE SAVEPOINT omnicare_feed_stamp"
        )  # integers only, formatted above
        cur.execute(seal_sql)
        row = cur.fetchone()  # the first statement's result
        assert row is not None
        seqs = [int(n) for n in str(row[0]).split(",")]
    return seqs


def _with_meta(body: dict[str, Any], resource_id: str, version_id: int, now: datetime) -> dict[str, Any]:
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = _instant(now)
    # resourceType, id, meta first (readability); every other element is kept as sent.
    return {
        "resourceType": body["resourceType"],
        "id": resource_id,
        "meta": meta,
        **{k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")},
    }


def _instant(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _lock_existing(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Resource]:
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    if not by_type:
        return {}
    cond = Q()
    for rtype, ids in by_type.items():
        cond |= Q(resource_type=rtype, resource_id__in=ids)
    rows = Resource.objects.select_for_update().filter(cond)
    return {(r.resource_type, r.resource_id): r for r in rows}


def _update_current(rows: list[Resource]) -> None:
    """Rewrite the current-state rows by primary key in as few statements as possible.

    ``bulk_update`` builds a ``CASE WHEN pk=.. THEN ..`` per column over every row with the JSON bodies
    serialised inside it: it was ~53 % of a 1,000-mutation push. On PostgreSQL: ONE ``UPDATE .. FROM
    unnest(arrays)`` (psycopg's client-side ``executemany`` would send one statement per row); elsewhere ONE
    prepared statement run with ``executemany`` (2.5x faster than bulk_update on SQLite).
    """
    table = Resource._meta.db_table
    qn = connection.ops.quote_name
    fields = [Resource._meta.get_field(f) for f in ("version_id", "last_updated", "body", "deleted")]
    if connection.vendor == "postgresql":
        cols = ", ".join(f"{bulkwrite.pg_column(f)} AS {qn(f.column)}" for f in fields)
        sets = ", ".join(
            f"{qn(f.column)} = u.{qn(f.column)}" + ("::jsonb" if f.name == "body" else "") for f in fields
        )
        sql = (
            f"UPDATE {qn(table)} SET {sets} FROM (SELECT unnest(%s::bigint[]) AS pk, {cols}) AS u "  # noqa: S608
            f"WHERE {qn(table)}.{qn('id')} = u.pk"
        )
        params = [
            [r.pk for r in rows],
            [r.version_id for r in rows],
            [r.last_updated for r in rows],
            [json.dumps(r.body) for r in rows],
            [r.deleted for r in rows],
        ]
        with connection.cursor() as cur:
            cur.execute(sql, params)
        return
    placeholders = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    sql = f"UPDATE {qn(table)} SET {placeholders} WHERE {qn('id')} = %s"  # noqa: S608 (identifiers from model metadata)
    params = [[f.get_db_prep_save(getattr(r, f.attname), connection) for f in fields] + [r.pk] for r in rows]
    with connection.cursor() as cur:
        cur.executemany(sql, params)


def _db_datetime(value: datetime) -> Any:
    return value if connection.vendor == "postgresql" else connection.ops.adapt_datetimefield_value(value)


def writer_name(user: User) -> str:
    """How a version's writer is named to other clinicians: full name, else user name ("" without a user)."""
    if user is None:
        return ""
    full = (user.get_full_name() or "").strip() if hasattr(user, "get_full_name") else ""
    return (full or user.get_username())[:150]


def _apply(
    writes: Sequence[Write],
    *,
    user: User,
    check: AccessPolicy,
    fresh: frozenset[tuple[str, str]] = frozenset(),
    join_care_team: bool = False,
) -> list[WriteResult]:
    """Apply ``writes`` atomically: THE write path (REST, bundles, import and the sync push all end here).

    Contract: the caller holds ``transaction.atomic()``; bodies are valid (``Write.valid``) and carry the right
    ``id``; ``check`` is asked about every write (create / update / delete on the union of the old and new
    compartments): the store's policy (the sync push's is its per-batch memo of ``access_check``, so what its
    decision already asked is answered without a second lookup).
    Raises ``PreconditionFailed`` on a stale ``expected_version`` and ``IntegrityError`` on a concurrent create
    of the same id (the caller rolls back).

    ``fresh``: keys with server-generated UUIDs, known not to exist, so not looked up (one query less per
    create; a collision would still be caught by the unique constraint).
    """
    keys = [(w.resource_type, w.resource_id) for w in writes]
    if len(set(keys)) != len(keys):
        raise BadRequest("The same resource is written more than once in one transaction")
    existing = _lock_existing(k for k in keys if k not in fresh)
    now = timezone.now()
    prepared: list[_Prepared] = []
    requested = len(writes)
    auto: set[tuple[str, str]] = set()
    if join_care_team:
        extra = _registrant_care_teams(writes, existing, user=user)
        auto = {(w.resource_type, w.resource_id) for w in extra}
        writes = [*writes, *extra]
    for w in writes:
        cur = existing.get((w.resource_type, w.resource_id))
        p = _Prepared(write=w, existing=cur)
        current_version = cur.version_id if cur is not None and not cur.deleted else 0
        if w.expected_version is not None and w.expected_version != current_version:
            raise PreconditionFailed(
                f"Version conflict on {w.resource_type}/{w.resource_id}: expected {w.expected_version}, "
                f"current {current_version}",
                headers={"ETag": f'W/"{current_version}"'} if current_version else None,
            )
        old_patients = (
            compartment_patients(w.resource_type, w.resource_id, cur.body) if cur and not cur.deleted else []
        )
        if w.body is None:
            if cur is None or cur.deleted:
                p.noop = True
            else:
                p.version_id = cur.version_id + 1
                p.body = {
                    "resourceType": w.resource_type,
                    "id": w.resource_id,
                    "meta": {"versionId": str(p.version_id), "lastUpdated": _instant(now)},
                }
                p.patient_ids = old_patients
        else:
            p.version_id = (cur.version_id + 1) if cur is not None else 1
            p.created = cur is None or cur.deleted
            # issue 18: authors are the writer's own Practitioner; a Patient passes the registration rules
            body = write_checked(user=user, resource_type=w.resource_type, resource_id=w.resource_id, body=w.body,
                                 current=cur.body if cur is not None and not cur.deleted else None)
            p.body = _with_meta(body, w.resource_id, p.version_id, now)
            p.ready = w.ready if body is w.body else None
            p.patient_ids = (list(p.ready.patients) if p.ready is not None
                             else compartment_patients(w.resource_type, w.resource_id, p.body))
        if (w.resource_type, w.resource_id) not in auto:
            action = "delete" if w.body is None else ("create" if p.created else "update")
            check(
                user=user,
                action=action,
                resource_type=w.resource_type,
                patient_ids=sorted(set(old_patients) | set(p.patient_ids)),
            )
        if p.created and w.resource_type == "Patient":
            if cur is not None and cur.deleted and user is not None:
                patient_recreate_check(user=user)
            patient_registered(user=user, patient_id=w.resource_id)
        prepared.append(p)

    live = [p for p in prepared if not p.noop]
    # Index rows are computed before any lock-holding statement on the counter.
    indexes = {id(p): IndexRows(*p.ready.index) if p.ready is not None else index_rows(p.write.resource_type, p.body)
               for p in live if p.write.body is not None}

    new_rows: list[Resource] = []
    upd_rows: list[Resource] = []
    for p in live:
        w = p.write
        if p.existing is None:
            row = Resource(
                resource_type=w.resource_type,
                resource_id=w.resource_id,
                version_id=p.version_id,
                last_updated=now,
                deleted=False,
                body=p.body,
            )
            new_rows.append(row)
        else:
            row = p.existing
            row.version_id, row.last_updated, row.body = p.version_id, now, p.body
            row.deleted = w.body is None
            upd_rows.append(row)
        p.existing = row
    # a body shared by the row and its version is serialised once (COPY), and only its head when computed ahead
    bodies_text = {id(p.body): bulkwrite.body_text(p.body, p.ready) for p in live if p.ready is not None}
    if new_rows:
        bulkwrite.insert_instances(new_rows, bodies_text)
    if upd_rows:
        _update_current(upd_rows)

    # Replace the index of every touched resource. Deleted resources keep their compartment rows (the last
    # membership), so sync scope can still route the tombstone, but leave the search index.
    touched = [r.pk for r in upd_rows]
    if touched:
        for model in (SearchToken, SearchString, SearchDate, SearchReference):
            model.objects.filter(resource_id__in=touched).delete()
        rewritten = [p.existing.pk for p in live if p.write.body is not None and p.existing is not None]
        if rewritten:
            ResourcePatient.objects.filter(resource_id__in=rewritten).delete()
    toks: list[tuple[Any, ...]] = []
    strs: list[tuple[Any, ...]] = []
    dats: list[tuple[Any, ...]] = []
    refs: list[tuple[Any, ...]] = []
    pats: list[tuple[Any, ...]] = []
    pg_dates = connection.vendor == "postgresql"
    for p in live:
        if p.write.body is None:
            continue
        current = p.existing
        assert current is not None
        pk, rt = current.pk, current.resource_type
        ix = indexes[id(p)]
        toks += [(pk, rt, a, b, c) for a, b, c in ix.tokens]
        strs += [(pk, rt, a, b) for a, b in ix.strings]
        if pg_dates:  # PostgreSQL takes aware datetimes as they are (no per-value vendor lookup: ~3 % of an import)
            dats += [(pk, rt, a, b, c) for a, b, c in ix.dates]
        else:
            dats += [(pk, rt, a, _db_datetime(b), _db_datetime(c)) for a, b, c in ix.dates]
        refs += [(pk, rt, a, b, c) for a, b, c in ix.refs]
        pats += [(pk, rt, pid) for pid in p.patient_ids]
    bulkwrite.insert_all_rows([
        (SearchToken, ("resource", "resource_type", "param", "system", "code"), toks),
        (SearchString, ("resource", "resource_type", "param", "value"), strs),
        (SearchDate, ("resource", "resource_type", "param", "start", "end"), dats),
        (SearchReference, ("resource", "resource_type", "param", "target_type", "target_id"), refs),
        (ResourcePatient, ("resource", "resource_type", "patient_id"), pats),
    ])

    results: list[WriteResult] = []
    if live:
        deferred = _feed_deferrable()
        # PostgreSQL: provisional now, real positions right before COMMIT (_feed_seal). SQLite, or a test
        # case's transaction that never commits: positions now (_bump_feed says why SQLite may).
        # PostgreSQL with fewer rows than COPY pays for: the provisional positions come with the INSERT.
        in_insert = deferred and connection.vendor == "postgresql" and not bulkwrite.copy_ok(len(live))
        if in_insert:
            seqs = [0] * len(live)
        else:
            seqs = _provisional_seqs(len(live)) if deferred else _feed_positions(len(live))
        versions = []
        author = writer_name(user)
        for p, seq in zip(live, seqs, strict=True):
            versions.append(
                ResourceVersion(
                    resource_type=p.write.resource_type,
                    resource_id=p.write.resource_id,
                    version_id=p.version_id,
                    last_updated=now,
                    deleted=p.write.body is None,
                    body=p.body,
                    seq=seq,
                    patient_ids=p.patient_ids,
                    author=author,
                )
            )
        bulkwrite.insert_instances(versions, bodies_text, provisional_seq=in_insert)
        if deferred:
            _feed_defer(versions)  # real positions right before COMMIT: see _feed_seal
        by_key = {(v.resource_type, v.resource_id): v for v in versions}
        # Inside the transaction: receivers defer anything external with transaction.on_commit.
        versions_written.send(sender=Resource, versions=versions)
    else:
        by_key = {}
    for p in prepared[:requested]:  # the care teams added for registrants are not the caller's writes
        w = p.write
        v = by_key.get((w.resource_type, w.resource_id))
        status = 204 if w.body is None else (201 if p.created else 200)
        results.append(WriteResult(w.resource_type, w.resource_id, v, created=p.created, status=status))
    return results


def _registrant_care_teams(
    writes: Sequence[Write], existing: dict[tuple[str, str], Resource], *, user: User
) -> list[Write]:
    """A CareTeam for every Patient this write creates, listing the registering clinician (issue 15).

    A clinician (a role whose scope is the care team) who registers a patient through REST must be able to
    read what they just created: the team is written in the same transaction as the patient. Nothing is
    added when the user has no Practitioner identity, or when the same request already writes a CareTeam
    for that patient (offline registration pushes its own).
    """
    created = [
        w for w in writes
        if w.resource_type == "Patient" and w.body is not None
        and ((cur := existing.get(("Patient", w.resource_id))) is None or cur.deleted)
    ]
    if not created:
        return []
    has_team = {
        ref[1]
        for w in writes if w.resource_type == "CareTeam" and w.body is not None
        for ref in [parse_reference(str((w.body.get("subject") or {}).get("reference") or ""))] if ref
    }
    clinician = any(rbac.ROLES[r].scope == "care-team" for r in rbac.user_roles(user))
    mine = sorted(user_practitioner_ids(user=user)) if clinician else []
    teams: list[Write] = []
    for w in created:
        if w.resource_id in has_team:
            continue
        # A clinician joins the team themselves. Anyone else who may register (the front desk) never does — they
        # see demographics, not the chart — and the patient goes to the responsible clinician chosen at
        # registration (Patient.generalPractitioner), so a walk-in registered offline is somebody's patient.
        member = f"Practitioner/{mine[0]}" if mine else (None if clinician else _responsible_clinician(w))
        if member is None:
            continue
        teams.append(Write("CareTeam", new_id(), {
            "resourceType": "CareTeam",
            "status": "active",
            "name": "Registering clinician" if mine else "Responsible clinician",
            "subject": {"reference": f"Patient/{w.resource_id}"},
            "participant": [{"member": {"reference": member}}],
        }, expected_version=0))
    _care_teams_audit(user, teams)
    return teams


def _responsible_clinician(patient: Write) -> str | None:
    """The ``Practitioner/<id>`` a registration named as the patient's responsible clinician (the first
    ``generalPractitioner`` that is a Practitioner), or None when none is named. One that does not exist is
    refused (400): the patient would otherwise belong to nobody's team."""
    for ref in (patient.body or {}).get("generalPractitioner") or []:
        parsed = parse_reference(str((ref or {}).get("reference") or "")) if isinstance(ref, dict) else None
        if parsed is None or parsed[0] != "Practitioner":
            continue
        if not Resource.objects.filter(resource_type="Practitioner", resource_id=parsed[1], deleted=False).exists():
            raise BadRequest("The responsible clinician chosen at registration is not known to the server",
                             expression=["Patient.generalPractitioner"])
        return f"Practitioner/{parsed[1]}"
    return None


def _care_teams_audit(user: User, teams: Sequence[Write]) -> None:
    """One audit event per care team the server adds for a registering clinician (issue 18 item 1): the trail says
    who was put on whose team and why. Same transaction as the write: no team without its record, nor the reverse."""
    for t in teams:
        assert t.body is not None
        pid = str(t.body["subject"]["reference"]).removeprefix("Patient/")
        audit_record(user=user, action="create", resource_type="CareTeam", resource_id=t.resource_id,
                     patient_ids=[pid], detail={"reason": "registering clinician joins the new patient's care team"
                                                if t.body.get("name") == "Registering clinician" else
                                                "the responsible clinician chosen at registration gets the patient"})


def _run_writes(
    writes: Sequence[Write],
    *,
    user: User,
    check: AccessPolicy | None = None,
    fresh: frozenset[tuple[str, str]] = frozenset(),
    join_care_team: bool = False,
    savepoint: bool = True,
) -> list[WriteResult]:
    # ``check`` None: a person's policy, ``access_check`` (looked up per call, so a test's stand-in applies).
    # Two writers creating the same new id at once both find no row to lock; the loser's INSERT fails on
    # the unique constraint once the winner commits. Retrying once turns it into what it would have been a
    # moment later (an update, or a 412 for a create-only write). Inside a caller's transaction we cannot
    # retry (the outer transaction is aborted), so it surfaces as 409.
    # ``savepoint=False`` (the single-resource REST calls): inside a caller's transaction any failure here
    # fails that whole transaction, which is what an audited REST request does anyway; it saves the
    # SAVEPOINT/RELEASE round trips. Callers that carry on after a failed write (batch bundles, imports, the
    # careful push path) keep the savepoint.
    attempts = 1 if connection.in_atomic_block else 2
    for attempt in range(attempts):
        try:
            with transaction.atomic(savepoint=savepoint):
                return _apply(writes, user=user, check=check or access_check, fresh=fresh,
                              join_care_team=join_care_team)
        except IntegrityError as exc:
            if attempt == attempts - 1:
                raise Conflict("Concurrent write to the same resource; retry") from exc
    raise AssertionError("unreachable")


def new_id() -> str:
    return str(uuid.uuid4())


def resource_create(*, user: User, resource: Any, resource_id: str | None = None) -> WriteResult:
    """Create a resource (server-assigned UUID id unless ``resource_id`` is given). Returns 201 result.

    Like :func:`resource_update` and :func:`resource_delete`: inside a caller's transaction a refused write
    leaves that transaction unusable (no savepoint); to carry on after a failure use :func:`resources_apply`."""
    rtype = validate_resource(resource)
    rid = resource_id or new_id()
    check_id(rid)
    fresh = frozenset() if resource_id else frozenset({(rtype, rid)})
    return _run_writes(
        [Write(rtype, rid, resource, expected_version=0)], user=user, fresh=fresh, join_care_team=True,
        savepoint=False,
    )[0]


def resource_update(
    *, user: User, resource_type: str, resource_id: str, resource: Any, if_match: int | None = None
) -> WriteResult:
    """Update (PUT) or create with the client's id when absent (status 201). ``if_match`` → 412 when stale."""
    check_type(resource_type)
    check_id(resource_id)
    validate_resource(resource, expected_type=resource_type)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource must carry its id for an update", expression=["id"])
    if body_id != resource_id:
        raise BadRequest("The id in the body does not match the URL", expression=["id"])
    return _run_writes(
        [Write(resource_type, resource_id, resource, expected_version=if_match)], user=user, join_care_team=True,
        savepoint=False,
    )[0]


def resource_delete(
    *, user: User, resource_type: str, resource_id: str, if_match: int | None = None
) -> WriteResult:
    """Delete (tombstone). Deleting something absent or already deleted is a no-op (idempotent)."""
    check_type(resource_type)
    check_id(resource_id)
    return _run_writes([Write(resource_type, resource_id, None, expected_version=if_match)], user=user,
                       savepoint=False)[0]


def resources_apply(
    *,
    user: User,
    writes: Sequence[Write],
    check: AccessPolicy | None,
    fresh: frozenset[tuple[str, str]] = frozenset(),
    join_care_team: bool = False,
    savepoint: bool = True,
) -> list[WriteResult]:
    """Write several resources atomically, each against its expected base version: THE write engine, called by
    ``repository.FhirStore`` (``apply``), never by routers or integrations directly.

    In one database transaction it writes the current state, the search index, the compartment rows and the
    history rows with their change-feed ``seq`` (one feed bump for the batch), then sends
    ``signals.versions_written``. Every write is put to ``check`` (the store's access policy; None: a person's,
    ``access.services.access_check``); any refusal or stale ``expected_version`` (:class:`PreconditionFailed`)
    raises and nothing is written; a concurrent create of the same id is retried once, or raises
    :class:`Conflict` (409) when the caller holds a transaction (call inside your own ``transaction.atomic()``
    to combine the write with other rows, e.g. the sync mutation log and conflicts). Bodies are valid (``Write.valid``): validating twice is not free (``validate_resource`` takes
    ~0.28 s per 1,000 Observations, measured 2026-12-01, against a 0.75 s 1,000-mutation push), so each caller
    validates once where it can still answer per item (the push's ``_plan``, bulk import's worker pool, a Bundle
    entry). ``fresh``: keys with server-generated UUIDs, known not to exist, so not looked up.
    ``savepoint=False``: inside a caller's transaction a refused write fails that whole transaction (the caller
    redoes it, as the sync push's first attempt does); it saves the SAVEPOINT/RELEASE round trips.
    """
    return _run_writes(writes, user=user, check=check, fresh=fresh, join_care_team=join_care_team,
                       savepoint=savepoint)


def resources_apply_each(
    *,
    user: User,
    writes: Sequence[Write],
    check: AccessPolicy | None,
    join_care_team: bool = False,
) -> list[WriteResult | ApiError]:
    """Like :func:`resources_apply`, but a refused write is answered alone: one outcome per write, in order,
    either its result or the refusal (access, precondition, registration rules, a concurrent create).

    The batch is tried whole first (one feed bump, the common case); when anything in it is refused, that
    attempt's savepoint is rolled back and each write is applied in a savepoint of its own, so only the
    refused ones are lost (bulk import reports each as an issue on its line)."""
    try:
        return list(_run_writes(writes, user=user, check=check, join_care_team=join_care_team))
    except ApiError:
        pass
    out: list[WriteResult | ApiError] = []
    for w in writes:
        try:
            out.append(_run_writes([w], user=user, check=check, join_care_team=join_care_team)[0])
        except ApiError as exc:
            out.append(exc)
    return out


def resources_import(*, resources: list[dict[str, Any]]) -> list[ResourceVersion]:
    """Bulk load (trusted: the demo seeder / management commands; no user, no access check).

    Validates every resource, assigns a UUID to those without an id, creates or overwrites, all in ONE
    transaction with one feed bump. Returns the new versions in input order.
    """
    writes: list[Write] = []
    fresh: set[tuple[str, str]] = set()
    for body in resources:
        rtype = validate_resource(body)
        rid = body.get("id")
        if not rid:
            rid = new_id()
            fresh.add((rtype, rid))
        writes.append(Write(rtype, rid, body))
    results = _run_writes(writes, user=None, check=system_trusted, fresh=frozenset(fresh))
    if len(writes) >= ANALYZE_AFTER and connection.vendor == "postgresql" and not connection.in_atomic_block:
        # A bulk load leaves the planner with empty-table statistics until autovacuum runs; with them it
        # picks nested loops that make the first searches 20x slower. Refresh them now (seconds at most).
        with connection.cursor() as cur:
            cur.execute("ANALYZE " + ", ".join(m._meta.db_table for m in _STORE_MODELS))
    return [r.version for r in results if r.version is not None]


ANALYZE_AFTER = 1000
_STORE_MODELS = (
    Resource,
    ResourceVersion,
    ResourcePatient,
    SearchToken,
    SearchString,
    SearchDate,
    SearchReference,
)


# -------------------------------------------------------------------------------------------------------------
# Reads
# -------------------------------------------------------------------------------------------------------------


_CURRENT_SQL: dict[str, str] = {}


def _current(resource_type: str, resource_id: str) -> Resource | None:
    """The current-state row of one resource (unique on type and id). A raw query, written once per process:
    compiling ``filter(...).first()`` was a fifth of a FHIR read's CPU; ``raw`` still applies the fields'
    converters (JSON, datetimes on SQLite)."""
    sql = _CURRENT_SQL.get(connection.alias)
    if sql is None:
        qn = connection.ops.quote_name
        cols = ", ".join(qn(f.column) for f in Resource._meta.concrete_fields)
        sql = _CURRENT_SQL[connection.alias] = (
            f"SELECT {cols} FROM {qn(Resource._meta.db_table)} WHERE {qn('resource_type')} = %s "  # noqa: S608
            f"AND {qn('resource_id')} = %s"
        )
    return next(iter(Resource.objects.raw(sql, [resource_type, resource_id])), None)


def resource_read(*, user: User, resource_type: str, resource_id: str) -> Resource:
    """Current state; 404 if never existed, 410 if deleted."""
    check_type(resource_type)
    check_id(resource_id)
    row = _current(resource_type, resource_id)
    if row is None:
        patients: list[str] = []
    elif row.deleted:  # the tombstone has no body: its last compartment is kept in ResourcePatient
        patients = sorted(ResourcePatient.objects.filter(resource=row).values_list("patient_id", flat=True))
    else:
        patients = compartment_patients(resource_type, resource_id, row.body)
    access_check(user=user, action="read", resource_type=resource_type, patient_ids=patients)
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} not found")
    if row.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted", headers={"ETag": f'W/"{row.version_id}"'})
    return row


def resource_vread(*, user: User, resource_type: str, resource_id: str, version_id: int) -> ResourceVersion:
    """One historical version; 404 if absent, 410 if that version is a deletion."""
    check_type(resource_type)
    check_id(resource_id)
    v = ResourceVersion.objects.filter(
        resource_type=resource_type, resource_id=resource_id, version_id=version_id
    ).first()
    access_check(
        user=user, action="vread", resource_type=resource_type, patient_ids=v.patient_ids if v else []
    )
    if v is None:
        raise NotFound(f"{resource_type}/{resource_id}/_history/{version_id} not found")
    if v.deleted:
        raise Gone(f"{resource_type}/{resource_id}/_history/{version_id} is a deletion")
    return v


def page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    try:
        n = int(raw)
    except ValueError as exc:
        raise BadRequest("_count must be an integer", expression=["_count"]) from exc
    if n < 0:
        raise BadRequest("_count must not be negative", expression=["_count"])
    return min(n, settings.OMNICARE_PAGE_MAX)


def resource_history(
    *,
    user: User,
    resource_type: str | None = None,
    resource_id: str | None = None,
    count: int = 20,
    since: str | None = None,
    before_seq: int | None = None,
) -> HistoryPage:
    """Instance, type or system history, newest first, paged by seq (keyset: stable under new writes)."""
    qs = ResourceVersion.objects.all()
    if resource_type is not None:
        check_type(resource_type)
        qs = qs.filter(resource_type=resource_type)
    if resource_id is not None:
        assert resource_type is not None
        check_id(resource_id)
        qs = qs.filter(resource_id=resource_id)
        patients = sorted(
            set(
                ResourcePatient.objects.filter(
                    resource__resource_type=resource_type, resource__resource_id=resource_id
                ).values_list("patient_id", flat=True)
            )
        )
    else:
        patients = []
    access_check(user=user, action="history", resource_type=resource_type or "*", patient_ids=patients)
    visible = _visible_patients(user=user, action="history", resource_type=resource_type or "*")
    if resource_id is None:
        if visible is not None:
            members = ResourcePatient.objects.filter(
                patient_id__in=visible,
                resource__resource_type=OuterRef("resource_type"),
                resource__resource_id=OuterRef("resource_id"),
            )
            cond = Exists(members)
            if resource_type is None:  # system history: non-compartment types stay visible
                cond |= ~Q(resource_type__in=[t for t in COMPARTMENT if t == "Patient" or COMPARTMENT[t]])
            qs = qs.filter(cond)
    if resource_id is not None and not qs.exists():
        raise NotFound(f"{resource_type}/{resource_id} not found")
    if since:
        try:
            qs = qs.filter(last_updated__gte=parse_date_range(since)[0])
        except ValueError as exc:
            raise BadRequest("Invalid _since", expression=["_since"]) from exc
    if visible is None:
        total = qs.count() if before_seq is None else None
        if before_seq is not None:
            qs = qs.filter(seq__lt=before_seq)
        rows = list(qs.order_by("-seq")[: count + 1])
    else:
        # Each version is judged by the patients IT names (access.services.patients_within): an old version
        # of a record that once named a patient outside scope is withheld even if the current one is fine.
        # No total: counting the withheld versions would disclose them.
        total = None
        rows = _visible_versions(qs, visible=visible, before_seq=before_seq, want=count + 1)
    nxt = rows[count - 1].seq if len(rows) > count and count > 0 else None
    return HistoryPage(rows[:count], nxt, total)


#: History rows examined per page at most (withheld versions are skipped; the next link continues after them).
HISTORY_SCAN = 5000


def _visible_versions(
    qs: QuerySet[ResourceVersion], *, visible: frozenset[str], before_seq: int | None, want: int
) -> list[ResourceVersion]:
    out: list[ResourceVersion] = []
    position = before_seq
    scanned = 0
    chunk = max(want, 200)
    while len(out) < want and scanned < HISTORY_SCAN:
        page_qs = qs.filter(seq__lt=position) if position is not None else qs
        batch = list(page_qs.order_by("-seq")[:chunk])
        for v in batch:
            if _version_visible(v, visible):
                out.append(v)
                if len(out) >= want:
                    break
        scanned += len(batch)
        if len(batch) < chunk:
            break
        position = batch[-1].seq
    return out


def _version_visible(v: ResourceVersion, visible: frozenset[str]) -> bool:
    if v.resource_type != "Patient" and not COMPARTMENT.get(v.resource_type):
        return True  # not patient data (Practitioner)
    if v.deleted and not v.patient_ids:  # a tombstone carries no body; its compartment is the last live one
        return True
    return patients_within(patient_ids=v.patient_ids or [], visible=visible)


# -------------------------------------------------------------------------------------------------------------
# Reading the feed: the snapshot horizon (PostgreSQL)
# -------------------------------------------------------------------------------------------------------------

#: Annotations a feed query adds on PostgreSQL: the row's allocation stamp (the ``xmin`` written by
#: :func:`_feed_seal`'s subtransaction) and the reader's snapshot bounds, all in the same statement.
FEED_STAMP_SQL = "fhir_resourceversion.xmin::text::bigint"
def feed_cut(rows: Sequence[Any], stamps: Sequence[tuple[int, int, int]]) -> int:
    """How many leading ``rows`` (ascending seq, with their ``(stamp, xmin, xmax)``) may be handed out: up to
    and including the last settled one (it proves every row before it final). ``len(rows)`` when the horizon
    does not apply."""
    if not feed_horizon_applies():
        return len(rows)
    for i in range(len(rows) - 1, -1, -1):
        if feed_settled(*stamps[i]):
            return i + 1
    return 0


def feed_annotated(qs: QuerySet[ResourceVersion]) -> QuerySet[ResourceVersion]:
    """``qs`` with the columns :func:`feed_cut` needs (``feed_stamp``, ``feed_xmin``, ``feed_xmax``) on
    PostgreSQL."""
    from django.db.models import BigIntegerField
    from django.db.models.expressions import RawSQL

    if connection.vendor != "postgresql":
        return qs
    return qs.annotate(
        feed_stamp=RawSQL(FEED_STAMP_SQL, [], output_field=BigIntegerField()),  # noqa: S611 - constant
        feed_xmin=RawSQL(FEED_XMIN_SQL, [], output_field=BigIntegerField()),  # noqa: S611 - constant
        feed_xmax=RawSQL(FEED_XMAX_SQL, [], output_field=BigIntegerField()),  # noqa: S611 - constant
    )


def feed_since(*, after_seq: int, limit: int) -> list[ResourceVersion]:
    """Committed versions with ``seq > after_seq`` in seq order (at most ``limit``), up to the horizon (the
    last settled row, :func:`feed_settled`): never skips, never repeats. No access check here."""
    rows = list(feed_annotated(ResourceVersion.objects.filter(seq__gt=after_seq)).order_by("seq")[:limit])
    if connection.vendor != "postgresql":
        return rows
    return rows[: feed_cut(rows, [(v.feed_stamp, v.feed_xmin, v.feed_xmax) for v in rows])]  # type: ignore[attr-defined]


def feed_head() -> int:
    """The highest position below which every committed version is visible and nothing is still in flight (the
    horizon; 0 when empty): a first sync anchors its fill there, a new subscription starts there."""
    position: int | None = None
    while True:
        qs = ResourceVersion.objects.filter(seq__gt=0)  # this transaction's own provisional positions are < 0
        if position is not None:
            qs = qs.filter(seq__lt=position)
        rows = list(feed_annotated(qs).order_by("-seq")[:200])
        if not rows:
            return 0
        if not feed_horizon_applies():
            return int(rows[0].seq)
        for v in rows:
            if feed_settled(v.feed_stamp, v.feed_xmin, v.feed_xmax):  # type: ignore[attr-defined]
                return int(v.seq)
        position = rows[-1].seq


# -------------------------------------------------------------------------------------------------------------
# Search
# -------------------------------------------------------------------------------------------------------------


def _visible_patients(*, user: User, action: str, resource_type: str) -> frozenset[str] | None:
    """Patients whose compartment ``user`` may see in a cross-patient search/history; None = no restriction.

    ``access_check`` with no patient ids is a type-level check and leaves result filtering to the caller:
    this is that filter, from ``access.services.visible_patient_ids`` (the one scope policy). Types outside
    the patient compartment (Practitioner) are not filtered.
    """
    if resource_type != "*" and resource_type != "Patient" and not COMPARTMENT.get(resource_type):
        return None
    visible = visible_patient_ids(user=user, action=action, resource_type=resource_type)
    return None if isinstance(visible, AllPatients) else visible


def _entry_for(row: Resource | ResourceVersion, base_url: str) -> dict[str, Any]:
    return {"fullUrl": f"{base_url}/{row.resource_type}/{row.resource_id}", "resource": row.body}


def _sort_of(raw: str | None, *, strict: bool) -> tuple[str | None, bool]:
    """The one supported sort key (``_lastUpdated`` or ``_id``, ``-`` for descending) or None (insertion order)."""
    if not raw:
        return None, False
    first = raw.split(",")[0].strip()
    key = first.lstrip("-")
    if key not in SORTS:
        if strict:
            raise BadRequest(
                f"Unsupported _sort {key[:40]!r} (supported: {', '.join(SORTS)})", code="not-supported"
            )
        return None, False
    return key, first.startswith("-")


def _cursor_of(row: Resource, sort_key: str | None) -> str:
    """Keyset position of ``row`` for the sort in use (opaque to clients; carried in the next link)."""
    if sort_key == "_lastUpdated":
        return f"{(row.last_updated - EPOCH) // timedelta(microseconds=1)}.{row.pk}"
    if sort_key == "_id":
        return row.resource_id
    return str(row.pk)


def _after_cursor(raw: str, sort_key: str | None, desc: bool) -> Q:
    try:
        if sort_key == "_lastUpdated":
            micros, pk = raw.split(".", 1)
            at = EPOCH + timedelta(microseconds=int(micros))
            if desc:
                return Q(last_updated__lt=at) | Q(last_updated=at, pk__lt=int(pk))
            return Q(last_updated__gt=at) | Q(last_updated=at, pk__gt=int(pk))
        if sort_key == "_id":
            check_id(raw)
            return Q(resource_id__lt=raw) if desc else Q(resource_id__gt=raw)
        return Q(pk__gt=int(raw))
    except (ValueError, BadRequest, OverflowError, OSError) as exc:
        raise BadRequest("Invalid _cursor", expression=["_cursor"]) from exc


def resource_search(
    *,
    user: User,
    resource_type: str,
    params: list[tuple[str, str]],
    base_url: str,
    strict: bool = False,
) -> dict[str, Any]:
    """Search current state; returns a ``searchset`` Bundle with ``total`` and a keyset ``next`` link.

    Unknown parameters are ignored (and left out of the self link) unless ``strict`` (Prefer: handling=strict),
    which makes them a 400.
    """
    check_type(resource_type)
    control = {k: v for k, v in params if k in CONTROL_PARAMS}
    parsed = build_query(resource_type, params)
    if parsed.unknown and strict:
        raise BadRequest(
            "Unknown search parameter(s): " + ", ".join(sorted(set(parsed.unknown)))[:500],
            code="not-supported",
        )
    access_check(user=user, action="search", resource_type=resource_type, patient_ids=parsed.patient_ids)
    count = page_size(control.get("_count"))
    cursor_raw = control.get("_cursor")
    visible = _visible_patients(user=user, action="search", resource_type=resource_type)
    visible_ids = sorted(visible) if visible is not None else None
    sort_key, desc = _sort_of(control.get("_sort"), strict=strict)
    if control.get("_summary") == "count":
        count = 0
    direction = "-" if desc else ""

    def querysets(bind: Callable[[Any], Any] | None) -> tuple[QuerySet[Resource], QuerySet[Resource]]:
        """(every match, this page) with the values put in by ``bind`` (None: as they are)."""
        qs = Resource.objects.filter(resource_type=resource_type, deleted=False)
        for cond in parsed.filters(bind):
            qs = qs.filter(cond)
        if visible_ids is not None:
            ids = visible_ids if bind is None else [bind(p) for p in visible_ids]
            # access.services.patients_within in SQL: some named patient is visible and none is outside.
            qs = qs.filter(
                pk__in=ResourcePatient.objects.filter(resource_type=resource_type, patient_id__in=ids).values(
                    "resource_id"
                )
            ).exclude(
                pk__in=ResourcePatient.objects.filter(resource_type=resource_type)
                .exclude(patient_id__in=ids)
                .values("resource_id")
            )
        page_qs = qs.filter(_after_cursor(cursor_raw, sort_key, desc)) if cursor_raw else qs
        field_name = SORTS[sort_key] if sort_key else "pk"
        ordering = [direction + field_name] + ([direction + "pk"] if field_name == "last_updated" else [])
        return qs, page_qs.order_by(*ordering)[: count + 1]

    shape = parsed.shape()
    compiled = None
    if shape is not None and not cursor_raw and count > 0 and (visible_ids is None or visible_ids):
        # The common searches: SQL compiled once per shape (sqlcache); dates, cursors and counts-only take the ORM.
        values = parsed.values() + (visible_ids or [])

        def build() -> tuple[sqlcache.Compiled, sqlcache.Compiled] | None:
            every, page = querysets(sqlcache.placeholders())
            page_c = sqlcache.compile_queryset(page, len(values))
            count_c = sqlcache.compile_queryset(every.values("pk"), len(values))
            return (page_c, count_c) if page_c and count_c else None

        compiled = sqlcache.cached((shape, None if visible_ids is None else len(visible_ids), sort_key, desc, count),
                                   build)  # fmt: skip
    if compiled is not None:
        page_sql, count_sql = compiled
        rows = list(Resource.objects.raw(page_sql.sql, page_sql.params(values)))

        def total() -> int:
            with connection.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM ({count_sql.sql}) AS matches", count_sql.params(values))  # noqa: S608
                return int(cur.fetchone()[0])
    else:
        qs, page_qs = querysets(None)
        rows = list(page_qs) if count > 0 else []
        total = qs.count
    has_next = len(rows) > count
    rows = rows[:count]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": new_id(), "type": "searchset"}
    bundle["meta"] = {"lastUpdated": _instant(timezone.now())}
    if control.get("_total") != "none":
        bundle["total"] = len(rows) if (not cursor_raw and not has_next and count > 0) else total()
    keep = parsed.used + [(k, v) for k, v in params if k in ("_count", "_total", "_summary", "_include", "_revinclude")]
    if sort_key:
        keep.append(("_sort", direction + sort_key))
    self_q = keep + ([("_cursor", cursor_raw)] if cursor_raw else [])
    url = f"{base_url}/{resource_type}"
    links = [{"relation": "self", "url": url + ("?" + urlencode(self_q) if self_q else "")}]
    if has_next:
        links.append(
            {
                "relation": "next",
                "url": url + "?" + urlencode(keep + [("_cursor", _cursor_of(rows[-1], sort_key))]),
            }
        )
    bundle["link"] = links
    bundle["entry"] = [{**_entry_for(r, base_url), "search": {"mode": "match"}} for r in rows]
    included = _includes(user=user, resource_type=resource_type, rows=rows, params=params)
    bundle["entry"] += [{**_entry_for(r, base_url), "search": {"mode": "include"}} for r in included]
    if parsed.unknown:
        # Prefer: handling=lenient (the default): the search ran without them, and the Bundle says so.
        bundle["entry"].append({"resource": _ignored_params_outcome(parsed.unknown), "search": {"mode": "outcome"}})
    return bundle


MAX_INCLUDED = 1000


def _include_spec(raw: str, what: str) -> tuple[str, str, str | None]:
    """``Type:param[:targetType]`` → parts; 400 on anything else (``*`` is not supported)."""
    parts = raw.split(":")
    if len(parts) not in (2, 3) or parts[0] not in SUPPORTED_TYPES:
        raise BadRequest(f"Invalid {what} (expected Type:param[:targetType])", expression=[what])
    param = SEARCH_PARAMS.get(parts[0], {}).get(parts[1])
    if param is None or param.kind != "reference":
        raise BadRequest(f"{what}: {parts[0]}:{parts[1][:40]} is not a reference parameter", expression=[what])
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _includes(*, user: User, resource_type: str, rows: list[Resource], params: list[tuple[str, str]]) -> list[Resource]:
    """Resources named by ``_include`` (targets of the matches' references) and ``_revinclude`` (resources
    referring to the matches), each checked against the caller's role and patient scope like a read: what
    the caller may not read is left out, never an error."""
    specs_in = [_include_spec(v, "_include") for k, v in params if k == "_include"]
    specs_rev = [_include_spec(v, "_revinclude") for k, v in params if k == "_revinclude"]
    if not rows or not (specs_in or specs_rev):
        return []
    found: dict[int, Resource] = {}
    pks = [r.pk for r in rows]
    for src, name, target in specs_in:
        if src != resource_type:
            continue
        refs = SearchReference.objects.filter(resource_id__in=pks, param=name)
        if target:
            refs = refs.filter(target_type=target)
        cond = Q()
        for ttype, tid in set(refs.values_list("target_type", "target_id")[:MAX_INCLUDED]):
            cond |= Q(resource_type=ttype, resource_id=tid)
        if cond:
            for r in Resource.objects.filter(cond, deleted=False)[:MAX_INCLUDED]:
                found[r.pk] = r
    ids = [r.resource_id for r in rows]
    for src, name, _target in specs_rev:
        sub = SearchReference.objects.filter(
            resource_type=src, param=name, target_type=resource_type, target_id__in=ids
        ).values("resource_id")
        for r in Resource.objects.filter(pk__in=sub, deleted=False)[:MAX_INCLUDED]:
            found[r.pk] = r
    matched = set(pks)
    out: list[Resource] = []
    with visible_patients_cache():
        for r in found.values():
            if r.pk in matched:
                continue
            try:
                access_check(user=user, action="read", resource_type=r.resource_type,
                             patient_ids=compartment_patients(r.resource_type, r.resource_id, r.body))
            except ApiError:
                continue
            out.append(r)
    return out


def _ignored_params_outcome(unknown: list[str]) -> dict[str, Any]:
    names = sorted({u[:60] for u in unknown})[:20]
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "not-supported",
                   "diagnostics": "Search parameter(s) not supported and ignored: " + ", ".join(names),
                   "expression": names}],
    }


__all__ = [
    "FeedCounter",
    "AccessPolicy",
    "HistoryPage",
    "Write",
    "WriteResult",
    "feed_head",
    "feed_since",
    "resource_create",
    "resource_delete",
    "resource_history",
    "resource_read",
    "resource_search",
    "resource_update",
    "resource_vread",
    "resources_apply",
    "resources_apply_each",
    "resources_import",
    "system_trusted",
]
