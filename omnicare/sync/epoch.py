"""Server epochs: how a device notices that the server database went back in time (PROTOCOL.md "Server epochs").

The epoch devices see is ``<stored id>`` on SQLite and ``<stored id>-<12 hex>`` on PostgreSQL, where the
suffix hashes the cluster's system identifier and current timeline (``pg_control_system()``,
``pg_control_checkpoint()``): a point-in-time recovery promotes onto a new timeline, so the epoch changes even
before anyone runs ``manage.py new_epoch``. A restore that keeps the cluster and timeline (``pg_restore``,
``CREATE DATABASE … TEMPLATE``, copying a SQLite file) changes nothing PostgreSQL reports, which is why the
runbook calls ``new_epoch`` after ANY restore: it draws a new random id.

``feed_seq`` — the change-feed head when the epoch began — is what the restored database held; a recover
mutation is merged against the newest version of its resource at or below it (:func:`recovery_base`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from typing import Any

from django.db import DatabaseError, connection, transaction

from omnicare.audit.models import AuditEvent
from omnicare.audit.services import NewEvent, append_events
from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.services import feed_head
from pyclient.protocol import Mutation, MutationResult, PushRequest

from .models import AppliedMutation, ServerEpoch

#: Seconds a process reuses the epoch it computed (one query less per pull/push); ``new_epoch`` clears it.
CACHE_SECONDS = 5.0
_cache: tuple[float, ServerEpoch, str] | None = None


def _cluster_suffix() -> str:
    """PostgreSQL: a hash of (system identifier, timeline); '' elsewhere or when the role may not read it."""
    if connection.vendor != "postgresql":
        return ""
    try:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(
                "SELECT (SELECT system_identifier FROM pg_control_system()),"
                " (SELECT timeline_id FROM pg_control_checkpoint())"
            )
            row = cur.fetchone()
    except DatabaseError:
        return ""  # (the savepoint keeps the caller's transaction usable)
    if row is None:
        return ""
    return "-" + hashlib.sha256(f"{row[0]}:{row[1]}".encode()).hexdigest()[:12]


def _row() -> ServerEpoch:
    row = ServerEpoch.objects.filter(pk=1).first()
    if row is None:
        with transaction.atomic():
            row, _ = ServerEpoch.objects.get_or_create(
                pk=1, defaults={"epoch": secrets.token_hex(16), "feed_seq": feed_head(), "reason": "first start"}
            )
    return row


def epoch_state() -> tuple[ServerEpoch, str]:
    """(the stored row, the epoch value devices see). A new cluster timeline starts a new ``feed_seq`` by itself."""
    global _cache
    now = time.monotonic()
    if _cache is not None and now - _cache[0] < CACHE_SECONDS:
        return _cache[1], _cache[2]
    row = _row()
    value = row.epoch + _cluster_suffix()
    if row.presented != value:
        # First computation, or PostgreSQL promoted onto a new timeline (point-in-time recovery) without a
        # new_epoch yet: the feed head now is what the restored database held.
        with transaction.atomic():
            if row.presented:
                row.feed_seq = feed_head()
            row.presented = value
            ServerEpoch.objects.filter(pk=1).update(feed_seq=row.feed_seq, presented=value)
    _cache = (now, row, value)
    return row, value


def current_epoch() -> str:
    """The epoch value every pull and push response carries."""
    return epoch_state()[1]


def epoch_clear_cache() -> None:
    global _cache
    _cache = None


def epoch_new(*, reason: str) -> tuple[str, str]:
    """Start a new epoch (after a restore): a new random id, the feed head as the restored base. Audited.

    Returns (old, new) epoch values as devices see them."""
    epoch_clear_cache()
    with transaction.atomic():
        old = epoch_state()[1]
        head = feed_head()
        ServerEpoch.objects.filter(pk=1).update(
            epoch=secrets.token_hex(16), feed_seq=head, presented="", reason=reason[:200]
        )
        epoch_clear_cache()
        new = epoch_state()[1]
        append_events([NewEvent(action="server-epoch-new", category=AuditEvent.CATEGORY_SECURITY,
                                detail={"reason": reason[:200], "feedSeq": head})])
    epoch_clear_cache()
    return old, new


def recovery_base(*, resource_type: str, resource_id: str) -> int | None:
    """The version of a resource the restored database held (at the epoch's start), None if it had none."""
    row, _ = epoch_state()
    v = (
        ResourceVersion.objects.filter(
            resource_type=resource_type, resource_id=resource_id, seq__gt=0, seq__lte=row.feed_seq
        )
        .order_by("-version_id")
        .values_list("version_id", "deleted")
        .first()
    )
    return None if v is None else int(v[0])  # (a tombstone's version too: the merge rules know it)


def recover_rewrite(*, user: Any, request: PushRequest) -> tuple[PushRequest, dict[int, MutationResult]]:
    """Prepare the recover mutations of a push (PROTOCOL.md "Server epochs").

    Idempotent by mutation id whatever the content: a recover mutation whose id this server already recorded
    was applied before the restore point (its effect is in the restored database) or is a replay of this
    recovery, so it is answered with the recorded result. Every other one gets as its base the version the
    restored database held, and then takes the normal push path (merged, or parked as a conflict).
    Returns the request still to apply and the answers already known, by position in ``request``.
    """
    rec = [m for m in request.mutations if m.recover]
    known = {
        a.mutation_id: a.result
        for a in AppliedMutation.objects.filter(user=user, mutation_id__in=[m.mutation_id for m in rec])
    }
    answered: dict[int, MutationResult] = {}
    todo: list[Mutation] = []
    for i, m in enumerate(request.mutations):
        if not m.recover:
            todo.append(m)
        elif m.mutation_id in known:
            answered[i] = MutationResult.from_json(known[m.mutation_id])
        else:
            base = recovery_base(resource_type=m.resource_type, resource_id=m.id)
            if base is None and m.op == "delete":
                todo.append(m)  # never held by the restored database: the rules answer it (kept visible)
            else:
                todo.append(dataclasses.replace(m, base_version=base))
    return dataclasses.replace(request, mutations=tuple(todo)), answered


def with_epoch(body: bytes) -> bytes:
    """Add ``"epoch"`` to a JSON object response body."""
    if not body.endswith(b"}"):
        return body
    value: Any = current_epoch()
    return body[:-1] + b',"epoch":' + json.dumps(value).encode() + b"}"
