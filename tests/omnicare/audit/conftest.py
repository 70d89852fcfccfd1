"""Fixtures for audit tests: users with roles, a fixed master key, and raw-SQL tampering that bypasses guards."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from omnicare.access.roles import role_assign
from omnicare.audit import dbguard
from omnicare.keys import backends

AUDIT_TABLES = ("audit_auditevent", "audit_checkpoint", "audit_auditarchive", "audit_chainhead", "keys_keyversion")


@pytest.fixture(autouse=True)
def fixed_master_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x05" * 32).decode())
    backends.reset_backends()
    yield
    backends.reset_backends()


@pytest.fixture(autouse=True)
def checkpoint_log(settings: Any, tmp_path: Any) -> Any:
    """Each test publishes its checkpoints to its own external log (as production does to another disk)."""
    settings.OMNICARE_AUDIT_CHECKPOINT_LOG = str(tmp_path / "published" / "checkpoints.jsonl")
    return tmp_path / "published" / "checkpoints.jsonl"


@pytest.fixture
def make_user(db: Any, django_user_model: Any) -> Callable[..., Any]:
    def make(username: str, *roles: str) -> Any:
        user = django_user_model.objects.create_user(username=username)  # no password: hashing is slow
        for role in roles:
            role_assign(user=user, role=role)
        return user

    return make


@pytest.fixture
def register_device() -> Callable[..., Any]:
    """A device of ``user`` registered a day ago that has pulled these patients (its audited sync pulls)."""
    from datetime import timedelta

    from django.utils import timezone

    from omnicare.audit import services
    from omnicare.sync.models import Device
    from omnicare.sync.services import device_register

    def register(user: Any, device_id: str, patients: list[str] | None = None) -> Any:
        device_register(user=user, device_id=device_id, name="test tablet")
        Device.objects.filter(user=user, device_id=device_id).update(created=timezone.now() - timedelta(days=1))
        if patients:
            services.audit_record(user=user, action="sync-pull", device_id=device_id, patient_ids=patients)
        return Device.objects.get(user=user, device_id=device_id)

    return register


@pytest.fixture
def tamper() -> Callable[[str, list[Any] | None], None]:
    """Run raw SQL as an attacker with owner access to the database would (triggers lifted first)."""

    def run(sql: str, params: list[Any] | None = None) -> None:
        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            else:
                for name in dbguard.sqlite_triggers():
                    cur.execute(f"DROP TRIGGER IF EXISTS {name}")
            cur.execute(sql, params or [])
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            else:
                for stmt in dbguard.sqlite_triggers().values():
                    cur.execute(stmt)

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
