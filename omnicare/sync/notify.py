"""Change hints for WebSocket subscribers: after a commit, one small message to the ``sync.feed`` group.

Hints are best effort (clients catch up by cursor after every reconnect), so a lost message costs nothing.
Every consumer filters the hint by its own user's scope before anything reaches a socket: the group message
itself never leaves the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
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
    if type(layer).__module__.startswith("channels_redis"):
        _sender().put(message)  # off the request path (see _HintSender)
        return
    try:
        async_to_sync(layer.group_send)(GROUP, message)
    except Exception:  # a hint must never fail a write that already committed
        log.warning("sync hint not delivered", exc_info=True)


class _HintSender:
    """One daemon thread per process with one event loop that publishes hints to Redis.

    Why: ``async_to_sync(group_send)`` after every commit ran a fresh event loop and Redis connection for each
    write, on the request's own thread: 25 % of a FHIR create's wall time in the profile (bench/request_profile.py).
    Hints are best effort already, so a queue in front of them loses nothing a reconnect's catch-up would not
    repair. In-process channel layers keep the direct send (their consumers share this process's loop).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="omnicare-sync-hints", daemon=True).start()

    def put(self, message: dict[str, Any]) -> None:
        self.queue.put(message)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            message = self.queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    loop.run_until_complete(layer.group_send(GROUP, message))
            except Exception:  # best effort: log and go on with the next hint
                log.warning("sync hint not delivered", exc_info=True)


_hint_sender: _HintSender | None = None
_hint_lock = threading.Lock()


def _sender() -> _HintSender:
    global _hint_sender
    with _hint_lock:
        if _hint_sender is None or _hint_sender.pid != os.getpid():  # a forked worker starts its own thread
            _hint_sender = _HintSender()
        return _hint_sender


def notify_after_commit(versions: Iterable[ResourceVersion | None]) -> None:
    """Queue a hint for these versions, sent only if and when the current transaction commits."""
    message = hint_for(v for v in versions if v is not None)
    if message is not None:
        transaction.on_commit(lambda: send_hint(message))
