"""FHIR Bulk Data: ``$import`` (NDJSON in) and ``$export`` (Bulk Data Access IG v2, NDJSON out).

Import: every line is a PUT-as-create through the one write path (``fhir.services.resources_apply``), so
it is validated (structure and required bindings), access-checked as the job's user and audited like any
write. Lines are applied in batches; the batch's rows, its issues and the job's checkpoint
(``lines_done``) commit in ONE transaction, so a crash loses nothing and the job resumes after the last
committed line. A bad line is an issue with its line number and never stops the others. Large imports
validate the next batch in worker processes while this one is written (``validate_pool``); the write path
inserts big batches with COPY (``fhir.bulkwrite``), one audit event per batch names its patients. Importing the same
content again writes nothing (a line equal to the stored resource, ``meta`` aside, is skipped).
Conditional references (``Practitioner?identifier=system|value``, as Synthea writes) are resolved to
literal ones when exactly one target exists in the store or anywhere in the same file (a pre-scan indexes
the file's identifiers, so files may come in any order); otherwise they are kept and reported. References
to resources that are not (yet) in the store are accepted and reported: a migration arrives in pieces.

Export: a Celery job streams each type from the database in chunks sized by BYTES (the next chunk's row
count follows the bytes per row seen so far), writes ``<Type>.ndjson`` and checkpoints the last key
written and the file offset, so memory stays flat whatever the data and a crash resumes. Scope is the
caller's: ``access.services.visible_patient_ids`` decides which compartments leave (an integration: all;
a physician: their care teams), types the caller may not search are refused. Every kick-off, every type
written and every file download is an audit event naming the patients.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, BinaryField, Func, Q, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Length
from django.utils import timezone

from omnicare.access.services import AllPatients, access_check, may_access, visible_patient_ids
from omnicare.audit.services import audit_record
from omnicare.core.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
)
from omnicare.fhir.models import Resource, ResourcePatient, SearchReference, SearchToken
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.search import COMPARTMENT, SUPPORTED_TYPES, parse_date_range, parse_reference
from omnicare.fhir.services import Write, resource_read, resources_import
from omnicare.fhir.validation import check_id

from .models import BulkIssue, BulkJob
from .validate_pool import GC_YOUNG, Line, Validator, prepare, scan

log = logging.getLogger("omnicare.bulk")

NDJSON_TYPES = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
IMPORT_BATCH = 2000  # one transaction, audit event and CDS re-check job per 2,000 lines (was 500: commit overhead)
CARE_TEAM_GROUP_SYSTEM = "urn:omnicare:care-team-of"


def bulk_dir() -> Path:
    return Path(getattr(settings, "OMNICARE_BULK_DIR", Path(settings.BASE_DIR) / "var" / "bulk"))


def job_dir(job: BulkJob) -> Path:
    return bulk_dir() / str(job.id)


def _ttl() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "OMNICARE_BULK_EXPIRY_SECONDS", 24 * 3600)))


def _chunk_bytes() -> int:
    return int(getattr(settings, "OMNICARE_BULK_CHUNK_BYTES", 4 * 1024 * 1024))


def _max_upload() -> int:
    return int(getattr(settings, "OMNICARE_BULK_MAX_BYTES", 2 * 1024**3))


def _require_user(user: Any) -> None:
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated("Authentication required")


def _owned(user: Any, job_id: str) -> BulkJob:
    _require_user(user)
    try:
        job = BulkJob.objects.filter(pk=job_id).first()
    except (ValueError, Exception) as exc:  # a malformed UUID
        if isinstance(exc, ApiError):
            raise
        job = None
    if job is None or job.user_id != user.pk:
        raise NotFound("No such bulk job")  # someone else's job does not exist for you
    return job


def _outcome(issue: BulkIssue) -> dict[str, Any]:
    out: dict[str, Any] = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
    if issue.expression:
        out["expression"] = issue.expression
    body: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [out]}
    if issue.line is not None:
        body["extension"] = [{"url": "urn:omnicare:bulk:line", "valueInteger": issue.line}]
        out["location"] = [f"line {issue.line}"]
    return body


# ---------------------------------------------------------------------------------------------------------------
# $import
# ---------------------------------------------------------------------------------------------------------------


def import_start(*, user: Any, chunks: Iterable[bytes], request_url: str, trusted: bool = False) -> BulkJob:
    """Store the uploaded NDJSON and queue the import (the caller answers 202 with the status URL).

    ``trusted`` (management command without a user): writes are not access-checked; still validated and
    audited (as the system).
    """
    if not trusted:
        _require_user(user)
        if not any(may_access(user=user, action="create", resource_type=t) for t in ("Patient", "Observation")):
            raise Forbidden("Your role may not import clinical data")
    job = BulkJob.objects.create(kind=BulkJob.IMPORT, user=user if user is not None and user.is_authenticated
                                 else None, request_url=request_url[:2000], params={"trusted": trusted})
    path = job_dir(job)
    path.mkdir(parents=True, exist_ok=True)
    total = 0
    lines = 0
    last = b"\n"
    try:
        with open(path / "input.ndjson", "wb") as f:
            for chunk in chunks:
                total += len(chunk)
                if total > _max_upload():
                    raise PayloadTooLarge(f"Import exceeds {_max_upload()} bytes")
                f.write(chunk)
                lines += chunk.count(b"\n")
                if chunk:
                    last = chunk[-1:]
    except ApiError:
        shutil.rmtree(path, ignore_errors=True)
        job.delete()
        raise
    job.lines_total = lines + (0 if last == b"\n" else 1)
    job.save(update_fields=["lines_total"])
    audit_record(user=job.user, action="import-start", resource_type="Bundle", category="access",
                 detail={"job": str(job.id), "bytes": total, "lines": job.lines_total})
    from .tasks import bulk_import  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    transaction.on_commit(lambda: bulk_import.delay(str(job.id)))
    return job


@dataclass
class _Index:
    """What the file itself holds: every (type, id) and every identifier → ids (the pre-scan), and the
    job's map of conditional reference → literal reference (None: kept as sent)."""

    keys: set[tuple[str, str]]
    identifiers: dict[tuple[str, str, str], set[str]]
    resolved: dict[str, str | None]


SCAN_CHUNK = 2000  # lines per pre-scan task


def _prescan(path: Path, validator: Validator) -> _Index:
    """Pre-scan the whole file (shared with the validation workers when there are some, two chunks in
    flight at most so memory stays bounded), then resolve every conditional reference it uses in one
    batched lookup."""
    idx = _Index(set(), {}, {})
    conditional: set[str] = set()

    def merge(found: Any) -> None:
        keys, idents, cond = found
        idx.keys.update(keys)
        for rt, system, value, rid in idents:
            idx.identifiers.setdefault((rt, system, value), set()).add(rid)
        conditional.update(cond)

    pending: list[tuple[list[bytes], Any]] = []

    def drain(keep: int) -> None:
        while len(pending) > keep or (pending and pending[0][1].done()):
            chunk, fut = pending.pop(0)
            found = validator.result(fut)
            merge(found if found is not None else scan(chunk))

    def take(chunk: list[bytes]) -> None:
        # The job scans a chunk itself whenever the workers already have two: it would only wait otherwise
        # (and spawned workers take seconds to start, which the first chunks no longer wait for).
        drain(2)  # only what is done: never waits here
        fut = validator.submit(scan, chunk) if len(pending) < 2 else None
        if fut is None:
            merge(scan(chunk))
        else:
            pending.append((chunk, fut))

    with open(path, "rb") as f:
        chunk: list[bytes] = []
        for raw in f:
            chunk.append(raw)
            if len(chunk) >= SCAN_CHUNK:
                take(chunk)
                chunk = []
        if chunk:
            take(chunk)
    drain(0)
    idx.resolved = _resolve_all(conditional, idx)
    return idx


def _parse_conditional(ref: str) -> tuple[str, str | None, str] | None:
    """(type, system or None for "any system", value) of an ``identifier`` conditional reference."""
    rtype, _, query = ref.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    if rtype in SUPPORTED_TYPES and len(params) == 1 and params[0][0] == "identifier":
        system, sep, value = params[0][1].rpartition("|")
        if not sep:
            return rtype, None, params[0][1]
        return rtype, system, value
    return None


RESOLVE_CHUNK = 500  # conditional references per store query


def _resolve_all(refs: Iterable[str], index: _Index) -> dict[str, str | None]:
    """Conditional reference → literal (as a transaction would: exactly one target in the store or in the
    same file), else None. ~90 distinct per Synthea copy for ~10,000 uses: one store query per
    ``RESOLVE_CHUNK`` distinct references for the whole job (was one per batch, before that one per reference)."""
    out: dict[str, str | None] = {}
    todo: dict[str, tuple[str, str | None, str]] = {}
    for ref in refs:
        parsed = _parse_conditional(ref)
        if parsed is None:
            out[ref] = None
        else:
            todo[ref] = parsed
    items = sorted(todo.items())
    for i in range(0, len(items), RESOLVE_CHUNK):
        part = items[i:i + RESOLVE_CHUNK]
        cond = Q()
        for _, (rtype, system, value) in part:
            cond |= Q(resource_type=rtype, code=value) if system is None else Q(resource_type=rtype, code=value,
                                                                                  system=system)
        found: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for rt, system, code, rid in (SearchToken.objects.filter(cond, param="identifier", resource__deleted=False)
                                      .values_list("resource_type", "system", "code", "resource__resource_id")):
            found.setdefault((rt, code), set()).add((system, rid))
        for ref, (rtype, system, value) in part:
            ids = set(index.identifiers.get((rtype, system or "", value), set()))
            ids |= {rid for sys_, rid in found.get((rtype, value), ()) if system is None or sys_ == system}
            out[ref] = f"{rtype}/{next(iter(ids))}" if len(ids) == 1 else None
    return out


def _strip_meta(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def _issue(job: BulkJob, line: int | None, severity: str, code: str, text: str,
           expression: list[str] | None = None) -> BulkIssue:
    return BulkIssue(job=job, line=line, severity=severity, code=code, diagnostics=text[:2000],
                     expression=expression or [])


def _issue_from(job: BulkJob, line: int, exc: ApiError) -> BulkIssue:
    first = exc.outcome()["issue"][0]
    return _issue(job, line, "error", str(first.get("code") or "invalid"), str(first.get("diagnostics") or exc),
                  list(first.get("expression") or []))


def import_run(*, job_id: str) -> BulkJob | None:
    """Run (or resume) an import job; idempotent, safe to redeliver."""
    job = BulkJob.objects.filter(pk=job_id).first()
    if job is None or job.status in (BulkJob.COMPLETED, BulkJob.CANCELLED, BulkJob.FAILED):
        return job
    BulkJob.objects.filter(pk=job.pk).update(status=BulkJob.RUNNING, attempts=job.attempts + 1,
                                             transaction_time=job.transaction_time or timezone.now())
    job.refresh_from_db()
    path = job_dir(job) / "input.ndjson"
    validator = Validator(int(job.lines_total or 0) - job.lines_done)
    quiet = False
    try:
        index = _prescan(path, validator)
        quiet = _gc_quiet()
        batch: list[tuple[int, bytes]] = []
        ahead: list[tuple[list[tuple[int, bytes]], Any]] = []  # batches read, prepared (maybe) elsewhere

        def submit(b: list[tuple[int, bytes]]) -> None:
            ahead.append((b, validator.submit(prepare, [r for _, r in b], index.resolved,
                                              index=validator.index_ahead)))

        def step() -> bool:
            b, fut = ahead.pop(0)
            lines = validator.result(fut)
            if lines is None:
                lines = prepare([r for _, r in b], index.resolved, inline=True)
            return _import_batch(job, b, index, lines)

        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno <= job.lines_done:
                    continue
                batch.append((lineno, raw))
                if len(batch) >= IMPORT_BATCH:
                    submit(batch)
                    batch = []
                    if len(ahead) > 1 and not step():  # one batch prepared ahead of the one written
                        return job  # cancelled
        if batch:
            submit(batch)
        while ahead:
            if not step():
                return job
    except Exception as exc:
        log.exception("import %s failed", job.pk)
        BulkJob.objects.filter(pk=job.pk).update(status=BulkJob.FAILED, failure=type(exc).__name__,
                                                 finished=timezone.now(), expires=timezone.now() + _ttl())
        raise
    finally:
        validator.close()
        if quiet:
            _gc_restore()
    now = timezone.now()
    BulkJob.objects.filter(pk=job.pk, status=BulkJob.RUNNING).update(
        status=BulkJob.COMPLETED, finished=now, expires=now + _ttl()
    )
    job.refresh_from_db()
    (job_dir(job) / "input.ndjson").unlink(missing_ok=True)  # the data now lives in the store
    return job


_GC_DEFAULT = gc.get_threshold()


def _gc_quiet() -> bool:
    """While an import runs: what the process holds now (Django, the pre-scan's index of the whole file) is
    left out of garbage collections, and young collections are rarer. Why: the collector was ~1/3 of the
    job process's CPU (cProfile + ``gc.callbacks``, 14,320 Synthea lines: 692 collections, most of them
    re-traversing that index). A batch's values are acyclic and freed by reference counting anyway."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *_GC_DEFAULT[1:])
    return True


def _gc_restore() -> None:
    gc.set_threshold(*_GC_DEFAULT)
    gc.unfreeze()


def _keys_q(keys: Iterable[tuple[str, str]]) -> Q:
    """A filter for these (type, id) keys: one ``resource_id IN`` per type."""
    grouped: dict[str, list[str]] = {}
    for rt, rid in keys:
        grouped.setdefault(rt, []).append(rid)
    cond = Q()
    for rt, ids in grouped.items():
        cond |= Q(resource_type=rt, resource_id__in=ids)
    return cond


def _import_batch(job: BulkJob, batch: list[tuple[int, bytes]], index: _Index, lines: list[Line]) -> bool:
    """Check against the store and write one batch with its issues and checkpoint in one transaction.

    ``lines``: the batch prepared by ``validate_pool.prepare`` (one per line, in order: parsed, conditional
    references substituted, validated, indexed), in a worker or inline."""
    issues: list[BulkIssue] = []
    items: dict[tuple[str, str], tuple[int, dict[str, Any], Any]] = {}
    stats = {"resolved": 0, "unresolved": 0, "dangling": 0, "unchanged": 0}
    literal: dict[tuple[str, str], list[tuple[int, str]]] = {}
    parsed: list[tuple[int, dict[str, Any], Line]] = []
    for (lineno, _), line in zip(batch, lines, strict=True):
        if line.bad is not None:
            issues.append(_issue(job, lineno, "error", *line.bad))
        elif line.body is not None:
            parsed.append((lineno, line.body if isinstance(line.body, dict) else json.loads(line.body), line))
    # Idempotent: a line equal to what is stored (meta aside, conditional references resolved) writes nothing
    # and is not reported invalid (the stored copy was validated).
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    keys = [(b["resourceType"], b["id"]) for _, b, _ in parsed if isinstance(b.get("id"), str)]
    if keys:
        for row in Resource.objects.filter(_keys_q(keys), deleted=False).only("resource_type", "resource_id", "body"):
            stored[(row.resource_type, row.resource_id)] = _strip_meta(row.body)
    for lineno, body, line in parsed:
        rtype = str(body["resourceType"])
        for where, resolved in line.conditional:
            if resolved:
                stats["resolved"] += 1
            else:
                stats["unresolved"] += 1
                issues.append(_issue(job, lineno, "warning", "not-found",
                                     f"Conditional reference at {rtype}.{where} matches no single resource; "
                                     "kept as sent", [f"{rtype}.{where}"]))
        for tt, tid, where in line.literal:
            if (tt, tid) not in index.keys:
                literal.setdefault((tt, tid), []).append((lineno, f"{rtype}.{where}"))
        rid = body.get("id")
        key = (rtype, str(rid))
        if key in stored and stored[key] == _strip_meta(body):
            stats["unchanged"] += 1
            continue
        try:
            if line.verdict is not None:
                raise BadRequest(line.verdict[1], code=line.verdict[0], expression=line.verdict[2])
            if not isinstance(rid, str):
                raise BadRequest("Every line needs an id (each line is a PUT-as-create)", expression=["id"])
            check_id(rid)
        except ApiError as exc:
            issues.append(_issue_from(job, lineno, exc))
            continue
        if key in items:
            issues.append(_issue(job, items[key][0], "information", "duplicate",
                                 f"{rtype}/{rid} appears again on line {lineno}; the later line was applied"))
        items[key] = (lineno, body, line.ready)
    # References to resources neither in this file nor in the store: accepted, reported.
    if literal:
        present = set(Resource.objects.filter(_keys_q(literal), deleted=False)
                      .values_list("resource_type", "resource_id"))
        for key, uses in literal.items():
            if key not in present:
                for lineno, where in uses:
                    stats["dangling"] += 1
                    issues.append(_issue(job, lineno, "warning", "not-found",
                                         f"{where} refers to {key[0]}/{key[1]}, which is not in the store (accepted)",
                                         [where]))
    user = job.user
    trusted = bool(job.params.get("trusted"))
    last_line = batch[-1][0]
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        if locked.status == BulkJob.CANCELLED:
            return False
        written = _write(job, items, user=user, trusted=trusted, issues=issues)
        counts = dict(locked.counts)
        patients: set[str] = set()
        ids: dict[str, list[str]] = {}
        for rtype, rid, patient_ids in written:
            counts[rtype] = counts.get(rtype, 0) + 1
            patients.update(patient_ids)
            ids.setdefault(rtype, []).append(rid)
        for k, v in stats.items():
            counts["_" + k] = counts.get("_" + k, 0) + v
        BulkIssue.objects.bulk_create(issues)
        BulkJob.objects.filter(pk=job.pk).update(lines_done=last_line, counts=counts, updated=timezone.now())
        job.lines_done, job.counts = last_line, counts
        if written:
            audit_record(user=user, action="import", resource_type="Bundle", patient_ids=sorted(patients),
                         detail={"job": str(job.pk), "lines": [batch[0][0], last_line], "written": len(written),
                                 # which records this batch wrote (ids only): the one event stands for them all
                                 "resources": {t: sorted(v) for t, v in sorted(ids.items())}})
    return True


def _write(job: BulkJob, items: dict[tuple[str, str], tuple[int, dict[str, Any], Any]], *, user: Any, trusted: bool,
           issues: list[BulkIssue]) -> list[tuple[str, str, list[str]]]:
    """Write the batch through the store, one outcome per line: a refused line is an issue and only it is lost.
    Bodies were validated line by line (here or in the worker pool). A trusted import (an administrator's
    ``manage.py fhir_import``) writes as the system store, named after its user."""
    writes = [Write(rt, rid, body, ready=ready) for (rt, rid), (_, body, ready) in items.items()]
    if not writes:
        return []
    store = FhirStore.system(user=user) if trusted else FhirStore(user=user)
    out: list[tuple[str, str, list[str]]] = []
    for (lineno, _, _), res in zip(items.values(), store.apply_each(writes), strict=True):
        if isinstance(res, ApiError):
            issues.append(_issue_from(job, lineno, res))
        elif res.version is not None:
            out.append((res.resource_type, res.resource_id, list(res.version.patient_ids or [])))
    return out


# ---------------------------------------------------------------------------------------------------------------
# $export
# ---------------------------------------------------------------------------------------------------------------

UNSUPPORTED_EXPORT_PARAMS = ("_typeFilter", "_elements", "patient", "includeAssociatedData")


def export_start(
    *, user: Any, level: str, params: list[tuple[str, str]], prefer_async: bool, request_url: str, base_url: str,
    group_id: str | None = None,
) -> BulkJob:
    """Validate a kick-off and queue the export job. Errors are 4xx OperationOutcomes, nothing is queued."""
    _require_user(user)
    if not prefer_async:
        raise BadRequest("Bulk export needs the header 'Prefer: respond-async'", code="not-supported")
    values = {k: v for k, v in params}
    for k in UNSUPPORTED_EXPORT_PARAMS:
        if k in values:
            raise BadRequest(f"{k} is not supported", code="not-supported", expression=[k])
    fmt = values.get("_outputFormat", "application/fhir+ndjson")
    if fmt not in NDJSON_TYPES:
        raise BadRequest("_outputFormat must be application/fhir+ndjson", code="not-supported",
                         expression=["_outputFormat"])
    since = None
    if values.get("_since"):
        try:
            since = parse_date_range(values["_since"])[0].isoformat()
        except ValueError as exc:
            raise BadRequest("Invalid _since", expression=["_since"]) from exc
    patient_level = level in ("patient", "group")
    candidates = [t for t in SUPPORTED_TYPES if not patient_level or t == "Patient" or COMPARTMENT.get(t)]
    if values.get("_type"):
        types = [t.strip() for t in values["_type"].split(",") if t.strip()]
        for t in types:
            if t not in SUPPORTED_TYPES:
                raise BadRequest(f"_type: unknown resource type {t[:64]!r}", expression=["_type"])
            if t not in candidates:
                raise BadRequest(f"_type: {t} is not in the Patient compartment", expression=["_type"])
            access_check(user=user, action="search", resource_type=t)
    else:
        types = [t for t in candidates if may_access(user=user, action="search", resource_type=t)]
        if not types:
            raise Forbidden("Your role may not export any resource type")
    group_members: list[str] | None = None
    if level == "group":
        assert group_id is not None
        group_members = group_patients(user=user, group_id=group_id)
    job = BulkJob.objects.create(
        kind=BulkJob.EXPORT, user=user, request_url=request_url[:2000],
        params={"level": level, "group": group_id, "types": types, "since": since, "format": fmt, "base": base_url,
                "members": group_members},
    )
    audit_record(user=user, action="export-start", resource_type="Group" if group_id else "",
                 resource_id=group_id or "", patient_ids=group_members or [],
                 detail={"job": str(job.id), "level": level, "types": len(types)})
    from .tasks import bulk_export  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    transaction.on_commit(lambda: bulk_export.delay(str(job.id)))
    return job


def group_patients(*, user: Any, group_id: str) -> list[str]:
    """The Patient members of ``Group/group_id`` (readable by ``user``). A care-team Group (identifier
    ``urn:omnicare:care-team-of|<Practitioner id>``) is computed live from the CareTeams, so it never goes
    stale."""
    row = resource_read(user=user, resource_type="Group", resource_id=group_id)
    for ident in row.body.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == CARE_TEAM_GROUP_SYSTEM and ident.get("value"):
            return sorted(care_team_patients(practitioner_id=str(ident["value"])))
    members = []
    for m in row.body.get("member") or []:
        ref = parse_reference(str(((m or {}).get("entity") or {}).get("reference") or ""))
        if ref and ref[0] == "Patient" and not (m or {}).get("inactive"):
            members.append(ref[1])
    return sorted(set(members))


def care_team_patients(*, practitioner_id: str) -> set[str]:
    """Patients whose active CareTeam lists ``Practitioner/practitioner_id``."""
    pks = SearchReference.objects.filter(resource_type="CareTeam", param="participant", target_type="Practitioner",
                                         target_id=practitioner_id).values("resource_id")
    out: set[str] = set()
    for body in Resource.objects.filter(pk__in=pks, deleted=False).values_list("body", flat=True):
        if body.get("status") in ("inactive", "entered-in-error"):
            continue
        ref = parse_reference(str((body.get("subject") or {}).get("reference") or ""))
        if ref and ref[0] == "Patient":
            out.add(ref[1])
    return out


def care_team_group(*, practitioner_id: str) -> dict[str, Any]:
    """The Group (id ``care-team-<practitioner>``) whose members are that practitioner's care-team patients:
    a clinic exports its panel with ``Group/care-team-<id>/$export``. Written through the store (trusted: a
    management command or the demo seeder calls this)."""
    check_id(f"care-team-{practitioner_id}")
    members = sorted(care_team_patients(practitioner_id=practitioner_id))
    group = {
        "resourceType": "Group", "id": f"care-team-{practitioner_id}", "type": "person", "actual": True,
        "name": "Care-team patients",
        "identifier": [{"system": CARE_TEAM_GROUP_SYSTEM, "value": practitioner_id}],
        "managingEntity": {"reference": f"Practitioner/{practitioner_id}"},
        "quantity": len(members),
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members],
    }
    resources_import(resources=[group])
    return group


def _export_queryset(job: BulkJob, rtype: str) -> Any:
    qs = Resource.objects.filter(resource_type=rtype, deleted=False)
    params = job.params
    if params.get("since"):
        qs = qs.filter(last_updated__gt=datetime.fromisoformat(params["since"]))
    if job.transaction_time is not None:
        qs = qs.filter(last_updated__lte=job.transaction_time)
    in_compartment = rtype == "Patient" or bool(COMPARTMENT.get(rtype))
    if not in_compartment:
        return qs
    visible = visible_patient_ids(user=job.user, action="search", resource_type=rtype)
    patients: set[str] | None = None if isinstance(visible, AllPatients) else set(visible)
    if params.get("members") is not None:
        members = set(params["members"])
        patients = members if patients is None else patients & members
    if patients is not None:
        qs = qs.filter(pk__in=ResourcePatient.objects.filter(resource_type=rtype, patient_id__in=sorted(patients))
                       .values("resource_id"))
    elif params.get("level") == "patient":
        qs = qs.filter(pk__in=ResourcePatient.objects.filter(resource_type=rtype).values("resource_id"))
    return qs


def export_run(*, job_id: str) -> BulkJob | None:
    """Run (or resume) an export job: one NDJSON file per type, streamed in byte-bounded chunks."""
    job = BulkJob.objects.select_related("user").filter(pk=job_id).first()
    if job is None or job.status in (BulkJob.COMPLETED, BulkJob.CANCELLED, BulkJob.FAILED):
        return job
    first_run = job.transaction_time is None
    BulkJob.objects.filter(pk=job.pk).update(status=BulkJob.RUNNING, attempts=job.attempts + 1,
                                             transaction_time=job.transaction_time or timezone.now())
    job.refresh_from_db()
    if first_run:
        job.checkpoint = {}
    out_dir = job_dir(job)
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = _chunk_bytes()
    try:
        types = list(job.params["types"])
        done: list[dict[str, Any]] = list(job.output)
        done_types = {o["type"] for o in done}
        # ~140 R4 types, most of them empty: one query instead of a plan query per empty type.
        present = set(Resource.objects.filter(deleted=False, resource_type__in=types)
                      .values_list("resource_type", flat=True).distinct())
        for ti, rtype in enumerate(types):
            if rtype in done_types or rtype not in present:
                continue
            cp = job.checkpoint if job.checkpoint.get("type") == rtype else {"type": rtype, "after": 0,
                                                                               "offset": 0, "count": 0}
            path = out_dir / f"{rtype}.ndjson"
            qs = _export_queryset(job, rtype)
            after, count, offset = int(cp["after"]), int(cp["count"]), int(cp["offset"])
            ratio = 1.0  # bytes written per byte of estimated size, learnt as we go
            with open(path, "ab" if offset else "wb") as f:
                f.truncate(offset)  # a crash may have left a partial chunk after the checkpoint
                f.seek(offset)
                while True:
                    plan = list(qs.filter(pk__gt=after).order_by("pk").annotate(sz=_stored_size())
                                .values_list("pk", "sz")[:PLAN_ROWS])
                    if not plan:
                        break
                    i = 0
                    while i < len(plan):
                        # The next chunk: as many rows as fit in the byte budget (always at least one).
                        j, est = i, 0.0
                        while j < len(plan) and (j == i or est + (plan[j][1] or 0) * ratio <= budget):
                            est += (plan[j][1] or 0) * ratio
                            j += 1
                        hi = plan[j - 1][0]
                        size, n = _write_chunk(f, qs.filter(pk__gt=after, pk__lte=hi))
                        raw_est = sum((plan[k][1] or 0) for k in range(i, j))
                        ratio = max(0.05, size / max(raw_est, 1))
                        after, count, offset, i = hi, count + n, offset + size, j
                        f.flush()
                        updated = BulkJob.objects.filter(pk=job.pk, status=BulkJob.RUNNING).update(
                            checkpoint={"type": rtype, "after": after, "offset": offset, "count": count},
                            lines_done=_exported(done) + count, updated=timezone.now(),
                        )
                        if not updated:
                            return job  # cancelled
            patients = sorted(ResourcePatient.objects.filter(resource__in=qs).values_list("patient_id", flat=True)
                              .distinct().order_by()) if count else []
            if count:
                done.append({"type": rtype, "file": path.name, "count": count})
            else:
                path.unlink(missing_ok=True)
            with transaction.atomic():
                BulkJob.objects.filter(pk=job.pk).update(
                    output=done, checkpoint={"type": types[ti + 1] if ti + 1 < len(types) else "", "after": 0,
                                             "offset": 0, "count": 0},
                    counts={**job.counts, rtype: count},
                )
                job.counts = {**job.counts, rtype: count}
                if count:
                    audit_record(user=job.user, action="export", resource_type=rtype, patient_ids=patients,
                                 detail={"job": str(job.pk), "count": count})
    except Exception as exc:
        log.exception("export %s failed", job.pk)
        BulkJob.objects.filter(pk=job.pk).update(status=BulkJob.FAILED, failure=type(exc).__name__,
                                                 finished=timezone.now(), expires=timezone.now() + _ttl())
        raise
    now = timezone.now()
    BulkJob.objects.filter(pk=job.pk, status=BulkJob.RUNNING).update(status=BulkJob.COMPLETED, finished=now,
                                                                     expires=now + _ttl())
    job.refresh_from_db()
    return job


PLAN_ROWS = 5000


def _stored_size() -> Any:
    """Each row's size as (about) the text that will be written, read before the row, without serialising it.

    PostgreSQL: ``pg_column_size`` for a value stored uncompressed (the jsonb binary is within a small factor
    of its text, and ``export_run`` corrects by the bytes actually written: ``ratio``); for a compressed one
    (``pg_column_compression`` not null) the exact ``octet_length(body::text)``, because a 40 KB resource of
    repetitive text is ~1 KB stored and a chunk planned on that blew the budget 20x. Only those rows pay the
    serialisation twice (84 of the 7,160 Synthea rows), so the plan costs ~0.4 µs a row instead of ~6 µs.
    Elsewhere (SQLite stores JSON as text) the text length."""
    if connection.vendor == "postgresql":
        col = f'{connection.ops.quote_name(Resource._meta.db_table)}.{connection.ops.quote_name("body")}'
        return RawSQL(f"CASE WHEN pg_column_compression({col}) IS NULL THEN pg_column_size({col}) "  # noqa: S611
                      f"ELSE octet_length({col}::text) END", [], output_field=BigIntegerField())
    return Length(Cast("body", TextField()))


def _chunk_lines(qs: Any) -> Iterator[bytes]:
    """The chunk's rows as JSON text bytes, in key order, with no model, no ``json`` decode/encode and no str.

    PostgreSQL: ``convert_to(body::text, 'UTF8')`` fetched through psycopg's binary protocol arrives as the
    bytes to write (a text column would be decoded to str and encoded again: ~40 % of the Python time)."""
    if connection.vendor == "postgresql":
        q = qs.order_by("pk").annotate(b=Func(Cast("body", TextField()), Value("UTF8"), function="convert_to",
                                               output_field=BinaryField())).values_list("b", flat=True)
        sql, params = q.query.sql_with_params()
        import psycopg

        connection.ensure_connection()
        # Django's cursors bind client-side, which cannot ask for binary results: a plain psycopg cursor.
        with psycopg.Cursor(connection.connection) as cur:
            cur.format = psycopg.pq.Format.BINARY
            cur.execute(sql, params)
            for (data,) in cur:
                yield bytes(data)
        return
    for text in qs.order_by("pk").annotate(text=Cast("body", TextField())).values_list("text", flat=True):
        yield text.encode() if isinstance(text, str) else json.dumps(text).encode()


def _write_chunk(f: Any, qs: Any) -> tuple[int, int]:
    """Fetch one planned chunk and append it, one resource a line. (bytes, rows)."""
    lines = list(_chunk_lines(qs))  # one chunk: bounded by the byte budget the plan set
    if not lines:
        return 0, 0
    data = b"\n".join(lines) + b"\n"
    f.write(data)
    return len(data), len(lines)


def _exported(done: list[dict[str, Any]]) -> int:
    return sum(int(o["count"]) for o in done)


# ---------------------------------------------------------------------------------------------------------------
# Status, cancel, files, expiry (shared by both kinds)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Status:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]


def job_status(*, user: Any, job_id: str, base_url: str) -> Status:
    """202 + X-Progress/Retry-After while running; 200 + manifest when done; 5xx outcome on failure."""
    job = _owned(user, job_id)
    if job.status in (BulkJob.ACCEPTED, BulkJob.RUNNING):
        if job.kind == BulkJob.IMPORT:
            progress = f"{job.lines_done} of {job.lines_total or '?'} lines"
        else:
            progress = f"{job.lines_done} resources, {len(job.output)} of {len(job.params.get('types', []))} types"
        return Status(202, None, {"X-Progress": progress, "Retry-After": "2"})
    if job.status == BulkJob.CANCELLED:
        raise NotFound("This bulk job was cancelled")
    if job.status == BulkJob.FAILED:
        return Status(500, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "exception", "diagnostics": "The bulk job failed; start it again"}]}, {})
    files = f"{base_url}/$bulk-file/{job.pk}"
    assert job.transaction_time is not None
    manifest: dict[str, Any] = {
        "transactionTime": job.transaction_time.isoformat().replace("+00:00", "Z"),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [{"type": o["type"], "url": f"{files}/{o['file']}", "count": o["count"]} for o in job.output],
        "error": [],
    }
    if job.kind == BulkJob.IMPORT:
        counts = {k: v for k, v in job.counts.items() if not k.startswith("_")}
        manifest["output"] = [{"type": t, "count": n} for t, n in sorted(counts.items())]
        manifest["extension"] = {
            "unchanged": job.counts.get("_unchanged", 0),
            "conditionalReferencesResolved": job.counts.get("_resolved", 0),
            "conditionalReferencesUnresolved": job.counts.get("_unresolved", 0),
            "referencesToAbsentResources": job.counts.get("_dangling", 0),
            "linesRead": job.lines_done,
        }
        n_err = job.issues.filter(severity="error").count()
        n_warn = job.issues.exclude(severity="error").count()
        if n_err or n_warn:
            manifest["error"] = [{"type": "OperationOutcome", "url": f"{files}/errors.ndjson", "count": n_err + n_warn}]
        manifest["extension"]["rejectedLines"] = n_err
    return Status(200, manifest, {"Expires": job.expires.isoformat() if job.expires else ""})


def job_cancel(*, user: Any, job_id: str) -> None:
    """DELETE on the status URL: stop the job and delete its files (202)."""
    job = _owned(user, job_id)
    if job.status == BulkJob.CANCELLED:
        raise NotFound("This bulk job was already cancelled")
    BulkJob.objects.filter(pk=job.pk).update(status=BulkJob.CANCELLED, finished=timezone.now(),
                                             expires=timezone.now())
    shutil.rmtree(job_dir(job), ignore_errors=True)
    audit_record(user=user, action="bulk-cancel", detail={"job": str(job.pk), "kind": job.kind})


def job_file(*, user: Any, job_id: str, name: str) -> Iterator[bytes] | Path:
    """An output file of a completed job (export NDJSON, or the import's error NDJSON), for its owner only.
    Audited as a disclosure of the patients in it."""
    job = _owned(user, job_id)
    if job.status != BulkJob.COMPLETED:
        raise NotFound("No such file")
    if job.kind == BulkJob.IMPORT and name == "errors.ndjson":
        audit_record(user=user, action="bulk-download", detail={"job": str(job.pk), "file": name})
        return _error_lines(job)
    entry = next((o for o in job.output if o["file"] == name), None)
    path = job_dir(job) / name
    if entry is None or not path.is_file():
        raise NotFound("No such file")
    patients = sorted(set(ResourcePatient.objects.filter(resource__in=_export_queryset(job, entry["type"]))
                          .values_list("patient_id", flat=True)))
    audit_record(user=user, action="bulk-download", resource_type=entry["type"], patient_ids=patients,
                 detail={"job": str(job.pk), "file": name, "count": entry["count"]})
    return path


def _error_lines(job: BulkJob) -> Iterator[bytes]:
    for issue in job.issues.order_by("line", "pk").iterator(chunk_size=1000):
        yield json.dumps(_outcome(issue), separators=(",", ":")).encode() + b"\n"


def jobs_resume(*, stale_after: timedelta = timedelta(minutes=10), now: datetime | None = None) -> int:
    """Re-queue jobs whose worker died (accepted or in progress, no checkpoint for ``stale_after``): they
    continue from their checkpoint. Beat runs this; a redelivered task that finds a job finished is a no-op."""
    from .tasks import bulk_export, bulk_import  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    now = now or timezone.now()
    n = 0
    for job in BulkJob.objects.filter(status__in=[BulkJob.ACCEPTED, BulkJob.RUNNING], updated__lt=now - stale_after):
        BulkJob.objects.filter(pk=job.pk).update(updated=now)
        (bulk_import if job.kind == BulkJob.IMPORT else bulk_export).delay(str(job.pk))
        n += 1
    return n


def jobs_expire(*, now: datetime | None = None) -> int:
    """Delete the files and rows of jobs past their expiry (Celery beat). Returns how many."""
    now = now or timezone.now()
    n = 0
    for job in BulkJob.objects.filter(expires__lte=now):
        shutil.rmtree(job_dir(job), ignore_errors=True)
        job.delete()
        n += 1
    return n
