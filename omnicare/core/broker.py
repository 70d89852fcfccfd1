"""The Celery broker at the edge: hand a task over, or say quickly that the broker is unreachable.

Every enqueue happens after the row it refers to is committed (an outbox: a sweeper re-sends rows the
broker never got), with no publish retries, so a dead broker costs the caller ~2 s
(``CELERY_BROKER_CONNECTION_TIMEOUT``) instead of kombu's ~20 s retry loop and a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from omnicare.celery import app

log = logging.getLogger("omnicare.broker")


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    errors: list[type[BaseException]] = [OperationalError, ConnectionError, TimeoutError, OSError]
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency with REDIS_URL
        pass
    return tuple(errors)


def enqueue(task: Any, *args: Any) -> bool:
    """``task.apply_async(args)`` without retries; False (and a log line without arguments) when the
    broker cannot take it. Eager mode (no broker) runs the task inline and returns True."""
    queue = getattr(settings, "OMNICARE_JOBS_QUEUE", "") or None
    if app.conf.task_always_eager:
        task.apply_async(args=list(args))
        return True
    try:
        task.apply_async(args=list(args), retry=False, queue=queue)
    except _broker_errors() as exc:
        log.warning("broker unreachable, %s not sent: %s", task.name, type(exc).__name__)
        return False
    return True


def broker_ping(timeout: float = 2.0) -> bool:
    """True when the broker accepts a connection within ``timeout`` seconds (always True when eager)."""
    if app.conf.task_always_eager:
        return True
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except _broker_errors():
        return False
    return True
