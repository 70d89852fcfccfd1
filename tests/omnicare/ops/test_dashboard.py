"""The operations and security dashboard (admin view): who sees which panels, audited views, figures from rollups."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from omnicare.access.services import break_glass_request, device_revoke, login_attempt_record
from omnicare.audit.models import AuditEvent
from omnicare.audit.services import audit_sequence
from omnicare.fhir.services import resources_import
from omnicare.ops import services
from omnicare.ops.models import RequestMinute, Watermark

from .conftest import client_for, post, report

pytestmark = pytest.mark.django_db


def _figure(html: str, testid: str) -> str:
    m = re.search(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)
    assert m, f"{testid} not on the page"
    return m.group(1).strip()


def test_administrator_sees_operations_auditor_sees_security_others_nothing(
        administrator: Any, auditor: Any, clinician: Any, django_user_model: Any) -> None:
    index = client_for(administrator).get("/admin/")
    assert b'href="/admin/ops/dashboard/"' in index.content  # linked from the admin index
    ops = client_for(administrator).get("/admin/ops/dashboard/").content.decode()
    assert 'id="sync"' in ops and 'id="performance"' in ops and 'id="security"' not in ops
    sec = client_for(auditor).get("/admin/ops/dashboard/").content.decode()
    assert 'id="security"' in sec and 'id="sync"' not in sec and 'id="storage"' not in sec
    # A clinician is not staff: the admin sends them to its sign-in page; a role-less staff member gets 403.
    r = client_for(clinician).get("/admin/ops/dashboard/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    staff = django_user_model.objects.create_user(username="staff.only", is_staff=True)
    assert client_for(staff).get("/admin/ops/dashboard/").status_code == 403
    assert client_for(staff).get("/admin/ops/dashboard/panels/").status_code == 403
    assert Client().get("/admin/ops/dashboard/panels/").status_code == 302


def test_every_page_view_is_audited_and_refreshes_are_audited_throttled(administrator: Any, settings: Any) -> None:
    c = client_for(administrator)
    views = AuditEvent.objects.filter(action="dashboard-view")
    c.get("/admin/ops/dashboard/")
    c.get("/admin/ops/dashboard/")
    assert views.count() == 2
    ev = views.last()
    assert ev is not None and ev.username == "ops.admin" and ev.category == "security" and ev.patient_ids == []
    for _ in range(3):
        assert c.get("/admin/ops/dashboard/panels/").status_code == 200
    assert views.count() == 2  # within OMNICARE_OPS_AUDIT_REFRESH_SECONDS of the page view
    settings.OMNICARE_OPS_AUDIT_REFRESH_SECONDS = 0
    c.get("/admin/ops/dashboard/panels/")
    assert views.count() == 3
    last = views.last()
    assert last is not None and last.detail["view"] == "refresh"


def test_panels_show_the_scripted_figures(administrator: Any, auditor: Any, clinician: Any) -> None:
    # One session per tablet: a session or token belongs to one device (issue 10, item 14).
    tabs = {d: client_for(clinician) for d in ("tab-1", "tab-2", "tab-3")}
    for d, c in tabs.items():
        assert post(c, "/api/sync/devices", {"deviceId": d}).status_code == 200
    post(tabs["tab-1"], "/api/ops/telemetry", report("tab-1", failedUnlocks=1))
    post(tabs["tab-2"], "/api/ops/telemetry", report("tab-2", outbox={"pending": 4, "conflicted": 0, "rejected": 0,
                                                                      "oldestPendingAge": 30 * 3600.0}))
    device_revoke(owner=clinician, device_id="tab-3", by=administrator, reason="left in a taxi")
    # Break-the-glass needs a patient that exists (issue 10, item 19).
    resources_import(resources=[{"resourceType": "Patient", "id": "p-emergency-1", "name": [{"family": "Zed"}]}])
    break_glass_request(user=clinician, patient_id="p-emergency-1", reason="Unconscious patient, allergies unknown")
    login_attempt_record(username="dr.ops", ip="10.0.0.9", success=False)
    audit_sequence()  # the audit beat numbers the events; the ops rollup only reads sequenced ones
    services.verify_run()
    services.ops_refresh()  # the beat job (the page runs it itself only without a broker)
    ops = client_for(administrator).get("/admin/ops/dashboard/").content.decode()
    assert _figure(ops, "state-synced") == "1"
    assert _figure(ops, "state-pending_over_24h") == "1"
    assert _figure(ops, "state-revoked") == "1"
    assert "tab-2" in ops and "30.0 h" in ops  # oldest unsynced change per device
    assert _figure(ops, "offline-rate") == "100 %" and _figure(ops, "reports-24h") == "2"
    assert "has changes unsynced for 30 h" in ops  # the alert, linked to the device's detail page
    assert 'href="/admin/ops/devicehealth/?device_id=tab-2"' in ops
    sec = client_for(auditor).get("/admin/ops/dashboard/").content.decode()
    assert _figure(sec, "failed-signins") == "1"
    assert _figure(sec, "failed-unlocks") == "1"
    assert _figure(sec, "grants-active") == "1" and "Patient/p-emergency-1" in sec
    assert _figure(sec, "revocations") == "1" and "left in a taxi" in sec
    assert "Audit chain verified" in sec
    assert "Break-the-glass: dr.ops on record Patient/p-emergency-1" in sec
    assert "has changes unsynced" not in sec  # operations alerts are not the auditor's


def test_audit_rollup_reads_only_new_events(administrator: Any) -> None:
    for i in range(5):
        login_attempt_record(username=f"someone{i}", ip="10.0.0.1", success=False)
    # The rollup never sequences (a write to the trail): unsequenced events wait for the audit beat.
    assert services.audit_rollup_refresh() == 0
    assert AuditEvent.objects.filter(seq__isnull=True).count() == 5
    audit_sequence()
    assert services.audit_rollup_refresh() == 5
    assert services.audit_rollup_refresh() == 0  # nothing new: no rescan
    login_attempt_record(username="x", ip="10.0.0.1", success=False)
    audit_sequence()
    assert services.audit_rollup_refresh(limit=1) == 1
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert Watermark.objects.get(name="audit").position == head
    from datetime import timedelta

    from django.utils import timezone

    assert services.counter_sum(["audit.login.failure"], since=timezone.now() - timedelta(hours=1)) == {
        "audit.login.failure": 6.0}


def test_request_timing_rollup_counts_routes_by_pattern(administrator: Any, settings: Any) -> None:
    from omnicare.ops import metrics

    c = Client()
    for _ in range(7):
        assert c.get("/api/health").status_code == 200
    c.get("/fhir/R4/Patient/some-patient-id")  # 401: counted under the route pattern, not the path
    metrics.BUFFER.flush()
    rows = {(r.route, r.status): r.count for r in RequestMinute.objects.all()}
    assert rows[("api/health", 200)] == 7
    assert not any("some-patient-id" in route for route, _ in rows)
    stats = services.request_stats(now=__import__("django.utils.timezone").utils.timezone.now())
    health = next(r for r in stats["routes"] if r["route"] == "api/health")
    assert health["count"] == 7 and health["p50"] is not None and health["p50"] <= health["p99"]


def test_quantiles_from_histogram_buckets() -> None:
    # 10 requests <= 5 ms, 10 in (50, 100] ms.
    buckets = [10, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0]
    assert services.quantile(buckets, 0.5) == 5.0
    assert 50 < services.quantile(buckets, 0.95) <= 100  # type: ignore[operator]
    assert services.quantile([0] * 12, 0.5) is None
