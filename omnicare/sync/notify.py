"""Change hints for WebSocket subscribers: after a commit, one small message to the ``sync.feed`` group.

Hints are best effort (clients catch up by cursor after every reconnect), so a lost message costs nothing.
Every consumer filters the hint by its own user's scope before anything reaches a socket: the group message
itself never leaves the server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from omnicare.fhir.models import ResourceVersion

log = logging.getLogger("omnicare.sync.notify")

GROUP = "sync.feed"
#: Versions listed in one hint; a bigger commit says ``more: true`` and clients simply pull.
MAX_HINT_ENTRIES = 100
#: Types whose change can change somebody's scope (consumers then recompute it).
SCOPE_TYPES = frozenset({"CareTeam", "Practitioner"})


def hint_for(versions: Iterable[ResourceVersion]) -> dict[str, Any] | None:
    items = [
        {
            "resourceType": v.resource_type,
            "id": v.resource_id,
            "versionId": v.version_id,
            "seq": v.seq,
            "deleted": v.deleted,
            "patients": list(v.patient_ids or []),
        }
        for v in versions
    ]
    if not items:
        return None
    items.sort(key=lambda i: i["seq"])
    return {
        "type": "sync.changed",
        "seq": items[-1]["seq"],
        "scopeChanged": any(i["resourceType"] in SCOPE_TYPES for i in items),
        "changes": items[:MAX_HINT_ENTRIES],
        "more": len(items) > MAX_HINT_ENTRIES,
    }


def send_hint(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, message)
    except Exception:  # a hint must never fail a write that already committed
        log.warning("sync hint not delivered", exc_info=True)


def notify_after_commit(versions: Iterable[ResourceVersion | None]) -> None:
    """Queue a hint for these versions, sent only if and when the current transaction commits."""
    message = hint_for(v for v in versions if v is not None)
    if message is not None:
        transaction.on_commit(lambda: send_hint(message))
