"""The hash-chained audit trail: append-only, signed checkpoints, and audit_verify catching each tamper kind."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from omnicare.audit import services
from omnicare.audit.models import AppendOnlyError, AuditEvent, ChainHead, Checkpoint
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


def _log(user: Any, n: int, **kw: Any) -> list[AuditEvent]:
    """n events as requests store them, then one sequencer run (returns them with seq and hashes)."""
    stored = [
        services.audit_record(user=user, action="read", resource_type="Observation", resource_id=f"obs-{i}",
                              patient_ids=[f"p{i % 3}"], **kw)
        for i in range(n)
    ]
    assert all(e.seq is None and e.hash == "" for e in stored)  # requests take no chain lock
    services.audit_sequence(now=kw.get("now"))
    by_pk = AuditEvent.objects.in_bulk([e.pk for e in stored])
    return [by_pk[e.pk] for e in stored]


def _kinds(report: services.VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


def _seqs(report: services.VerifyReport) -> set[int | None]:
    return {p.seq for p in report.problems}


@pytest.fixture
def doctor(make_user: Callable[..., Any]) -> Any:
    return make_user("dr.house", "physician")


@pytest.fixture
def logged(doctor: Any) -> list[AuditEvent]:
    events = _log(doctor, 10)
    services.audit_checkpoint()
    return events


def test_an_untouched_log_verifies(logged: list[AuditEvent]) -> None:
    report = services.audit_verify()
    assert report.ok, report.problems
    assert report.events == 10 and report.checkpoints == 1
    assert [e.seq for e in logged] == list(range(1, 11))
    assert logged[0].prev_hash == services.GENESIS and logged[1].prev_hash == logged[0].hash
    assert logged[0].username == "dr.house" and logged[0].roles == ["physician"]


def test_the_model_refuses_update_and_delete(logged: list[AuditEvent]) -> None:
    ev = AuditEvent.objects.get(seq=3)
    ev.resource_id = "other"
    with pytest.raises(AppendOnlyError):
        ev.save()
    with pytest.raises(AppendOnlyError):
        ev.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=3).update(resource_id="other")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=3).delete()
    with pytest.raises(AppendOnlyError):
        Checkpoint.objects.all().delete()


def test_the_database_refuses_raw_update_and_delete(logged: list[AuditEvent]) -> None:
    """Triggers on PostgreSQL and (new) SQLite: raw SQL cannot change the trail, the head or the keys either."""
    from django.db import DatabaseError, transaction

    from omnicare.keys import services as keys

    keys.rotate(purpose="audit-signing")  # a retired key to try to revive
    for sql in ("UPDATE audit_auditevent SET resource_id = 'x' WHERE seq = 3",
                "UPDATE audit_auditevent SET seq = 99 WHERE seq = 3",
                "UPDATE audit_auditevent SET hash = prev_hash WHERE seq = 3",
                "DELETE FROM audit_auditevent WHERE seq = 3",
                "UPDATE audit_checkpoint SET tree_size = 1",
                "DELETE FROM audit_checkpoint",
                "DELETE FROM audit_chainhead",
                "UPDATE audit_chainhead SET seq = 3",
                "DELETE FROM keys_keyversion",
                "UPDATE keys_keyversion SET public_key = NULL",
                "UPDATE keys_keyversion SET status = 'active' WHERE status = 'retired'"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql)
    assert services.audit_verify().ok


def test_modification_is_detected_at_that_event(logged: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("UPDATE audit_auditevent SET patient_ids = %s WHERE seq = 4", [json.dumps(["someone-else"])])
    report = services.audit_verify()
    assert "modified" in _kinds(report) and 4 in _seqs(report)


def test_modification_with_rehashed_tail_is_caught_by_the_signed_checkpoint(
    logged: list[AuditEvent], tamper: Callable[..., None]
) -> None:
    # A smarter attacker rewrites event 4 and recomputes every hash after it, and the head.
    rows = list(AuditEvent.objects.order_by("seq"))
    prev = rows[2].hash
    for ev in rows[3:]:
        if ev.seq == 4:
            ev.resource_id = "forged"
        new_hash = services.event_hash(prev, services.event_fields(ev))
        tamper("UPDATE audit_auditevent SET resource_id = %s, prev_hash = %s, hash = %s WHERE seq = %s",
               [ev.resource_id, prev, new_hash, ev.seq])
        prev = new_hash
    tamper("UPDATE audit_chainhead SET hash = %s", [prev])
    report = services.audit_verify()
    assert not report.ok
    assert any("checkpoint" in p.message and "up to 10" in p.message for p in report.problems)


def test_deletion_is_detected_and_located(logged: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("DELETE FROM audit_auditevent WHERE seq = 6")
    report = services.audit_verify()
    assert "deleted" in _kinds(report)
    assert any(p.kind == "deleted" and p.seq == 6 and "6..6" in p.message for p in report.problems)


def test_insertion_is_detected(logged: list[AuditEvent], tamper: Callable[..., None]) -> None:
    # Make room after seq 5 and insert a forged event whose own hash is computed correctly.
    tamper("UPDATE audit_auditevent SET seq = seq + 1000 WHERE seq > 5")
    tamper("UPDATE audit_auditevent SET seq = seq - 999 WHERE seq > 1000")
    five = AuditEvent.objects.get(seq=5)
    forged = AuditEvent(seq=6, action="read", outcome="success", username="dr.house", roles=["physician"],
                        resource_type="Patient", resource_id="cover-story", patient_ids=["p9"],
                        received_at=five.received_at, prev_hash=five.hash, detail={})
    forged.hash = services.event_hash(five.hash, services.event_fields(forged))
    forged.save()
    report = services.audit_verify()
    assert not report.ok
    assert report.problems[0].seq == 7  # the first event after the forged one no longer links


def test_reordering_is_detected(logged: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("UPDATE audit_auditevent SET seq = -1 WHERE seq = 7")
    tamper("UPDATE audit_auditevent SET seq = 7 WHERE seq = 8")
    tamper("UPDATE audit_auditevent SET seq = 8 WHERE seq = -1")
    report = services.audit_verify()
    assert not report.ok and {7, 8} <= _seqs(report)


def test_truncation_is_detected_even_with_the_head_rewound(
    logged: list[AuditEvent], tamper: Callable[..., None]
) -> None:
    seven = AuditEvent.objects.get(seq=7)
    tamper("DELETE FROM audit_auditevent WHERE seq > 7")
    tamper("UPDATE audit_chainhead SET seq = 7, hash = %s", [seven.hash])
    report = services.audit_verify()
    assert any(p.kind == "truncated" and p.seq == 8 and "8..10" in p.message for p in report.problems)


def test_forged_checkpoint_signature_is_detected(logged: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("UPDATE audit_checkpoint SET tree_size = 9")
    report = services.audit_verify()
    assert "signature" in _kinds(report)


def test_audit_verify_command_exits_non_zero_and_names_the_event(
    logged: list[AuditEvent], tamper: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("audit_verify")
    assert "OK" in capsys.readouterr().out
    tamper("UPDATE audit_auditevent SET outcome = 'denied' WHERE seq = 2")
    with pytest.raises(SystemExit) as exc:
        call_command("audit_verify")
    assert exc.value.code == 1
    assert "seq 2" in capsys.readouterr().err


def test_checkpoints_are_made_every_n_events(doctor: Any, settings: Any) -> None:
    settings.OMNICARE_AUDIT_CHECKPOINT_EVERY = 4
    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False
    for _ in range(9):
        _log(doctor, 1)  # the first event is signed at once, then every 4 (or every minute, see test_sequencer)
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [1, 5, 9]
    _log(doctor, 1)
    assert services.audit_checkpoint() is not None and services.audit_checkpoint() is None
    head = ChainHead.objects.get()
    cp = Checkpoint.objects.order_by("-tree_size").first()
    assert cp is not None and cp.tree_size == 10 and cp.head_hash == head.hash
    assert services.audit_verify().ok


def test_a_failed_write_raises_audit_unavailable(doctor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(AuditEvent.objects, "bulk_create", boom)
    with pytest.raises(services.AuditUnavailable):
        services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1")
    assert not AuditEvent.objects.exists()


def test_inclusion_and_consistency_proofs_check_out(logged: list[AuditEvent]) -> None:
    from omnicare.audit import merkle

    cp = Checkpoint.objects.get()
    proof = services.inclusion_proof(seq=4, tree_size=10)
    assert proof["root"] == cp.merkle_root
    assert merkle.verify_inclusion(leaf=bytes.fromhex(logged[3].hash), index=3, size=10,
                                   proof=[bytes.fromhex(p) for p in proof["path"]],
                                   root_hash=bytes.fromhex(cp.merkle_root))
    c = services.consistency_proof(first=6, second=10)
    assert merkle.verify_consistency(first=6, second=10, first_root=bytes.fromhex(c["first_root"]),
                                     second_root=bytes.fromhex(cp.merkle_root),
                                     proof=[bytes.fromhex(p) for p in c["path"]])


def test_hash_covers_canonical_json_of_the_event(logged: list[AuditEvent]) -> None:
    ev = AuditEvent.objects.get(seq=2)
    expected = hashlib.sha256(bytes.fromhex(ev.prev_hash) + services.canonical_json(services.event_fields(ev)))
    assert ev.hash == expected.hexdigest()
    assert services.event_fields(ev)["received_at"].endswith("Z")


def test_retention_archives_only_events_older_than_seven_years(doctor: Any, tamper: Callable[..., None]) -> None:
    t0 = timezone.now()
    old = _log(doctor, 5)  # received at ~t0
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1",
                          now=t0 + timedelta(days=400))
    services.audit_sequence(now=t0 + timedelta(days=400))
    recent = [AuditEvent.objects.get(seq=6)]
    services.audit_checkpoint(now=t0 + timedelta(days=400))
    # One day short of 7 years: nothing moves.
    assert services.audit_archive(now=t0 + timedelta(days=365 * 7)) == []
    assert AuditEvent.objects.count() == 6

    later = t0 + timedelta(days=365 * 7 + 3)
    archives = services.audit_archive(now=later, batch_size=2)
    assert [(a.first_seq, a.last_seq) for a in archives] == [(1, 2), (3, 4), (5, 5)]
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == [recent[0].seq]  # the recent one stays
    assert [e["hash"] for a in archives for e in services.archive_events(a)] == [e.hash for e in old]
    report = services.audit_verify()
    assert report.ok, report.problems
    assert report.archived == 5 and report.events == 1
    # Proofs still work over archived leaves.
    latest = Checkpoint.objects.order_by("-tree_size").first()
    assert latest is not None and services.inclusion_proof(seq=1, tree_size=6)["root"] == latest.merkle_root

    tamper("UPDATE audit_auditarchive SET count = 1 WHERE first_seq = 3")
    assert "signature" in _kinds(services.audit_verify())


def test_archive_task_runs_from_beat(doctor: Any) -> None:
    from omnicare.audit.tasks import audit_archive, audit_checkpoint

    for i in range(2):  # stored, not sequenced yet: the checkpoint job sequences them first
        services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id=str(i))
    # apply(): run in this process whatever the broker (with REDIS_URL set, delay() would wait for a worker).
    assert audit_checkpoint.apply().get() == 2
    assert audit_archive.apply().get() == 0  # nothing is 7 years old


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_linear_chain(make_user: Callable[..., Any]) -> None:
    import threading

    from django.db import connections

    users = [make_user(f"u{i}", "nurse") for i in range(6)]
    errors: list[BaseException] = []

    def write(user: Any) -> None:
        try:
            for i in range(25):
                services.audit_record(user=user, action="read", resource_type="Observation", resource_id=str(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    services.audit_sequence()
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 151))
    assert services.audit_verify().ok


def test_a_removed_head_stops_the_sequencer_instead_of_forking_the_chain(
    logged: list[AuditEvent], tamper: Callable[..., None], doctor: Any
) -> None:
    tamper("DELETE FROM audit_chainhead")
    services.audit_record(user=doctor, action="read", resource_type="Patient", resource_id="p1")  # still stored
    with pytest.raises(services.AuditUnavailable):
        services.audit_sequence()
    assert not ChainHead.objects.exists() and AuditEvent.objects.filter(seq__isnull=True).count() == 1
    report = services.audit_verify()
    assert "head" in _kinds(report) and report.unsequenced == 1
