"""A FHIR read is three to five round trips (issue 16), and none of the checks it folded together went stale.

The bearer token, the user's roles and their active break-the-glass grants come from ONE query; the read is
not wrapped in BEGIN/COMMIT (its audit event is one autocommitted INSERT after the body, before any data
leaves). What must still hold: a role removed, a grant started or ended between two requests is seen by the
very next request, and a read whose audit row cannot be stored answers 503 with no data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from omnicare.access import services as access
from omnicare.access.roles import PHYSICIAN, role_remove
from omnicare.audit.models import AuditEvent

from .conftest import BASE

REAL_ACCESS = True
pytestmark = pytest.mark.django_db(transaction=True)  # real commits between requests, as in production


def _last_read() -> AuditEvent:
    return AuditEvent.objects.filter(action="read").order_by("-id").first()  # type: ignore[return-value]


def test_a_read_is_a_handful_of_round_trips_and_is_audited(api: Client, ward: None) -> None:
    api.get(f"{BASE}/Patient/pat-a")  # warm: the care-team cache and the pool
    with CaptureQueriesContext(connection) as ctx:
        r = api.get(f"{BASE}/Patient/pat-a")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "Alpha"
    kinds = [q["sql"].split()[0].upper() for q in ctx.captured_queries]
    if connection.vendor == "postgresql":  # SQLite recomputes the care team (2 more SELECTs), see test_care_team_cache
        # token+roles+grants, the resource, the care team's and the ward/schedule scope's freshness checks,
        # the audit row
        assert kinds == ["SELECT", "SELECT", "SELECT", "SELECT", "INSERT"], kinds
    own = kinds[: kinds.index("INSERT") + 1]  # what follows is the embedded default's inline audit sequencer
    assert not {"BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT", "COMMIT"} & set(own), own
    event = _last_read()
    assert (event.outcome, event.resource_type, event.resource_id, event.patient_ids) == (
        "success", "Patient", "pat-a", ["pat-a"])


def test_a_removed_role_is_refused_on_the_very_next_request(api: Client, user: Any, ward: None) -> None:
    assert api.get(f"{BASE}/Patient/pat-a").status_code == 200
    role_remove(user=user, role=PHYSICIAN)  # another request (the admin) removes the role
    assert api.get(f"{BASE}/Patient/pat-a").status_code == 403


def test_a_grant_counts_from_the_next_request_and_stops_when_it_ends(api: Client, user: Any, ward: None) -> None:
    assert api.get(f"{BASE}/Patient/pat-b").status_code == 403
    grant = access.break_glass_request(user=user, patient_id="pat-b", reason="unconscious in the ED, no history")
    r = api.get(f"{BASE}/Patient/pat-b")
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "Beta"
    assert _last_read().purpose == "ETREAT"  # recorded as emergency access, not routine care
    access.break_glass_end(user=user, grant_id=grant.pk)
    assert api.get(f"{BASE}/Patient/pat-b").status_code == 403


def test_a_read_whose_audit_row_cannot_be_stored_returns_no_data(api: Client, ward: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError("disk full")

    from omnicare.audit import services as audit_services

    monkeypatch.setattr(audit_services, "_event_insert", broken)  # the one-event INSERT (every REST request)
    monkeypatch.setattr(AuditEvent, "save", broken)
    monkeypatch.setattr(type(AuditEvent.objects), "bulk_create", broken)  # and the many-event one
    r = api.get(f"{BASE}/Patient/pat-a")
    assert r.status_code == 503
    assert "Alpha" not in r.content.decode() and json.loads(r.content)["resourceType"] == "OperationOutcome"
    r = api.get(f"{BASE}/Patient?name=Alpha")
    assert r.status_code == 503 and "Alpha" not in r.content.decode()
