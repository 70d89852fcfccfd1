"""/metrics: off without a token, refused without the right one, Prometheus text format parsed by prometheus_client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[3]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_are_off_without_a_token(settings: Any) -> None:
    settings.OMNICARE_METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404


def test_unauthorised_scrape_is_refused(settings: Any) -> None:
    settings.OMNICARE_METRICS_TOKEN = "s3cret-scrape-token"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-scrape-token").status_code == 401


def test_scrape_parses_and_carries_the_dashboard_counters(settings: Any, django_user_model: Any) -> None:
    from omnicare.access.services import login_attempt_record

    settings.OMNICARE_METRICS_TOKEN = "s3cret-scrape-token"
    for _ in range(3):
        Client().get("/api/health")
    login_attempt_record(username="nobody", ip="10.1.1.1", success=False)
    from omnicare.audit.services import audit_sequence
    from omnicare.ops.services import audit_rollup_refresh

    audit_sequence()  # the audit beat; the rollup reads only sequenced events
    audit_rollup_refresh()
    r = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/plain")
    s = _samples(r.content.decode())
    key = ("omnicare_http_requests_total", (("method", "GET"), ("route", "api/health"), ("status", "200")))
    assert s[key] >= 3
    assert s[("omnicare_signins_total", (("outcome", "failure"),))] == 1
    assert ("omnicare_devices", (("state", "revoked"),)) in s
    assert s[("omnicare_hl7_messages", (("direction", "in"), ("state", "dead")))] == 0  # HL7 queue gauges
    assert s[("omnicare_bulk_jobs_running", ())] == 0
    assert any(name == "omnicare_http_request_duration_seconds_bucket" for name, _ in s)


def test_multiprocess_mode_merges_what_each_worker_counted(tmp_path: Path) -> None:
    """Two separate processes (two uvicorn/Celery workers) count requests; a third scrapes the sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "omnicare.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'mp.sqlite3'}", "OMNICARE_TESTING": "1",
           "OMNICARE_METRICS_TOKEN": "mp-token", "OMNICARE_DEBUG": "1"}
    env.pop("OMNICARE_TEST_DB_NAME", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    worker = ("import django; django.setup(); from django.test import Client; c = Client(); "
              "[c.get('/api/health') for _ in range({n})]")
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", worker.format(n=n)], cwd=REPO, env=env, check=True)
    scrape = ("import django, json; django.setup(); from django.test import Client; "
              "r = Client().get('/metrics', HTTP_AUTHORIZATION='Bearer mp-token'); "
              "print(json.dumps(r.content.decode()))")
    out = subprocess.run([sys.executable, "-c", scrape], cwd=REPO, env=env, check=True, capture_output=True,
                         text=True).stdout
    s = _samples(json.loads(out.strip().splitlines()[-1]))
    key = ("omnicare_http_requests_total", (("method", "GET"), ("route", "api/health"), ("status", "200")))
    assert s[key] == 5
