"""A server restored from a backup (issue 13 item 6, PROTOCOL.md "Server epochs"), for real.

A pyclient SyncMachine tablet syncs with the real server; the database is copied (SQLite: the online backup
API, a byte-for-byte copy of the database file; PostgreSQL: ``pg_dump -Fc`` / ``pg_restore --clean``); more
changes sync (the tablet's own and a colleague's, which the tablet pulls); the earlier copy is restored and
``manage.py new_epoch`` run, exactly as docs/RUNBOOK.md §6 says; the tablet syncs again — and the server ends
up with every change the tablet held, merged with what happened on the restored server since, conflicts
parked, the recovery audited.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from omnicare.access.roles import PHYSICIAN, role_assign
from omnicare.access.services import token_create
from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.sync.epoch import current_epoch, epoch_clear_cache
from omnicare.sync.models import Conflict
from pyclient.protocol import PullResponse, PushRequest, PushResponse, dumps, loads
from pyclient.store import MemoryStore
from pyclient.sync import Effect, EpochChanged, JsonCodec, SyncMachine, to_store_ops
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, seed
from tests.pyclient.netsim import step

JSON = "application/json"
CODEC = JsonCodec()
pytestmark = pytest.mark.django_db(transaction=True)


class Tablet:
    """A device as the browser runner drives it: push, hand over held records on an epoch change, pull."""

    def __init__(self, user: Any, device_id: str) -> None:
        self.http = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name=device_id)}")
        self.m = SyncMachine(device_id=device_id)
        self.store = MemoryStore()
        self.notices: list[Effect] = []
        self.sent: list[PushRequest] = []
        self.ids = 0
        r = self.http.post("/api/sync/devices", json.dumps({"deviceId": device_id}), content_type=JSON)
        assert r.status_code == 200, r.content

    def apply(self, effects: list[Effect]) -> None:
        step(self.store.apply(to_store_ops(effects, CODEC)))
        self.notices += effects

    def record(self, rtype: str, rid: str) -> dict[str, Any] | None:
        row = step(self.store.get_record(rtype, rid))
        return None if row is None else CODEC.open(row.blob)

    def edit(self, resource: dict[str, Any]) -> None:
        rtype, rid = resource["resourceType"], resource["id"]
        row = step(self.store.get_record(rtype, rid))
        self.ids += 1
        self.apply(self.m.record_local_edit(
            now=1.0, mutation_id=f"{self.m.device_id}-m{self.ids}", resource_type=rtype, id=rid, resource=resource,
            base_version=None if row is None else row.version, base_resource=None if row is None else CODEC.open(row.blob),
        ))

    def push(self) -> None:
        while (req := self.m.next_push(1e9)) is not None:
            r = self.http.post("/api/sync/push", dumps(req), content_type=JSON)
            assert r.status_code == 200, r.content
            self.sent.append(req)
            self.apply(self.m.on_push_response(1.0, req, PushResponse.from_json(loads(r.content))))

    def pull(self) -> None:
        for _ in range(50):
            if self.m.recovery == "collect":
                held = [(r.resource_type, r.id, r.version, CODEC.open(r.blob))
                        for t in ("Patient", "Observation", "CareTeam", "Practitioner")
                        for r in step(self.store.list_records(t))]
                self.apply(self.m.recover_held(held))
            req = self.m.next_pull()
            r = self.http.post(f"/api/sync/pull?deviceId={self.m.device_id}", dumps(req), content_type=JSON)
            assert r.status_code == 200, r.content
            self.apply(self.m.on_pull_response(1.0, req, PullResponse.from_json(loads(r.content))))
            if self.m.caught_up and self.m.recovery is None:
                return
        raise AssertionError("the pull never caught up")

    def sync(self) -> None:
        self.push()
        self.pull()
        self.push()


# --- copying and restoring the database, as an operator would -------------------------------------------


class Backup:
    def take(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError


class SqliteBackup(Backup):
    """The SQLite online backup API: the same bytes as copying the database file while nothing writes."""

    def take(self) -> None:
        connection.ensure_connection()
        self.copy = sqlite3.connect(":memory:")
        connection.connection.backup(self.copy)

    def restore(self) -> None:
        connection.ensure_connection()
        self.copy.backup(connection.connection)


class PgBackup(Backup):
    """``pg_dump -Fc`` now, ``pg_restore --clean --if-exists --single-transaction`` later (RUNBOOK.md §6)."""

    def __init__(self) -> None:
        s = connection.settings_dict
        self.env = {**os.environ, "PGHOST": s["HOST"] or "127.0.0.1", "PGPORT": str(s["PORT"] or 5432),
                    "PGUSER": s["USER"] or "postgres", "PGPASSWORD": s["PASSWORD"] or ""}
        self.db = s["NAME"]
        self.path = os.path.join(tempfile.mkdtemp(), "omnicare.dump")

    def take(self) -> None:
        subprocess.run(["pg_dump", "-Fc", "-f", self.path, self.db], env=self.env, check=True)  # noqa: S603,S607

    def restore(self) -> None:
        connection.close()
        subprocess.run(  # noqa: S603,S607
            ["pg_restore", "--clean", "--if-exists", "--single-transaction", "-d", self.db, self.path],
            env=self.env, check=True, capture_output=True,
        )


@pytest.fixture
def backup() -> Iterator[Backup]:
    epoch_clear_cache()
    yield PgBackup() if connection.vendor == "postgresql" else SqliteBackup()
    epoch_clear_cache()


@pytest.fixture
def ward(django_user_model: Any) -> dict[str, Any]:
    """dr.a and dr.b both care for p1 (one chart, two clinicians)."""
    a = django_user_model.objects.create_user(username="dr.a", password="x")
    b = django_user_model.objects.create_user(username="dr.b", password="x")
    for u in (a, b):
        role_assign(user=u, role=PHYSICIAN)
    seed(practitioner("dr.a"), practitioner("dr.b"), patient("p1", "One"), care_team("p1", ["dr.a", "dr.b"]),
         observation("o1", "p1", 70.0))
    return {"a": a, "b": b}


def server_body(rtype: str, rid: str) -> dict[str, Any] | None:
    row = Resource.objects.filter(resource_type=rtype, resource_id=rid, deleted=False).first()
    return None if row is None else row.body


def restore_and_new_epoch(backup: Backup) -> tuple[str, str]:
    before = current_epoch()
    backup.restore()
    epoch_clear_cache()
    assert current_epoch() == before  # a logical restore: PostgreSQL's timeline does not move by itself
    call_command("new_epoch", reason="test restore")
    after = current_epoch()
    assert after != before
    return before, after


def test_after_a_restore_the_server_gets_back_every_change_the_tablet_held(ward: Any, backup: Backup) -> None:
    tab = Tablet(ward["a"], "tab-a")
    colleague = Tablet(ward["b"], "tab-b")
    tab.sync()
    colleague.sync()
    assert tab.record("Observation", "o1") is not None
    backup.take()

    # After the backup: the tablet's own edit and new note, and a colleague's new observation it pulls.
    tab.edit({**observation("o1", "p1", 80.0)})
    tab.edit(observation("o3", "p1", 90.0))
    tab.sync()
    colleague.edit(observation("o4", "p1", 60.0))
    colleague.push()
    tab.sync()
    assert tab.record("Observation", "o4") is not None
    tab.edit(observation("o5", "p1", 50.0))  # queued, not yet sent: the server is about to be restored

    _old, new = restore_and_new_epoch(backup)
    assert server_body("Observation", "o3") is None and server_body("Observation", "o4") is None
    # Meanwhile, on the restored server, the colleague changes another field of o1 (their tablet also
    # recovers first: its epoch is stale too).
    colleague_sent = len(colleague.sent)
    colleague.sync()
    colleague.edit({**observation("o1", "p1", 70.0), "status": "amended"})
    colleague.push()
    assert server_body("Observation", "o1")["status"] == "amended"
    # The colleague's tablet re-sent what IT held that the restored server lacks: its own o4.
    assert [m.id for req in colleague.sent[colleague_sent:] for m in req.mutations if m.recover] == ["o4"]

    versions_before = ResourceVersion.objects.count()
    sent_before = len(tab.sent)
    tab.sync()
    assert any(isinstance(n, EpochChanged) and n.new == new for n in tab.notices)
    assert tab.m.entries == [] and tab.m.epoch == new
    o1 = server_body("Observation", "o1")
    assert o1 is not None
    assert o1["valueQuantity"]["value"] == 80.0 and o1["status"] == "amended"  # merged, both kept
    for rid, value in (("o3", 90.0), ("o4", 60.0), ("o5", 50.0)):
        body = server_body("Observation", rid)
        assert body is not None and body["valueQuantity"]["value"] == value, rid
    # Only what the server lacked was re-sent (p1, the care team, the practitioners and what the colleague
    # already recovered were not). The first push, in the old epoch, was refused whole.
    sent = [(m.id, m.recover) for req in tab.sent[sent_before:] for m in req.mutations]
    assert sent[0] == ("o5", False) and sorted(sent[1:]) == [("o1", True), ("o3", True), ("o5", True)], sent
    assert ResourceVersion.objects.count() == versions_before + 3
    # Audited as a recovery, on the push that carried it.
    ev = AuditEvent.objects.filter(action="sync-push", detail__recovery="server-epoch", device_id="tab-a").get()
    assert ev.detail["recovered"] == 3 and ev.device_id == "tab-a"
    assert AuditEvent.objects.filter(action="server-epoch-new").count() == 1
    # Idempotent by mutation id: replaying the recovery changes nothing.
    last = [req for req in tab.sent if any(m.recover for m in req.mutations)][-1]
    r = tab.http.post("/api/sync/push", dumps(last), content_type=JSON)
    assert r.status_code == 200 and ResourceVersion.objects.count() == versions_before + 3
    assert {x["status"] for x in r.json()["results"]} <= {"applied", "merged"}
    # The tablet and the server agree afterwards.
    tab.pull()
    assert tab.record("Observation", "o1")["status"] == "amended"


def test_a_recovered_change_that_clashes_with_a_newer_server_change_is_parked(ward: Any, backup: Backup) -> None:
    tab = Tablet(ward["a"], "tab-a")
    colleague = Tablet(ward["b"], "tab-b")
    tab.sync()
    colleague.sync()
    backup.take()
    tab.edit(observation("o1", "p1", 80.0))
    tab.sync()
    restore_and_new_epoch(backup)
    colleague.pull()
    colleague.edit(observation("o1", "p1", 75.0))  # the same field, another value, after the restore
    colleague.push()

    tab.sync()
    assert server_body("Observation", "o1")["valueQuantity"]["value"] == 75.0  # never overwritten silently
    conflict = Conflict.objects.get(resource_id="o1", status=Conflict.OPEN)
    assert conflict.theirs is not None and conflict.theirs["valueQuantity"]["value"] == 80.0
    assert conflict.device_id == "tab-a"
    (view,) = tab.m.conflicts()  # and the clinician sees both sides
    assert view.local is not None and view.local["valueQuantity"]["value"] == 80.0


def test_a_push_in_a_stale_epoch_applies_nothing(ward: Any, backup: Backup) -> None:
    tab = Tablet(ward["a"], "tab-a")
    tab.sync()
    body = {"deviceId": "tab-a", "epoch": "not-this-server", "mutations": [
        {"mutationId": "x1", "op": "put", "resourceType": "Observation", "id": "o9", "baseVersion": None,
         "resource": observation("o9", "p1")}]}
    n = ResourceVersion.objects.count()
    r = tab.http.post("/api/sync/push", json.dumps(body), content_type=JSON)
    assert r.status_code == 200 and r.json() == {"results": [], "epoch": current_epoch()}
    assert ResourceVersion.objects.count() == n
    r = tab.http.post("/api/sync/push/jobs", json.dumps(body), content_type=JSON)
    assert r.status_code == 409 and ResourceVersion.objects.count() == n


def test_on_postgresql_the_epoch_follows_the_cluster_timeline(ward: Any, backup: Backup) -> None:
    """A point-in-time recovery promotes onto a new timeline: that alone changes the epoch (RUNBOOK.md §6)."""
    if connection.vendor != "postgresql":
        assert "-" not in current_epoch()  # SQLite: the stored id alone
        return
    with connection.cursor() as cur:
        cur.execute("SELECT system_identifier FROM pg_control_system()")
        sysid = cur.fetchone()[0]
        cur.execute("SELECT timeline_id FROM pg_control_checkpoint()")
        tli = cur.fetchone()[0]
    import hashlib

    stored, suffix = current_epoch().split("-")
    assert suffix == hashlib.sha256(f"{sysid}:{tli}".encode()).hexdigest()[:12] and len(stored) == 32
