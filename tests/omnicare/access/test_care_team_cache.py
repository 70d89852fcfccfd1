"""The care team is reused across requests and pull pages (issue 16, item 6), never past a change.

On PostgreSQL ``care_team_patient_ids`` keeps each user's care team in the process and re-checks it with one
query (the newest and oldest CareTeam/Practitioner feed positions) instead of three and a parse of every team.
Nothing invalidates it by hand: whatever changes a team — a committed write (from any process: the check reads
the database), a write earlier in the same transaction, a team retired, the user's Practitioner renamed — must
be seen by the very next call. On SQLite the team is recomputed every time, with the same answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from omnicare.access import services as access
from omnicare.access.roles import PHYSICIAN, role_assign
from omnicare.fhir.services import resources_import
from tests.omnicare.sync.conftest import care_team, patient, practitioner, wait_settled

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, as between two requests
REAL_ACCESS = True


@pytest.fixture
def doctor() -> Any:
    user = get_user_model().objects.create_user(username="dr.cache")
    role_assign(user=user, role=PHYSICIAN)
    resources_import(resources=[practitioner("dr.cache"), patient("p1"), patient("p2"), patient("p3"),
                                care_team("p1", ["dr.cache"])])  # fmt: skip
    # An entry is stored only once the newest team's position is settled (a transaction elsewhere on the
    # cluster can hold that back for a moment): access.services._settled_epoch.
    wait_settled()
    return user


def _queries(user: Any) -> tuple[frozenset[str], int]:
    with CaptureQueriesContext(connection) as ctx:
        ids = access.care_team_patient_ids(user=user)
    return ids, len(ctx.captured_queries)


def test_a_repeat_call_costs_one_query_and_every_change_is_seen_at_once(doctor: Any) -> None:
    first, _ = _queries(doctor)
    assert first == {"p1"}
    again, n = _queries(doctor)
    assert again == {"p1"}
    assert n == (1 if connection.vendor == "postgresql" else 3)

    resources_import(resources=[care_team("p2", ["dr.cache"])])  # committed, no cache cleared by anyone
    assert access.care_team_patient_ids(user=doctor) == {"p1", "p2"}

    retired = {**care_team("p1", ["dr.cache"]), "status": "inactive"}
    resources_import(resources=[retired])
    assert access.care_team_patient_ids(user=doctor) == {"p2"}

    renamed = {**practitioner("dr.cache"), "identifier": [{"system": "urn:omnicare:user", "value": "dr.other"}]}
    resources_import(resources=[renamed])  # the user's Practitioner no longer names them: no team is theirs
    assert access.care_team_patient_ids(user=doctor) == frozenset()


def test_a_write_earlier_in_the_same_transaction_is_seen_and_a_rollback_leaves_nothing_behind(doctor: Any) -> None:
    assert access.care_team_patient_ids(user=doctor) == {"p1"}
    with pytest.raises(RuntimeError), transaction.atomic():
        resources_import(resources=[care_team("p3", ["dr.cache"])])  # provisional, uncommitted position
        assert access.care_team_patient_ids(user=doctor) == {"p1", "p3"}
        raise RuntimeError("roll back")
    assert access.care_team_patient_ids(user=doctor) == {"p1"}  # the rolled-back team is not served


def test_each_user_has_a_team_of_their_own(doctor: Any) -> None:
    other = get_user_model().objects.create_user(username="dr.two")
    role_assign(user=other, role=PHYSICIAN)
    resources_import(resources=[practitioner("dr.two"), care_team("p3", ["dr.two"], team_id="ct-two")])
    assert access.care_team_patient_ids(user=doctor) == {"p1"}
    assert access.care_team_patient_ids(user=other) == {"p3"}
    assert access.care_team_patient_ids(user=doctor) == {"p1"}
