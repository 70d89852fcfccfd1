"""Conflict resolution accuracy with later corrections, HL7/Bulk queue panel, retention, few-query snapshot."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.audit.services import audit_sequence
from omnicare.fhir.services import resources_import
from omnicare.ops import dashboard, services
from omnicare.ops.corrections import resolution_scan
from omnicare.ops.models import (
    Alert,
    Counter,
    DeviceHealth,
    DeviceReport,
    RequestMinute,
    ResolutionCheck,
    VerifyRun,
)
from omnicare.ops.retention import ops_retention_run
from tests.omnicare.sync.conftest import clinic, observation, put, sync  # noqa: F401 - fixtures

from .conftest import client_for

pytestmark = pytest.mark.django_db
BOTH = frozenset({services.OPS, services.SECURITY})


def _figure(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)
    assert m, f"{testid} not on the page"
    return m.group(1).strip()


def _merge(tablet: Any) -> None:
    """A clean automatic merge: the server added a note (v2), the tablet amended the status on v1 → v3."""
    server = observation("o1", "p1")
    server["note"] = [{"text": "checked"}]
    resources_import(resources=[server])
    mine = observation("o1", "p1")
    mine["status"] = "amended"
    [r] = tablet.push(put(mine, 1))
    assert r["status"] == "merged" and r["versionId"] == 3
    audit_sequence()  # the audit beat
    services.ops_refresh()  # the ops beat: folds the push, starts watching the merge


def test_a_merge_put_back_by_a_later_edit_counts_as_corrected(clinic: Any, sync: Any,  # noqa: F811
                                                              administrator: Any) -> None:
    _merge(sync)
    check = ResolutionCheck.objects.get(kind="merge")
    assert (check.resource_type, check.resource_id, check.version, check.corrected) == ("Observation", "o1", 3, None)
    html = client_for(administrator).get("/admin/ops/dashboard/").content.decode()
    assert _figure(html, "conflict-accuracy") == "100 %"  # nothing says otherwise yet
    assert _figure(html, "corrections-watching") == "1"
    # Someone puts the status the merge decided back to what it overrode, the next day.
    back = observation("o1", "p1")
    back["note"] = [{"text": "checked"}]
    resources_import(resources=[back])
    services.ops_refresh()
    check.refresh_from_db()
    assert check.corrected is True and check.corrected_version == 4
    html = client_for(administrator).get("/admin/ops/dashboard/").content.decode()
    assert _figure(html, "conflict-accuracy") == "0 %"  # resolved without a person, but then corrected
    assert _figure(html, "outcome-merges-later-corrected") == "1"


def test_a_merge_followed_only_by_other_edits_holds_when_the_window_closes(clinic: Any, sync: Any,  # noqa: F811
                                                                           settings: Any) -> None:
    _merge(sync)
    later = observation("o1", "p1", value=71.0)  # a new weight; the status stays amended
    later["status"], later["note"] = "amended", [{"text": "checked"}]
    resources_import(resources=[later])
    now = timezone.now()
    assert resolution_scan(now=now) == {"corrected": 0, "held": 0}  # window still open
    assert resolution_scan(now=now + timedelta(hours=settings.OMNICARE_OPS_CORRECTION_HOURS + 1)) == {
        "corrected": 0, "held": 1}
    data = dashboard.snapshot(audiences=BOTH, now=timezone.now())
    assert data["conflicts"]["accuracy"] == 100.0 and data["conflicts"]["corrections"]["merge_held"] == 1


def test_a_resolution_reverted_later_is_a_corrected_resolution(clinic: Any, sync: Any) -> None:  # noqa: F811
    from omnicare.sync.models import Conflict
    from omnicare.sync.services import conflict_resolve

    resources_import(resources=[observation("o1", "p1", value=80.0)])  # server v2
    [r] = sync.push(put(observation("o1", "p1", value=75.0), 1))  # the tablet edited the same value on v1
    assert r["status"] == "conflict"
    c = Conflict.objects.get(pk=r["conflictId"])
    conflict_resolve(user=clinic["user"], conflict_id=str(c.pk), resolution="keep-mine")
    services.ops_refresh()
    check = ResolutionCheck.objects.get(kind="resolve")
    assert check.ref == str(c.pk) and check.corrected is None
    resources_import(resources=[observation("o1", "p1", value=80.0)])  # the server's value comes back
    services.ops_refresh()
    check.refresh_from_db()
    assert check.corrected is True
    data = dashboard.snapshot(audiences=BOTH, now=timezone.now())
    assert data["conflicts"]["outcome"]["resolutions later corrected"] == 1
    assert data["conflicts"]["outcome"]["kept mine"] == 1


def test_hl7_and_bulk_queues_are_on_the_dashboard_and_dead_letters_alert(administrator: Any) -> None:
    from omnicare.bulk.models import BulkJob
    from omnicare.hl7.models import InboundMessage, OutboundMessage

    now = timezone.now()
    for i, state in enumerate(["received", "failed", "dead", "processed", "processed"]):
        InboundMessage.objects.create(sender="LAB", control_id=f"c{i}", message_type="ORU^R01", state=state,
                                      raw="MSH|...", received_at=now)
    for i, state in enumerate(["queued", "dead", "dead"]):
        OutboundMessage.objects.create(endpoint="pharm:2575", control_id=f"o{i}", message_type="RDE^O11",
                                       source=f"MedicationRequest/m{i}/_history/1", state=state, raw="MSH|...",
                                       created_at=now)
    for status in ("in-progress", "failed", "completed"):
        BulkJob.objects.create(kind="export", status=status, request_url="/fhir/R4/$export")
    services.alerts_evaluate()
    html = client_for(administrator).get("/admin/ops/dashboard/").content.decode()
    assert _figure(html, "hl7-in-waiting") == "2" and _figure(html, "hl7-in-dead") == "1"
    assert _figure(html, "hl7-in-done") == "2"
    assert _figure(html, "hl7-out-waiting") == "1" and _figure(html, "hl7-out-dead") == "2"
    assert _figure(html, "bulk-running") == "1" and _figure(html, "bulk-failed") == "1"
    assert _figure(html, "bulk-done") == "1"
    assert "2 HL7 outbound message(s) dead-lettered" in html
    assert 'href="/admin/hl7/outboundmessage/?state__exact=dead"' in html
    assert "MSH|" not in html  # message bodies are PHI: never on the dashboard


def test_retention_deletes_only_what_is_past_each_window(clinician: Any, settings: Any) -> None:
    now = timezone.now()
    old, recent = now - timedelta(days=500), now - timedelta(hours=1)
    for at in (old, recent):
        DeviceReport.objects.create(user=clinician, device_id="tab-1", report_id=str(at), received=at,
                                    reason="sync", app_version="a", pending=0, conflicted=0, rejected=0)
        RequestMinute.objects.create(minute=at, route="api/health", method="GET", status=200, count=1)
        Counter.objects.create(bucket=at, key="audit.events", value=1)
        VerifyRun.objects.create(started=at, finished=at, ok=True)
        Alert.objects.create(key=f"k{at}", kind="x", audience="ops", message="m", first_seen=at, last_seen=at,
                             cleared=at)
    Alert.objects.create(key="open", kind="x", audience="ops", message="m", first_seen=old, last_seen=old)
    DeviceHealth.objects.create(user=clinician, device_id="tab-1", first_report=old, last_report=old)
    settings.OMNICARE_OPS_RETAIN_VERIFY_DAYS = 0  # 0 = keep forever
    got = ops_retention_run(now=now, batch=1)  # batches of one: the loop must go on until done
    assert got["devicereport"] == got["requestminute"] == got["counter"] == 1
    assert got["alert"] == 1 and got["verifyrun"] == 0
    assert DeviceReport.objects.get().received == recent
    assert RequestMinute.objects.count() == 1
    # The old hour's count is carried into one all-time bucket: Prometheus totals never go down.
    assert services.counter_total("audit.events") == {"audit.events": 2.0}
    assert Counter.objects.filter(bucket__gte=now - timedelta(days=30)).count() == 1
    assert ops_retention_run(now=now)["counter"] == 0  # the carry bucket itself is never deleted
    assert services.counter_total("audit.events") == {"audit.events": 2.0}
    assert VerifyRun.objects.count() == 2
    assert set(Alert.objects.values_list("key", flat=True)) == {f"k{recent}", "open"}  # open alerts stay
    assert DeviceHealth.objects.count() == 1  # a device's latest state is never deleted
    from omnicare.ops.tasks import retention

    assert retention.apply().get()["devicereport"] == 0  # the beat task runs the same


def _devices(django_user_model: Any, n: int) -> None:
    from omnicare.sync.models import Device

    user = django_user_model.objects.get_or_create(username="fleet")[0]
    now = timezone.now()
    Device.objects.bulk_create([Device(user=user, device_id=f"t{i}") for i in range(n)], ignore_conflicts=True)
    DeviceHealth.objects.bulk_create([
        DeviceHealth(user=user, device_id=f"t{i}", first_report=now, last_report=now, pending=i % 3,
                     oldest_pending_at=now - timedelta(hours=i) if i % 3 else None, storage_used=i * 2**20,
                     storage_quota=2**30, storage_persisted=bool(i % 2), storage_idb=1000, records=10)
        for i in range(n)], ignore_conflicts=True)


def test_the_dashboard_costs_few_queries_whatever_the_fleet_and_agrees_with_the_panel_by_panel_figures(
        django_user_model: Any, django_assert_max_num_queries: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = timezone.now()
    _devices(django_user_model, 5)
    with CaptureQueriesContext(connection) as small:
        dashboard.compute(audiences=BOTH, now=now)
    _devices(django_user_model, 300)
    with django_assert_max_num_queries(len(small.captured_queries)):
        fast = dashboard.compute(audiences=BOTH, now=now)
    assert len(small.captured_queries) <= 25
    ref = services.dashboard_data_panels(audiences=BOTH, now=now)
    assert fast["sync"]["by_state"] == ref["sync"]["by_state"]
    assert [(o["device_id"], o["oldest_pending_age"]) for o in fast["sync"]["oldest"]] == [
        (o["device_id"], o["oldest_pending_age"]) for o in ref["sync"]["oldest"]]
    for k in ("distribution", "median_used", "max_quota_share", "persisted", "persisted_known",
              "device_efficiency"):
        assert fast["storage"][k] == ref["storage"][k], k
    assert fast["offline"] == ref["offline"]
    for k in ("failed_signins_24h", "locked_users", "locked_ips", "revocations_total", "wipes_told", "rejects"):
        assert fast["security"][k] == ref["security"][k], k


def test_snapshot_is_shared_per_refresh(settings: Any, administrator: Any,
                                        django_assert_num_queries: Any) -> None:
    settings.OMNICARE_OPS_SNAPSHOT_SECONDS = 60
    first = dashboard.snapshot(audiences=BOTH)
    with django_assert_num_queries(0):  # a second viewer within the interval: no query at all
        again = dashboard.snapshot(audiences=BOTH)
    assert again["now"] == first["now"]
    dashboard.snapshot_clear()
    assert dashboard.snapshot(audiences=BOTH)["now"] > first["now"]


def test_merge_watch_copies_only_ids(clinic: Any, sync: Any) -> None:  # noqa: F811
    _merge(sync)
    from omnicare.audit.models import AuditEvent

    ev = AuditEvent.objects.filter(action="sync-push").exclude(detail__merged=None).get()
    assert ev.detail["merged"] == ["Observation/o1/3"]
    row = ResolutionCheck.objects.values().get()
    assert "amended" not in str(row) and "checked" not in str(row)
