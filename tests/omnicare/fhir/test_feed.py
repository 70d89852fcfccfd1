"""The change feed (seq), the service layer the sync engine and seeder call, compartments."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from django.db import connection

from omnicare.core.errors import PreconditionFailed, Unprocessable
from omnicare.fhir import services as svc
from omnicare.fhir.models import ResourcePatient, ResourceVersion
from omnicare.fhir.repository import FhirStore
from tests.conftest import requires_postgres

from .conftest import Fhir, patient, row_counts

pytestmark = pytest.mark.django_db


def seqs() -> list[int]:
    return list(ResourceVersion.objects.order_by("seq").values_list("seq", flat=True))


def test_every_write_gets_exactly_one_new_seq_failures_none(fhir: Fhir) -> None:
    pid = fhir.create(patient())["id"]
    assert len(seqs()) == 1
    fhir.put(f"/Patient/{pid}", patient(family="B", id=pid))
    fhir.delete(f"/Patient/{pid}")
    fhir.delete(f"/Patient/{pid}")  # no-op: already deleted
    fhir.post("/Patient", {"resourceType": "Patient", "gender": 5})  # rejected
    fhir.put(f"/Patient/{pid}", patient(id=pid), HTTP_IF_MATCH='W/"1"')  # stale
    s = seqs()
    assert len(s) == 3 and s == list(range(s[0], s[0] + 3))
    versions = list(ResourceVersion.objects.order_by("seq").values_list("version_id", "deleted"))
    assert versions == [(1, False), (2, False), (3, True)]


def test_feed_since_returns_changes_in_order_and_respects_limit(user: Any) -> None:
    made = [svc.resource_create(user=user, resource=patient(family=f"F{i}")) for i in range(5)]
    first = made[0].version
    assert first is not None
    start = first.seq - 1
    page = svc.feed_since(after_seq=start, limit=3)
    assert [v.body["name"][0]["family"] for v in page] == ["F0", "F1", "F2"]
    rest = svc.feed_since(after_seq=page[-1].seq, limit=100)
    assert [v.body["name"][0]["family"] for v in rest] == ["F3", "F4"]
    assert svc.feed_since(after_seq=rest[-1].seq, limit=100) == []
    assert svc.feed_head() == rest[-1].seq


def test_resources_import_is_one_transaction_with_consecutive_seqs(db: Any) -> None:
    docs = [patient(family=f"I{i}") for i in range(50)] + [patient(id="fixed-id")]
    versions = svc.resources_import(resources=docs)
    assert len(versions) == 51
    assert [v.seq for v in versions] == list(range(versions[0].seq, versions[0].seq + 51))
    assert versions[-1].resource_id == "fixed-id"
    assert all(v.version_id == 1 for v in versions)
    # Re-importing an existing id overwrites it as a new version.
    again = svc.resources_import(resources=[patient(family="Again", id="fixed-id")])
    assert again[0].version_id == 2


def test_resources_import_rejects_invalid_and_writes_nothing(db: Any) -> None:
    before = row_counts()
    with pytest.raises(Unprocessable):
        svc.resources_import(resources=[patient(), {"resourceType": "Observation", "status": "final"}])
    assert row_counts() == before


def test_resources_apply_checks_every_base_version_atomically(user: Any) -> None:
    a = svc.resource_update(user=user, resource_type="Patient", resource_id="a", resource=patient(id="a"))
    assert a.created and a.status == 201
    svc.resource_update(
        user=user, resource_type="Patient", resource_id="a", resource=patient(family="A2", id="a")
    )
    before = row_counts()
    writes = [
        svc.Write("Patient", "new-one", patient(id="new-one"), expected_version=0),
        svc.Write("Patient", "a", patient(family="A3", id="a"), expected_version=1),  # stale: current is 2
    ]
    with pytest.raises(PreconditionFailed):
        FhirStore(user=user).apply(writes)
    assert row_counts() == before
    ok = FhirStore(user=user).apply([
            svc.Write("Patient", "new-one", patient(id="new-one"), expected_version=0),
            svc.Write("Patient", "a", patient(family="A3", id="a"), expected_version=2),
        ])
    assert [(r.status, r.version.version_id if r.version else None) for r in ok] == [(201, 1), (200, 3)]
    assert ok[1].version is not None and ok[1].version.seq == ok[0].version.seq + 1  # type: ignore[union-attr]


def test_compartment_membership(fhir: Fhir) -> None:
    ana = fhir.create(patient(family="Ana"))["id"]
    bob = fhir.create(patient(family="Bob"))["id"]
    obs = fhir.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{ana}"},
        }
    )["id"]
    team = fhir.create(
        {
            "resourceType": "CareTeam",
            "subject": {"reference": f"Patient/{ana}"},
            "participant": [
                {"member": {"reference": f"Patient/{bob}"}},
                {"member": {"reference": "Practitioner/p"}},
            ],
        }
    )["id"]
    doc = fhir.create({"resourceType": "Practitioner", "name": [{"family": "Doc"}]})["id"]

    def members(rtype: str, rid: str) -> set[str]:
        return set(
            ResourcePatient.objects.filter(
                resource__resource_type=rtype, resource__resource_id=rid
            ).values_list("patient_id", flat=True)
        )

    assert members("Patient", ana) == {ana}
    assert members("Observation", obs) == {ana}
    assert members("CareTeam", team) == {ana, bob}
    assert members("Practitioner", doc) == set()
    # Moving an observation to another patient moves its membership; the version remembers both states.
    fhir.put(
        f"/Observation/{obs}",
        {
            "resourceType": "Observation",
            "id": obs,
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{bob}"},
        },
    )
    assert members("Observation", obs) == {bob}
    hist = list(
        ResourceVersion.objects.filter(resource_id=obs)
        .order_by("version_id")
        .values_list("patient_ids", flat=True)
    )
    assert hist == [[ana], [bob]]
    # A deletion keeps the last membership so the tombstone can be routed to devices holding it.
    fhir.delete(f"/Observation/{obs}")
    assert members("Observation", obs) == {bob}
    assert ResourceVersion.objects.get(resource_id=obs, version_id=3).patient_ids == [bob]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_let_a_cursor_reader_skip(
    user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers commit in random order while a reader pulls by cursor: the reader must see every change.

    A sleep between taking the positions and committing widens the race a plain sequence would lose (on
    PostgreSQL positions come from a sequence: only the snapshot horizon keeps the reader from skipping).
    """
    real_stamp = svc._feed_stamp

    def slow_stamp(alive: list[int]) -> list[int]:
        got = real_stamp(alive)
        time.sleep(random.uniform(0, 0.004))
        return got

    monkeypatch.setattr(svc, "_feed_stamp", slow_stamp)
    writers, per_writer = 6, 25
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                svc.resource_create(user=user, resource=patient(family=f"W{n}-{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def read() -> None:
        cursor = 0
        try:
            while True:
                finished = done.is_set()
                page = svc.feed_since(after_seq=cursor, limit=1000)
                seen.extend(v.seq for v in page)
                if page:
                    cursor = page[-1].seq
                elif finished and cursor >= max(seqs()):
                    # An empty page only says nothing is settled past the cursor yet (a transaction anywhere
                    # on the cluster may hold the horizon back): done once the last committed row was read.
                    return
                else:
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert not errors, errors
    all_seqs = seqs()
    assert len(all_seqs) == writers * per_writer
    assert seen == all_seqs  # in order, nothing skipped, nothing twice


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_put_as_create_of_one_id_never_duplicates_or_fails(user: Any) -> None:
    """Devices retrying the same client-generated id at once: one create, the rest are updates."""
    n = 6
    barrier = threading.Barrier(n)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            barrier.wait()
            r = svc.resource_update(
                user=user,
                resource_type="Patient",
                resource_id="same-id",
                resource=patient(family=f"D{i}", id="same-id"),
            )
            statuses.append(r.status)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(statuses) == [200] * (n - 1) + [201]
    versions = sorted(
        ResourceVersion.objects.filter(resource_id="same-id").values_list("version_id", flat=True)
    )
    assert versions == list(range(1, n + 1))
