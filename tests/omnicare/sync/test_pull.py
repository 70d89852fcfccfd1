"""Pull: scoped change feed, paging, tombstones, signed cursors, patients entering and leaving scope."""

from __future__ import annotations

from typing import Any

from omnicare.fhir.services import resource_delete, resource_update, resources_import
from tests.omnicare.sync.conftest import SyncClient, care_team, observation, seed


def keys(changes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["resourceType"], c["id"]) for c in changes}


def test_first_pull_delivers_only_my_patients_and_my_practitioner(clinic: Any, sync: SyncClient) -> None:
    changes, drops, _ = sync.pull_all()
    assert keys(changes) == {
        ("Patient", "p1"),
        ("Observation", "o1"),
        ("CareTeam", "ct-p1"),
        ("Practitioner", "pr-dr-test"),
    }
    assert drops == []


def test_incremental_pull_returns_new_versions_and_tombstones_in_order(clinic: Any, sync: SyncClient) -> None:
    _, _, cursor = sync.pull_all()
    resources_import(resources=[observation("o1", "p1", 71.0), observation("o2", "p2", 99.0)])
    resource_delete(user=clinic["user"], resource_type="Observation", resource_id="o1")
    changes, _, cursor2 = sync.pull_all(cursor)
    assert [(c["id"], c["versionId"], c["deleted"]) for c in changes] == [("o1", 2, False), ("o1", 3, True)]
    assert changes[0]["resource"]["valueQuantity"]["value"] == 71.0
    assert changes[1]["resource"] is None
    assert changes[0]["seq"] < changes[1]["seq"]
    again, _, _ = sync.pull_all(cursor2)
    assert again == []


def test_paging_with_small_limit_sees_everything_once(clinic: Any, sync: SyncClient) -> None:
    _, _, cursor = sync.pull_all()
    seed(*[observation(f"x{i}", "p1", float(i)) for i in range(25)])
    seen: list[str] = []
    pages = 0
    while True:
        page = sync.pull(cursor, limit=7)
        pages += 1
        seen += [c["id"] for c in page["changes"]]
        cursor = page["cursor"]
        if not page["hasMore"]:
            break
    assert sorted(seen) == sorted(f"x{i}" for i in range(25)) and len(seen) == 25
    assert pages >= 4


def test_a_cursor_never_issued_is_a_400(clinic: Any, sync: SyncClient) -> None:
    r = sync.post("/pull", {"cursor": "eyJzIjo5OTk5OX0:forged:sig", "limit": 10})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    _, _, cursor = sync.pull_all()
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    assert sync.post("/pull", {"cursor": tampered, "limit": 10}).status_code == 400
    assert sync.client.get("/api/sync/pull", {"cursor": "nope"}).status_code == 400


def test_another_users_cursor_is_refused(clinic: Any, sync: SyncClient, other_sync: SyncClient) -> None:
    _, _, mine = sync.pull_all()
    r = other_sync.post("/pull", {"cursor": mine, "limit": 10})
    assert r.status_code == 400


def test_pull_requires_authentication(clinic: Any, anon: Any) -> None:
    r = anon.get("/api/sync/pull")
    assert r.status_code == 401


def test_bad_limit_is_a_400(clinic: Any, sync: SyncClient) -> None:
    assert sync.post("/pull", {"cursor": None, "limit": 0}).status_code == 400
    assert sync.post("/pull", {"cursor": None, "limit": 5000}).status_code == 400
    assert sync.post("/pull", "[1,2").status_code == 400


def test_patient_entering_scope_is_backfilled_even_with_old_seqs(clinic: Any, sync: SyncClient) -> None:
    user = clinic["user"]
    _, _, cursor = sync.pull_all()
    # p2's records were written long before this cursor; now dr.test joins p2's care team.
    resources_import(resources=[care_team("p2", [clinic["other"].username, user.username])])
    changes, drops, cursor = sync.pull_all(cursor)
    assert {("Patient", "p2"), ("Observation", "o2"), ("CareTeam", "ct-p2")} <= keys(changes)
    assert drops == []
    # From then on p2's changes come through the feed.
    resources_import(resources=[observation("o2", "p2", 50.0)])
    changes, _, cursor = sync.pull_all(cursor)
    assert [(c["id"], c["versionId"]) for c in changes] == [("o2", 2)]


def test_patient_leaving_scope_is_dropped(clinic: Any, sync: SyncClient) -> None:
    user = clinic["user"]
    _, _, cursor = sync.pull_all()
    resource_update(
        user=user,
        resource_type="CareTeam",
        resource_id="ct-p1",
        resource={**care_team("p1", []), "status": "inactive", "participant": []},
    )
    changes, drops, cursor = sync.pull_all(cursor)
    assert {("Patient", "p1"), ("Observation", "o1"), ("CareTeam", "ct-p1")} <= keys(drops)
    assert ("Practitioner", "pr-dr-test") not in keys(drops)
    # p1's later writes are no longer sent.
    resources_import(resources=[observation("o1", "p1", 1.0)])
    changes, _, _ = sync.pull_all(cursor)
    assert changes == []


def test_scope_change_during_a_paged_fill_restarts_towards_the_new_scope(
    clinic: Any, sync: SyncClient
) -> None:
    user = clinic["user"]
    seed(*[observation(f"b{i}", "p2", float(i)) for i in range(10)])
    _, _, cursor = sync.pull_all()
    resources_import(resources=[care_team("p2", [user.username])])
    page = sync.pull(cursor, limit=3)
    assert page["hasMore"]
    # Before the fill ends, dr.test leaves p1's team.
    resources_import(resources=[{**care_team("p1", []), "participant": []}])
    changes, drops, _ = sync.pull_all(page["cursor"], limit=3)
    got = keys(page["changes"]) | keys(changes)
    assert {("Observation", f"b{i}") for i in range(10)} <= got
    assert ("Observation", "o1") in keys(drops)


def test_get_pull_matches_post_pull(clinic: Any, sync: SyncClient) -> None:
    sync.register()
    r = sync.client.get("/api/sync/pull", {"limit": 50, "deviceId": sync.device_id})
    assert r.status_code == 200
    assert keys(r.json()["changes"]) == keys(sync.pull_all()[0])


def test_wire_bytes_are_the_shared_protocol_message(clinic: Any, sync: SyncClient) -> None:
    """The fast serialiser (stored JSON spliced in) says exactly what pyclient's message says."""
    from omnicare.sync import services
    from pyclient.protocol import PullResponse, loads

    user = clinic["user"]
    cursor = None
    resources_import(resources=[observation("o1", "p1", 71.5)])
    resource_delete(user=user, resource_type="Observation", resource_id="o1")
    for _ in range(6):
        raw = services.pull_json(user=user, cursor=cursor, limit=2)
        again = services.pull(user=user, cursor=cursor, limit=2)
        parsed = PullResponse.from_json(loads(raw))
        assert parsed.changes == again.changes and parsed.has_more == again.has_more
        assert parsed.drop == again.drop and parsed.reset == again.reset
        cursor = parsed.cursor


def test_the_role_limits_which_kinds_of_record_are_sent(clinic: Any, sync: SyncClient) -> None:
    """Scope says which patients; the role matrix (access_check) says which types. An administrator who
    happens to be on a care team gets no clinical records."""
    from omnicare.access.roles import ADMINISTRATOR, PHYSICIAN, role_assign, role_remove

    user = clinic["user"]
    role_remove(user=user, role=PHYSICIAN)
    role_assign(user=user, role=ADMINISTRATOR)
    changes, _, _ = sync.pull_all()
    assert keys(changes) == {("Practitioner", "pr-dr-test")}
