"""Users and helpers for the operations tests."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.keys import backends


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[None]:
    from omnicare.ops import metrics
    from omnicare.ops.dashboard import snapshot_clear

    # Figures are asserted right after the activity that made them: no shared snapshot between views
    # (test_snapshot_is_shared_per_refresh turns it back on).
    settings.OMNICARE_OPS_SNAPSHOT_SECONDS = 0
    snapshot_clear()

    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x05" * 32).decode())
    backends.reset_backends()
    metrics.BUFFER.reset()  # requests of earlier tests must not be counted in this one
    yield
    backends.reset_backends()


def _user(model: Any, name: str, role: str | None) -> Any:
    user = model.objects.create_user(username=name, password="pw-long-enough-1")
    if role:
        role_assign(user=user, role=role)
    return user


@pytest.fixture
def clinician(django_user_model: Any) -> Any:
    return _user(django_user_model, "dr.ops", "physician")


@pytest.fixture
def administrator(django_user_model: Any) -> Any:
    return _user(django_user_model, "ops.admin", "administrator")


@pytest.fixture
def auditor(django_user_model: Any) -> Any:
    return _user(django_user_model, "ops.auditor", "auditor")


def client_for(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def report(device: str = "tab-1", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "deviceId": device, "reportId": str(uuid.uuid4()), "reason": "sync", "appVersion": "app-1",
        "outbox": {"pending": 0, "conflicted": 0, "rejected": 0, "oldestPendingAge": None},
        "lastSyncAge": 5.0, "storage": {"used": 30 * 2**20, "quota": 2**31, "persisted": True, "records": 400},
        "failedUnlocks": 0, "intervalSeconds": 300.0, "offlineSeconds": 0.0, "offlineReadySeconds": 300.0,
        "kbVersions": {"pyclient": "0.1.0"},
    }
    body.update(kw)
    return body


def post(c: Client, path: str, body: Any) -> Any:
    return c.post(path, json.dumps(body), content_type="application/json")
