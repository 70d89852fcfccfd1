"""The trail against a database-level attacker (issue 10, audit items 1-3) and without a global lock (issue 16).

Each test is an attack that passed ``audit_verify`` (or a lock that serialised every read) on c8e5e71.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.utils import timezone

from omnicare.audit import services
from omnicare.audit.models import AuditEvent, Checkpoint
from omnicare.keys import services as keys
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[3]


def _kinds(report: services.VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


@pytest.fixture
def doctor(make_user: Callable[..., Any]) -> Any:
    return make_user("dr.quinn", "physician")


def _activity(user: Any, n: int, *, patients: tuple[str, ...] = ("p-a", "p-b", "p-c")) -> None:
    for i in range(n):
        services.audit_record(user=user, action="read", resource_type="Observation", resource_id=f"o{i}",
                              patient_ids=[patients[i % len(patients)]])
        if i % 5 == 4:
            services.audit_checkpoint()
    services.audit_checkpoint()


def _rewrite_without(patient: str, *, tamper: Callable[..., None]) -> None:
    """The issue's attacker: erase one patient's events, renumber, rechain, re-sign with a key of their own."""
    from omnicare.audit import merkle

    kept = [e for e in AuditEvent.objects.filter(seq__isnull=False).order_by("seq") if patient not in e.patient_ids]
    tamper("DELETE FROM audit_auditevent")
    tamper("DELETE FROM audit_checkpoint")
    attacker = Ed25519PrivateKey.generate()
    public = attacker.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tamper("UPDATE keys_keyversion SET public_key = %s WHERE purpose = 'audit-signing'", [public])
    prev, frontier = services.GENESIS, merkle.Frontier()
    for n, ev in enumerate(kept, 1):
        ev.seq, ev.prev_hash = n, prev
        ev.hash = services.event_hash(prev, services.event_fields(ev))
        tamper("INSERT INTO audit_auditevent (id, seq, category, action, outcome, purpose, user_id, username, roles, "
               "resource_type, resource_id, patient_ids, device_id, device_seq, device_time, received_at, detail, "
               "prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
               [ev.pk, n, ev.category, ev.action, ev.outcome, ev.purpose, ev.user_id, ev.username,
                json.dumps(ev.roles), ev.resource_type, ev.resource_id, json.dumps(ev.patient_ids), ev.device_id,
                ev.device_seq, ev.device_time, ev.received_at, json.dumps(ev.detail), ev.prev_hash, ev.hash])
        frontier.append(bytes.fromhex(ev.hash))
        prev = ev.hash
    key_id = keys.get_signing_key().key_id
    now = timezone.now()
    root = frontier.root().hex()
    sig = attacker.sign(services.checkpoint_message(tree_size=len(kept), merkle_root=root, head_hash=prev,
                                                    created_at=now))
    tamper("INSERT INTO audit_checkpoint (tree_size, merkle_root, head_hash, created_at, key_id, signature) "
           "VALUES (%s, %s, %s, %s, %s, %s)", [len(kept), root, prev, now, key_id, sig.hex()])
    tamper("UPDATE audit_chainhead SET seq = %s, hash = %s, frontier = %s",
           [len(kept), prev, json.dumps(frontier.to_json())])


def test_a_rewritten_trail_resigned_with_a_swapped_key_fails_verification(
    doctor: Any, tamper: Callable[..., None], checkpoint_log: Path
) -> None:
    _activity(doctor, 12)
    assert services.audit_verify().ok
    before = AuditEvent.objects.count()
    _rewrite_without("p-b", tamper=tamper)
    assert AuditEvent.objects.count() == before - 4
    # The tables are self-consistent again (this is what verified OK on c8e5e71, keyed by keys_keyversion) ...
    forged = Checkpoint.objects.get()
    message = services.checkpoint_message(tree_size=forged.tree_size, merkle_root=forged.merkle_root,
                                          head_hash=forged.head_hash, created_at=forged.created_at)
    assert keys.verify(key_id=forged.key_id, data=message, signature=bytes.fromhex(forged.signature))
    # ... but the verifier trusts only the key derived outside the database, and the published checkpoints.
    report = services.audit_verify()
    assert not report.ok
    assert {"signature", "missing"} <= _kinds(report), report.problems
    # Even without the external log, the pinned key alone refuses the forged checkpoint.
    checkpoint_log.unlink()
    assert "signature" in _kinds(services.audit_verify())


def test_the_pinned_key_from_settings_is_the_only_one_trusted(
    doctor: Any, settings: Any, tamper: Callable[..., None]
) -> None:
    _activity(doctor, 3)
    pin = keys.pubkey_pin_value()
    assert pin.startswith("audit-signing:v1=")
    settings.OMNICARE_AUDIT_PUBKEY = pin
    report = services.audit_verify()
    assert report.ok and report.key_source.startswith("pinned"), report.problems
    other = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw)
    settings.OMNICARE_AUDIT_PUBKEY = f"audit-signing:v1={base64.b64encode(other).decode()}"
    assert "signature" in _kinds(services.audit_verify())


def test_deleting_checkpoints_is_a_verification_failure(
    doctor: Any, tamper: Callable[..., None], checkpoint_log: Path
) -> None:
    _activity(doctor, 12)
    published = [json.loads(line) for line in checkpoint_log.read_text().splitlines()]
    assert len(published) == Checkpoint.objects.count() >= 3
    tamper("DELETE FROM audit_checkpoint")
    report = services.audit_verify()
    assert "missing" in _kinds(report), report.problems


def test_out_of_order_or_missing_published_checkpoints_fail(doctor: Any, checkpoint_log: Path) -> None:
    _activity(doctor, 12)
    lines = checkpoint_log.read_text().splitlines()
    checkpoint_log.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    assert "out-of-order" in _kinds(services.audit_verify())
    checkpoint_log.unlink()
    assert "published" in _kinds(services.audit_verify())


def test_an_unprotected_tail_older_than_the_interval_fails(doctor: Any, settings: Any) -> None:
    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False
    t0 = timezone.now()
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1", now=t0)
    services.audit_sequence(now=t0)  # the first event is signed at once
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p2", now=t0)
    services.audit_sequence(now=t0 + timedelta(seconds=5))  # sequenced, not yet due for a checkpoint
    fresh = services.audit_verify(now=t0 + timedelta(seconds=6))
    assert fresh.ok and fresh.tail == 1 and fresh.tail_oldest_s is not None
    late = services.audit_verify(now=t0 + timedelta(seconds=75))
    assert "unprotected" in _kinds(late)
    # The sequencer, running every second, signs once the tail reaches the interval: nothing unprotected.
    services.audit_sequence(now=t0 + timedelta(seconds=61))
    after = services.audit_verify(now=t0 + timedelta(seconds=75))
    assert after.ok and after.tail == 0


def test_unsequenced_events_are_reported_with_their_age(doctor: Any, settings: Any) -> None:
    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False
    t0 = timezone.now()
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1", now=t0)
    report = services.audit_verify(now=t0 + timedelta(seconds=3))
    assert report.ok and report.unsequenced == 1 and report.unsequenced_oldest_s == pytest.approx(3, abs=0.01)
    assert "unsequenced" in _kinds(services.audit_verify(now=t0 + timedelta(seconds=120)))


def test_audit_verify_prints_the_unprotected_tail(doctor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from django.core.management import call_command

    _activity(doctor, 3)
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "OK" in out and "not sequenced: 0" in out and "after the last checkpoint: 0" in out


@pytest.mark.django_db(transaction=True)
def test_the_embedded_default_sequences_right_after_commit(doctor: Any, settings: Any) -> None:
    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = True
    ev = services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1")
    ev.refresh_from_db()
    assert ev.seq == 1 and ev.hash
    assert Checkpoint.objects.get().tree_size == 1  # inline: nothing comes back later for the tail
    assert services.audit_verify().ok


def test_shutdown_signs_the_tail(doctor: Any, settings: Any) -> None:
    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False
    _activity(doctor, 1)
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p9")
    services.checkpoint_on_shutdown()
    report = services.audit_verify()
    assert report.ok and report.unsequenced == 0 and report.tail == 0
    assert Checkpoint.objects.order_by("-tree_size").first().tree_size == 2  # type: ignore[union-attr]


def test_production_refuses_to_start_without_a_real_master_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "OMNICARE_"))}
    env.update({"OMNICARE_DEBUG": "0", "OMNICARE_SECRET_KEY": "prod-secret", "DJANGO_SETTINGS_MODULE":
                "omnicare.settings", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    code = "import django; django.setup(); print('started')"
    refused = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode != 0 and "OMNICARE_MASTER_KEY" in refused.stderr and "started" not in refused.stdout
    env["OMNICARE_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    ok = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120, check=False)
    assert ok.returncode == 0 and "started" in ok.stdout, ok.stderr


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_audited_requests_do_not_wait_on_each_other(doctor: Any, settings: Any) -> None:
    """Two connections: one request's audit write sits in an open transaction; the other commits anyway.

    On c8e5e71 every audit write took ``SELECT ... FROM audit_chainhead FOR UPDATE``, so the second request
    waited for the first to finish (here: ``lock_timeout`` fires instead).
    """
    import psycopg
    from django.db import connections

    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="warm-up")
    services.audit_sequence()  # the chain head exists (the old code locked it from here on)
    held = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def slow_request() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="slow")
                held.set()
                release.wait(20)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    t = threading.Thread(target=slow_request)
    t.start()
    try:
        assert held.wait(20)
        with connection.cursor() as cur:
            cur.execute("SET lock_timeout = '1s'")
        started = time.perf_counter()
        services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="fast")
        elapsed = time.perf_counter() - started
        assert services.audit_sequence() == 1  # the sequencer does not wait for the open request either
        db = settings.DATABASES["default"]
        with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             dbname=db["NAME"], autocommit=True) as probe:
            waiting = probe.execute(  # this database only: other test runs share the server
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()
    finally:
        release.set()
        t.join()
    assert not errors
    # A wait for the open transaction would have raised (lock_timeout 1 s); none is queued in this database.
    assert elapsed < 1.0 and waiting == (0,)
    services.audit_sequence()
    assert list(AuditEvent.objects.order_by("seq").values_list("resource_id", flat=True)) == [
        "warm-up", "fast", "slow"]  # the late commit got a later seq; nothing was skipped
    assert services.audit_verify().ok


def test_audit_pubkey_prints_the_pin(doctor: Any, capsys: pytest.CaptureFixture[str], settings: Any) -> None:
    from django.core.management import call_command

    _activity(doctor, 2)
    call_command("audit_pubkey")
    settings.OMNICARE_AUDIT_PUBKEY = capsys.readouterr().out.strip()
    assert services.audit_verify().ok


def test_a_forged_archive_covering_a_range_is_caught(doctor: Any, tamper: Callable[..., None]) -> None:
    """c8e5e71: an ``audit_auditarchive`` row covering seq 1..5 let the trigger delete those events unnoticed."""
    import hashlib
    import zlib

    _activity(doctor, 8)
    attacker = Ed25519PrivateKey.generate()
    blob = zlib.compress(b"")
    key_id = keys.get_signing_key().key_id
    now = timezone.now()
    from omnicare.audit.models import AuditArchive

    arc = AuditArchive(first_seq=1, last_seq=5, count=5, prev_hash=services.GENESIS, last_hash="0" * 64,
                       oldest=now, newest=now, created_at=now, blob=blob, sha256=hashlib.sha256(blob).hexdigest(),
                       key_id=key_id, signature="")
    arc.signature = attacker.sign(services.archive_message(arc)).hex()
    arc.save()  # the app role may INSERT archives (the retention job does) ...
    tamper("DELETE FROM audit_auditevent WHERE seq <= 5")  # ... and the trigger lets covered events go
    report = services.audit_verify()
    assert {"signature", "deleted"} <= _kinds(report), report.problems


def test_archives_must_continue_each_other(doctor: Any) -> None:
    """Archives are chained: one signed with the real key but not continuing the previous one is caught."""
    import hashlib
    import zlib

    from omnicare.audit.models import AuditArchive

    _activity(doctor, 4)
    now = timezone.now()
    blob = zlib.compress(b"")
    arc = AuditArchive(first_seq=100, last_seq=100, count=0, prev_hash="ab" * 32, last_hash="cd" * 32, oldest=now,
                       newest=now, created_at=now, blob=blob, sha256=hashlib.sha256(blob).hexdigest(), key_id="",
                       signature="")
    arc.key_id, sig = keys.sign(data=services.archive_message(arc))
    arc.signature = sig.hex()
    arc.save()
    assert "reordered" in _kinds(services.audit_verify())
