"""Failing fast: a dead database or broker gives a quick 503 with Retry-After, never a 30 s hang or a 500,
and ``/api/health/ready`` tells a load balancer the truth while ``/api/health`` (liveness) stays 200.

Real uvicorn processes: one whose database address accepts TCP connections but never answers (a hung
server, the worst case for timeouts), one whose broker refuses connections (Redis down).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import requires_postgres
from tests.live import live_server_start, live_server_stop


def _request(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], Any, float]:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=headers)  # noqa: S310 (127.0.0.1)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
            status, hdrs, raw = resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    took = time.monotonic() - started
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, hdrs, parsed, took


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts TCP connections and then says nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connections are refused


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_hung_gives_503_with_retry_after_in_about_two_seconds(
    user: Any, token_for: Callable[[Any], str], hung_port: int
) -> None:
    token = token_for(user)
    server = live_server_start(
        database={"ENGINE": "django.db.backends.postgresql", "NAME": "omnicare", "USER": "postgres",
                  "HOST": "127.0.0.1", "PORT": str(hung_port)},
        extra_env={"OMNICARE_CHANNEL_PREFIX": "failfast"},
    )  # fmt: skip
    try:
        status, _, _, _ = _request(server.url + "/api/health")
        assert status == 200  # alive: the load balancer must not restart it, only stop routing to it
        status, headers, body, took = _request(server.url + "/fhir/R4/Patient?_count=1", token=token)
        assert status == 503, body
        assert took < 6.0, f"took {took:.1f} s"
        assert headers.get("retry-after") and body["resourceType"] == "OperationOutcome"
        status, headers, body, took = _request(server.url + "/api/health/ready")
        assert status == 503 and body["checks"]["database"] == "unavailable", body
        assert headers.get("retry-after") and took < 8.0
    finally:
        live_server_stop(server)


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_broker_down_gives_503_and_leaves_no_job_behind(
    user: Any, token_for: Callable[[Any], str], closed_port: int, settings: Any
) -> None:
    from omnicare.sync.models import PushJob, Snapshot

    token = token_for(user)
    server = live_server_start(
        database=dict(settings.DATABASES["default"]),
        extra_env={"OMNICARE_CHANNEL_PREFIX": "failfast", "CELERY_BROKER_URL": f"redis://127.0.0.1:{closed_port}/0",
                   "CELERY_TASK_ALWAYS_EAGER": "0"},
    )  # fmt: skip
    try:
        muts = [{"mutationId": "ff-1", "op": "put", "resourceType": "Patient", "id": "ff1", "baseVersion": None,
                 "resource": {"resourceType": "Patient", "id": "ff1"}}]  # fmt: skip
        status, headers, body, took = _request(
            server.url + "/api/sync/push/jobs",
            method="POST",
            token=token,
            body={"deviceId": "ff", "mutations": muts},
        )
        assert status == 503, body
        assert took < 6.0 and headers.get("retry-after")
        assert "nothing was applied" in body["issue"][0]["diagnostics"]
        status, _, body, took = _request(
            server.url + "/api/sync/snapshots", method="POST", token=token, body={"deviceId": "ff"}
        )
        assert status == 503 and took < 6.0, body
        assert not PushJob.objects.exists() and not Snapshot.objects.exists()  # no orphaned rows
        status, _, body, _ = _request(server.url + "/api/health/ready")
        assert (
            status == 503 and body["checks"]["broker"] == "unavailable" and body["checks"]["database"] == "ok"
        )
    finally:
        live_server_stop(server)


@pytest.mark.django_db(transaction=True)
def test_ready_when_everything_is_up(live_asgi: str) -> None:
    status, _, body, _ = _request(live_asgi + "/api/health/ready")
    assert status == 200, body
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert body["checks"]["broker"] == "ok"
