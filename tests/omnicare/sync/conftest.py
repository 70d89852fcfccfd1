"""Sync test helpers: a tiny clinic (practitioners linked to users, patients with care teams) and a sync client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omnicare.fhir.services import resources_import


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def practitioner(username: str) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": f"pr-{username.replace('.', '-')}",
        "identifier": [{"system": "urn:omnicare:user", "value": username}],
        "name": [{"family": username}],
    }


def patient(pid: str, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"use": "official", "family": family}]}


def care_team(pid: str, usernames: list[str], team_id: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": team_id or f"ct-{pid}",
        "status": "active",
        "subject": {"reference": f"Patient/{pid}"},
        "participant": [
            {"member": {"reference": f"Practitioner/pr-{u.replace('.', '-')}"}} for u in usernames
        ],
    }


def observation(oid: str, pid: str, value: float = 70.0, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "kg"},
    }


def wait_settled() -> None:
    """Until every committed version is below the change feed's horizon (core.feed_horizon.feed_settled): a
    transaction anywhere on the PostgreSQL cluster, another test database's included, can hold it back for a
    moment, and until then a pull answers "nothing more yet". Tests that drain the feed wait for this first."""
    import time

    from omnicare.fhir.models import ResourceVersion
    from omnicare.fhir.services import feed_head

    last = max(ResourceVersion.objects.values_list("seq", flat=True), default=0)
    deadline = time.monotonic() + 60
    while feed_head() < last and time.monotonic() < deadline:
        time.sleep(0.01)


def seed(*resources: dict[str, Any]) -> None:
    resources_import(resources=list(resources))


class SyncClient:
    """The sync API through the Django test client (JSON in, JSON out)."""

    def __init__(self, client: Any, device_id: str | None = None) -> None:
        self.client = client
        self.device_id = device_id or f"dev-{uuid.uuid4().hex[:8]}"
        self.cursor: str | None = None

    def post(self, path: str, body: Any, **extra: Any) -> Any:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        if path.split("?")[0] == "/pull":  # pulls need a registered device (issue 10, item 14)
            if "deviceId=" not in path:
                path = path + ("&" if "?" in path else "?") + f"deviceId={self.device_id}"
            self.register(path.split("deviceId=")[1].split("&")[0])
        return self.client.post("/api/sync" + path, data, content_type="application/json", **extra)

    def register(self, device_id: str | None = None) -> None:
        """Register the device once (``POST /api/sync/devices``); pulls need a registered device."""
        done: set[str] = self.__dict__.setdefault("_registered", set())
        device = device_id or self.device_id
        if device not in done:
            r = self.client.post("/api/sync/devices", json.dumps({"deviceId": device}),
                                 content_type="application/json")
            if r.status_code == 200:
                done.add(device)

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get("/api/sync" + path, params)

    def pull(self, cursor: str | None = None, limit: int = 200) -> dict[str, Any]:
        r = self.post("/pull", {"cursor": cursor, "limit": limit})
        assert r.status_code == 200, r.content
        return r.json()

    def pull_all(
        self, cursor: str | None = None, limit: int = 200
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        """Pull until hasMore is false: (changes, drops, cursor)."""
        changes: list[dict[str, Any]] = []
        drops: list[dict[str, Any]] = []
        while True:
            page = self.pull(cursor, limit)
            changes += page["changes"]
            drops += page["drop"]
            cursor = page["cursor"]
            if not page["hasMore"]:
                return changes, drops, cursor

    def push(self, *mutations: dict[str, Any], expect: int = 200) -> list[dict[str, Any]]:
        r = self.post("/push", {"deviceId": self.device_id, "mutations": list(mutations)})
        assert r.status_code == expect, r.content
        return r.json()["results"] if expect == 200 else r.json()


def put(resource: dict[str, Any], base: int | None, mid: str | None = None) -> dict[str, Any]:
    return {
        "mutationId": mid or str(uuid.uuid4()),
        "op": "put",
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        "baseVersion": base,
        "resource": resource,
    }


def delete(rtype: str, rid: str, base: int, mid: str | None = None) -> dict[str, Any]:
    return {
        "mutationId": mid or str(uuid.uuid4()),
        "op": "delete",
        "resourceType": rtype,
        "id": rid,
        "baseVersion": base,
        "resource": None,
    }


@pytest.fixture
def clinic(db: Any, user: Any, other_user: Any) -> dict[str, Any]:
    """``user`` (dr.test) cares for p1; ``other_user`` (nurse.test) for p2. Both are physicians."""
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    role_assign(user=other_user, role=PHYSICIAN)
    seed(
        practitioner(user.username),
        practitioner(other_user.username),
        patient("p1", "One"),
        patient("p2", "Two"),
        care_team("p1", [user.username]),
        care_team("p2", [other_user.username]),
        observation("o1", "p1"),
        observation("o2", "p2"),
    )
    return {"user": user, "other": other_user}


@pytest.fixture
def sync(api: Any) -> SyncClient:
    return SyncClient(api)


@pytest.fixture
def other_sync(other_user: Any, token_for: Any) -> SyncClient:
    from django.test import Client

    return SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(other_user)}"))


@pytest.fixture
def eager_celery() -> Any:
    """Run Celery tasks inline in this test even when REDIS_URL configures a real broker."""
    from omnicare.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


class Workers:
    """Real Celery workers (solo pool) on the real Redis broker, all consuming one queue of their own."""

    def __init__(self, queue: str, env: dict[str, str]) -> None:
        self.queue, self._env = queue, env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        from tests.live import REPO_ROOT

        argv = [sys.executable, "-m", "celery", "-A", "omnicare", "worker", "--pool=solo", "-Q", self.queue,
                "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
        proc = subprocess.Popen(  # noqa: S603 (fixed argv)
            argv, cwd=REPO_ROOT, env={**self._env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if out and out.strip():
                print(out.decode(errors="replace")[-3000:])


@pytest.fixture
def celery_workers(transactional_db: Any, settings: Any) -> Iterator[Workers]:
    """Start real workers with ``celery_workers.start()``; tasks sent from the test are not eager meanwhile,
    and the sync jobs' queue setting names the workers' queue (here and in the workers)."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL=redis://...")
    from omnicare.celery import app
    from tests.live import child_env, database_url_from_settings

    queue = f"sync-test-{uuid.uuid4().hex[:10]}"
    settings.OMNICARE_JOBS_QUEUE = queue
    env = child_env(database_url=database_url_from_settings(dict(settings.DATABASES["default"])))
    env.update({"CELERY_TASK_ALWAYS_EAGER": "0", "OMNICARE_JOBS_QUEUE": queue})
    workers = Workers(queue, env)
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield workers
    finally:
        app.conf.task_always_eager = eager
        workers.stop()


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
