"""Bulk Data test helpers: an integration client, job polling, the Synthea sample (skipped, with the reason,
only where the shared data directory is absent; CI machines have it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.shared_data import SYNTHEA

BASE = "/fhir/R4"


def synthea_files() -> list[Path]:
    if not SYNTHEA.is_dir():
        pytest.skip(f"the Synthea sample is not on this machine ({SYNTHEA}); CI machines have it")
    return sorted(SYNTHEA.glob("*.000.ndjson"))


@pytest.fixture(autouse=True)
def _eager_unless_real_worker(request: pytest.FixtureRequest) -> Any:
    """Bulk jobs run inline even when REDIS_URL configures a broker, except in the real-worker module."""
    from omnicare.celery import app

    if request.module.__name__.endswith("test_worker"):
        yield
        return
    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


@pytest.fixture(autouse=True)
def _bulk_dir(settings: Any, tmp_path: Path) -> None:
    settings.OMNICARE_BULK_DIR = tmp_path / "bulk"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_for(user: Any) -> Client:
    from omnicare.access.services import token_create

    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='bulk')}")


@pytest.fixture
def integration(django_user_model: Any) -> Any:
    from omnicare.access.roles import role_assign

    u = django_user_model.objects.create_user(username="interface.engine")
    role_assign(user=u, role="integration")
    return u


def kick_import(client: Client, body: bytes, capture: Any) -> str:
    with capture(execute=True):
        r = client.post(f"{BASE}/$import", body, content_type="application/fhir+ndjson",
                        HTTP_PREFER="respond-async")
    assert r.status_code == 202, r.content
    return str(r["Content-Location"])


def wait_manifest(client: Client, url: str, timeout: float = 300) -> dict[str, Any]:
    """Poll the status URL like a Bulk client (honouring Retry-After) until the manifest arrives."""
    path = url.split("testserver", 1)[-1]
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(path)
        if r.status_code == 200:
            return json.loads(r.content)
        assert r.status_code == 202, r.content
        assert r["X-Progress"] and int(r["Retry-After"]) >= 1
        assert time.monotonic() < deadline, "bulk job did not finish"
        time.sleep(0.2)


def ndjson(client: Client, url: str) -> list[dict[str, Any]]:
    r = client.get(url.split("testserver", 1)[-1])
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("application/fhir+ndjson")
    data = b"".join(r.streaming_content) if r.streaming else r.content
    return [json.loads(line) for line in data.splitlines() if line.strip()]
