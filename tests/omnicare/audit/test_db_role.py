"""PostgreSQL: the app runs as a role that does not own the audit tables; the bypasses of c8e5e71 all fail for it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from omnicare.audit import services
from omnicare.audit.models import AuditEvent
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]
ROLE = "audit_omnicare_app"  # roles are cluster-wide: named after this work, like its databases
REPO = Path(__file__).resolve().parents[3]

ATTACKS = [
    "DELETE FROM audit_auditevent",
    "UPDATE audit_auditevent SET patient_ids = '[]'",
    "UPDATE audit_auditevent SET seq = seq + 1000, hash = hash",
    "TRUNCATE audit_auditevent",
    "TRUNCATE audit_checkpoint",
    "DELETE FROM audit_checkpoint",
    "UPDATE audit_checkpoint SET tree_size = 1",
    "INSERT INTO audit_auditarchive SELECT * FROM audit_auditarchive",  # (empty: harmless) then:
    "DELETE FROM audit_chainhead",
    "UPDATE keys_keyversion SET public_key = NULL",
    "DELETE FROM keys_keyversion",
    "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
    "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_auditevent_append_only ON audit_auditevent",
    "SET session_replication_role = replica",
    "CREATE ROLE audit_escalate SUPERUSER",
]


def _dsn(role: str) -> dict[str, Any]:
    db = connection.settings_dict
    return {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": role, "dbname": db["NAME"]}


def test_the_app_role_cannot_rewrite_or_bypass_the_trail(make_user: Callable[..., Any], tmp_path: Path) -> None:
    import psycopg

    doctor = make_user("dr.role", "physician")
    for i in range(3):
        services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id=str(i))
    services.audit_checkpoint()
    call_command("audit_db_roles", "--role", ROLE)

    refused = []
    with psycopg.connect(**_dsn(ROLE), autocommit=True) as app:
        owner = app.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_auditevent'").fetchone()
        assert owner is not None and owner[0] != ROLE
        for sql in ATTACKS:
            if sql.startswith("INSERT INTO audit_auditarchive"):
                continue
            try:
                app.execute(sql)
            except psycopg.Error as exc:
                refused.append((sql, type(exc).__name__))
            else:
                pytest.fail(f"the app role could run: {sql}")
    assert len(refused) == len(ATTACKS) - 1
    assert AuditEvent.objects.count() == 3 and services.audit_verify().ok

    # ... while the application itself works as that role: requests store events, the sequencer chains them,
    # checkpoints are signed, verify passes.
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"DATABASE_URL": f"postgres://{ROLE}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
                "OMNICARE_TESTING": "1", "OMNICARE_DB_POOL": "0", "DJANGO_SETTINGS_MODULE": "omnicare.settings",
                "OMNICARE_MASTER_KEY": os.environ.get("OMNICARE_MASTER_KEY", ""),
                "OMNICARE_AUDIT_CHECKPOINT_LOG": str(tmp_path / "cp.jsonl")})
    env.pop("OMNICARE_TEST_DB_NAME", None)
    script = (
        "import django; django.setup()\n"
        "from django.contrib.auth import get_user_model\n"
        "from omnicare.audit import services\n"
        "u = get_user_model().objects.get(username='dr.role')\n"
        "services.audit_record(user=u, action='read', resource_type='Patient', resource_id='as-app')\n"
        "services.audit_checkpoint()\n"
        "r = services.audit_verify()\n"
        "print('events', r.events, 'problems', len(r.problems))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "events 4 problems 0" in out.stdout
