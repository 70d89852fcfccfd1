"""POST /api/ops/telemetry: registered, unrevoked devices only; strict schema; idempotent; history kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnicare.access.services import device_revoke
from omnicare.ops import services
from omnicare.ops.models import Counter, DeviceHealth, DeviceReport

from .conftest import client_for, post, report

pytestmark = pytest.mark.django_db


def _registered(user: Any, device: str = "tab-1") -> Any:
    c = client_for(user)
    assert post(c, "/api/sync/devices", {"deviceId": device}).status_code == 200
    return c


def test_report_is_stored_with_history_and_latest_state(clinician: Any) -> None:
    c = _registered(clinician)
    first = report(outbox={"pending": 3, "conflicted": 1, "rejected": 0, "oldestPendingAge": 7200.0},
                   failedUnlocks=2)
    r = post(c, "/api/ops/telemetry", first)
    assert r.status_code == 200 and r.json()["stored"] is True
    assert post(c, "/api/ops/telemetry", first).json()["stored"] is False  # re-sent: stored once
    assert post(c, "/api/ops/telemetry", report()).status_code == 200
    assert DeviceReport.objects.filter(device_id="tab-1").count() == 2
    h = DeviceHealth.objects.get(device_id="tab-1")
    assert h.reports == 2 and h.pending == 0 and h.oldest_pending_at is None and h.storage_used == 30 * 2**20
    unlocks = Counter.objects.filter(key="telemetry.failed_unlocks").values_list("value", flat=True)
    assert sum(unlocks) == 2  # the re-send did not count twice


@pytest.mark.parametrize("body", [
    report(patient="Jane Doe"),
    report(outbox={"pending": -1, "conflicted": 0, "rejected": 0, "oldestPendingAge": None}),
    report(offlineSeconds=900.0),
    report(reason="bored"),
    report(deviceId="has space"),
    report(kbVersions={"drugs": "v 1"}),
    [],
])
def test_malformed_report_is_a_400_operation_outcome_and_writes_nothing(clinician: Any, body: Any) -> None:
    c = _registered(clinician)
    r = post(c, "/api/ops/telemetry", body)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"
    assert not DeviceReport.objects.exists()


def test_unregistered_device_someone_elses_device_and_anonymous_are_refused(clinician: Any,
                                                                            administrator: Any) -> None:
    _registered(administrator, "admins-tab")
    c = _registered(clinician)
    assert post(c, "/api/ops/telemetry", report("never-registered")).status_code == 404
    assert post(c, "/api/ops/telemetry", report("admins-tab")).status_code == 404
    from django.test import Client

    assert post(Client(), "/api/ops/telemetry", report()).status_code == 401
    assert not DeviceReport.objects.exists()


def test_revoked_device_is_told_to_wipe(clinician: Any, administrator: Any) -> None:
    c = _registered(clinician)
    device_revoke(owner=clinician, device_id="tab-1", by=administrator, reason="lost on ward 3")
    r = post(c, "/api/ops/telemetry", report())
    assert r.status_code == 403 and r.headers["OmniCare-Device"] == "revoked; wipe"
    assert not DeviceReport.objects.exists()


def test_device_states_flag_silent_and_long_waiting_devices(clinician: Any, administrator: Any) -> None:
    # One session per tablet: a session or token belongs to one device (issue 10, item 14).
    tabs = {d: _registered(clinician, d) for d in ("tab-1", "tab-2", "tab-3", "tab-4")}
    post(tabs["tab-1"], "/api/ops/telemetry", report("tab-1"))
    post(tabs["tab-2"], "/api/ops/telemetry", report("tab-2", outbox={"pending": 1, "conflicted": 0, "rejected": 0,
                                                                      "oldestPendingAge": 25 * 3600.0}))
    post(tabs["tab-3"], "/api/ops/telemetry", report("tab-3", outbox={"pending": 1, "conflicted": 0, "rejected": 0,
                                                                      "oldestPendingAge": 600.0}))
    device_revoke(owner=clinician, device_id="tab-4", by=administrator, reason="stolen")
    states = {d["device_id"]: d["state"] for d in services.device_states()}
    assert states == {"tab-1": "synced", "tab-2": "pending_over_24h", "tab-3": "pending_1h", "tab-4": "revoked"}
    later = {d["device_id"]: d["state"] for d in services.device_states(now=timezone.now() + timedelta(hours=1))}
    assert later["tab-1"] == "silent" and later["tab-4"] == "revoked"
    alerts = services.alerts_evaluate()
    assert [a.kind for a in alerts] == ["unsynced"] and "tab-2" in alerts[0].message


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=80), lambda c: st.lists(c, max_size=4) | st.dictionaries(
                         st.text(max_size=12), c, max_size=4), max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["deviceId", "reportId", "reason", "appVersion", "outbox", "lastSyncAge", "storage",
                              "failedUnlocks", "intervalSeconds", "offlineSeconds", "offlineReadySeconds",
                              "kbVersions", "unknown"]), value=_json)
def test_fuzzed_field_is_a_4xx_or_stored_never_a_500(clinician: Any, field: str, value: Any) -> None:
    c = client_for(clinician)
    post(c, "/api/sync/devices", {"deviceId": "tab-1"})
    body = report()
    body[field] = value
    r = post(c, "/api/ops/telemetry", body)
    assert r.status_code in (200, 400, 404), (field, value, r.status_code, r.content[:300])
    if r.status_code != 200:
        assert r.json()["resourceType"] == "OperationOutcome"
