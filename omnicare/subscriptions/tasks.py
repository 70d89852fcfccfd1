"""Subscription matching and delivery on the Celery worker (queued after each committed write; beat catches up
after a restart and retries failed deliveries)."""

from __future__ import annotations

from celery import shared_task

from .services import dispatch as run
from .services import heartbeats_send


@shared_task(name="omnicare.subscriptions.dispatch")
def dispatch() -> int:
    return run()


@shared_task(name="omnicare.subscriptions.heartbeat")
def heartbeat() -> int:
    """Beat job: heartbeats to rest-hook subscriptions that asked for them and have been quiet that long."""
    return heartbeats_send()
