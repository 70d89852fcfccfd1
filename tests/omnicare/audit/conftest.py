"""Fixtures for audit tests: users with roles, a fixed master key, and raw-SQL tampering that bypasses guards."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from omnicare.access.roles import role_assign
from omnicare.keys import backends

AUDIT_TABLES = ("audit_auditevent", "audit_checkpoint", "audit_auditarchive")


@pytest.fixture(autouse=True)
def fixed_master_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x05" * 32).decode())
    backends.reset_backends()
    yield
    backends.reset_backends()


@pytest.fixture
def make_user(db: Any, django_user_model: Any) -> Callable[..., Any]:
    def make(username: str, *roles: str) -> Any:
        user = django_user_model.objects.create_user(username=username)  # no password: hashing is slow
        for role in roles:
            role_assign(user=user, role=role)
        return user

    return make


@pytest.fixture
def tamper() -> Callable[[str, list[Any] | None], None]:
    """Run raw SQL as an attacker with database access would (the PostgreSQL trigger disabled first)."""

    def run(sql: str, params: list[Any] | None = None) -> None:
        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            cur.execute(sql, params or [])
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")

    return run


@pytest.fixture
def http_mounted() -> Callable[[str], None]:
    """Skip an HTTP test until the lead mounts the router (services are tested regardless)."""
    from django.urls import Resolver404, resolve

    def check(path: str) -> None:
        try:
            resolve(path)
        except Resolver404:
            pytest.skip(f"{path} is not mounted yet (omnicare/api.py)")

    return check
