"""Readiness: can this process serve real requests right now? (``/api/health/ready``, for load balancers.)

Every check has a ~2 s bound, so a dead dependency gives a quick 503, not a hung probe. Liveness
(``/api/health``) stays dependency-free: a process that is alive but not ready must not be restarted.
"""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection

from omnicare.core.broker import broker_ping

_MIGRATED = False  # once every migration is applied it stays so for this process's code


def _database() -> bool:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() is not None
    except DatabaseError:
        return False


def _migrations() -> bool:
    global _MIGRATED
    if _MIGRATED:
        return True
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        _MIGRATED = not executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        return False
    return _MIGRATED


def _redis() -> bool | None:
    """The channel layer's Redis (None: not configured, the in-memory layer)."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError):
        return False


def readiness() -> dict[str, str]:
    """``{"database": "ok"|"unavailable", "migrations": "ok"|"pending"|..., "redis": ..., "broker": ...}``."""
    db = _database()
    checks = {
        "database": "ok" if db else "unavailable",
        "migrations": ("ok" if _migrations() else "pending") if db else "unknown",
    }
    redis_ok = _redis()
    checks["redis"] = "not configured" if redis_ok is None else ("ok" if redis_ok else "unavailable")
    checks["broker"] = "ok" if broker_ping(timeout=2.0) else "unavailable"
    return checks


def is_ready(checks: dict[str, str]) -> bool:
    return all(v in ("ok", "not configured") for v in checks.values())
