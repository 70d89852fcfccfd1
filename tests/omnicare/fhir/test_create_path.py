"""A REST create is a bounded number of round trips, and no writer waits on a shared feed row (issue 16).

On PostgreSQL the index and compartment rows of a write go in ONE statement, the feed position and its stamp
in ONE message right before COMMIT (``fhir.services._feed_stamp``), and nothing touches ``fhir_feedcounter``
(the row every writer used to queue on). The created version is in the feed once committed.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.services import feed_since
from tests.conftest import requires_postgres
from tests.omnicare.sync.conftest import wait_settled

from .conftest import BASE

REAL_ACCESS = True
pytestmark = pytest.mark.django_db(transaction=True)  # real commits: the position is taken at COMMIT

PATIENT = {"resourceType": "Patient", "name": [{"family": "Round", "given": ["Trip"]}], "gender": "female",
           "birthDate": "1990-01-01"}  # fmt: skip


@requires_postgres
@pytest.mark.postgres
def test_a_rest_create_is_fourteen_round_trips_and_locks_no_shared_row(api: Client, ward: None) -> None:
    api.post(f"{BASE}/Patient", data=PATIENT, content_type="application/fhir+json")  # warm: caches, pool
    with CaptureQueriesContext(connection) as ctx:
        r = api.post(f"{BASE}/Patient", data=PATIENT, content_type="application/fhir+json")
    assert r.status_code == 201, r.content
    sql = [q["sql"] for q in ctx.captured_queries]
    # Was 19 (five index INSERTs, a counter upsert and an UPDATE of the positions before COMMIT).
    assert len(sql) <= 14, sql
    assert not [s for s in sql if "fhir_feedcounter" in s]
    index_statements = [s for s in sql if "fhir_searchtoken" in s and s.lstrip().upper().startswith(("INSERT", "WITH"))]
    assert len(index_statements) == 1 and "fhir_resourcepatient" in index_statements[0]
    wait_settled()
    created = ResourceVersion.objects.get(resource_type="Patient", resource_id=r.json()["id"])
    assert created.seq > 0
    assert created.seq in [v.seq for v in feed_since(after_seq=created.seq - 1, limit=5)]
