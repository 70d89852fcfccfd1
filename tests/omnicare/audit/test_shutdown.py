"""A real uvicorn process, stopped with SIGTERM, sequences and signs the audit events it stored (issue 10 item 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from omnicare.access.services import token_create
from omnicare.audit import services
from omnicare.audit.models import AuditEvent, Checkpoint
from tests.conftest import requires_postgres
from tests.live import REPO_ROOT, child_env, database_url_from_settings, free_port

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


def test_a_server_stopped_gracefully_leaves_no_unprotected_tail(make_user: Callable[..., Any], tmp_path: Path) -> None:
    user = make_user("dr.live", "physician")
    token = token_create(user=user, name="t")
    log = tmp_path / "published.jsonl"
    env = child_env(database_url=database_url_from_settings(dict(settings.DATABASES["default"])), extra={
        "OMNICARE_AUDIT_SEQUENCE_INLINE": "0", "REDIS_URL": "", "OMNICARE_AUDIT_CHECKPOINT_LOG": str(log),
        "OMNICARE_MASTER_KEY": os.environ["OMNICARE_MASTER_KEY"]})
    port = free_port()
    out = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv; the README's command (lifespan left at its default)
        [sys.executable, "-m", "uvicorn", "omnicare.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/fhir/R4/Patient?_count=1"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        for _ in range(120):
            try:
                with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (127.0.0.1)
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        else:
            pytest.fail("server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
        waiting = AuditEvent.objects.filter(seq__isnull=True, username="dr.live").count()
        assert waiting >= 1 and not Checkpoint.objects.exists()  # no worker, no beat: nothing sequenced yet
    finally:
        proc.terminate()  # SIGTERM: uvicorn's graceful shutdown
        proc.wait(timeout=60)
        out.close()
    assert not AuditEvent.objects.filter(seq__isnull=True).exists(), (tmp_path / "server.log").read_text()[-3000:]
    last = Checkpoint.objects.order_by("-tree_size").first()
    assert last is not None and last.tree_size == AuditEvent.objects.count()
    assert json.loads(log.read_text().splitlines()[-1])["treeSize"] == last.tree_size
    settings.OMNICARE_AUDIT_CHECKPOINT_LOG = str(log)
    report = services.audit_verify()
    assert report.ok and report.tail == 0, report.problems
