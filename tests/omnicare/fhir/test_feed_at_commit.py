"""The change feed takes its position at COMMIT, not at the first write (PostgreSQL).

A transaction that has written versions and is still open must not block another writer (the old design
held the feed counter's row lock from the first write to the end of the request), and the feed order is
the commit order: the writer that committed first has the lower ``seq``. Positions come from a sequence with
no lock, so a position taken by one transaction can commit after a higher one: a pull must then stop short of
the higher one until the lower one is committed (the snapshot horizon, ``core.feed_horizon.feed_settled``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import close_old_connections, connection, transaction

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write, feed_since, resources_import
from tests.conftest import requires_postgres
from tests.omnicare.sync.conftest import observation, patient, wait_settled


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_writing_transaction_does_not_block_other_writers(user: Any) -> None:
    resources_import(resources=[patient("fc")])
    wait_settled()
    head = max(v.seq for v in feed_since(after_seq=0, limit=1000))
    wrote = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []
    inside: dict[str, int] = {}

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                FhirStore.system().apply([Write("Observation", "slow", observation("slow", "fc"))])
                inside["seq"] = ResourceVersion.objects.get(resource_id="slow").seq
                wrote.set()
                release.wait(20)  # the request goes on (audit, device row, ...) while others write
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    t = threading.Thread(target=slow_writer)
    t.start()
    assert wrote.wait(20)
    started = time.monotonic()
    fast = FhirStore.system().apply([Write("Observation", "fast", observation("fast", "fc"))])
    took = time.monotonic() - started
    release.set()
    t.join(30)
    close_old_connections()
    assert not errors, errors
    assert took < 2.0, f"a second writer waited {took:.1f} s for an open transaction"
    assert inside["seq"] < 0  # not yet positioned while its transaction was open: invisible to pulls
    slow = ResourceVersion.objects.get(resource_id="slow")
    assert fast[0].version is not None
    # Commit order: "fast" committed first, so it comes first in the feed; both after the old head.
    assert head < fast[0].version.seq < slow.seq
    wait_settled()  # a transaction elsewhere on the cluster may hold the horizon back for a moment
    assert [v.resource_id for v in feed_since(after_seq=head, limit=10)] == ["fast", "slow"]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_versions_rolled_back_in_a_savepoint_never_reach_the_feed(user: Any) -> None:
    resources_import(resources=[patient("fr")])
    head = max(v.seq for v in feed_since(after_seq=0, limit=1000))
    with transaction.atomic():
        FhirStore.system().apply([Write("Observation", "kept", observation("kept", "fr"))])
        try:
            with transaction.atomic():
                FhirStore.system().apply([Write("Observation", "undone", observation("undone", "fr"))])
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
    got = feed_since(after_seq=head, limit=10)
    assert [(v.resource_id, v.seq) for v in got] == [("kept", head + 1)]
    assert not ResourceVersion.objects.filter(seq__lt=0).exists()


def _overtaken(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[str]], list[int]]:
    """Writer "early" takes its feed position, then pauses before COMMIT while writer "late" takes a higher
    one and commits. Returns what feed_since answered while "early" was paused and after, and both seqs."""
    from omnicare.fhir import services as svc

    resources_import(resources=[patient("hz")])
    wait_settled()
    head = max(v.seq for v in feed_since(after_seq=0, limit=1000))
    real_stamp = svc._feed_stamp
    positioned, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def paused_stamp(alive: list[int]) -> list[int]:
        got = real_stamp(alive)
        if threading.current_thread().name == "early":
            positioned.set()
            release.wait(20)  # positioned, not committed: the WAL flush of a busy disk, stretched
        return got

    monkeypatch.setattr(svc, "_feed_stamp", paused_stamp)

    def early() -> None:
        try:
            FhirStore.system().apply([Write("Observation", "early", observation("early", "hz"))])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    t = threading.Thread(target=early, name="early")
    t.start()
    assert positioned.wait(20)
    late = FhirStore.system().apply([Write("Observation", "late", observation("late", "hz"))])
    while_paused = [v.resource_id for v in feed_since(after_seq=head, limit=10)]
    release.set()
    t.join(30)
    close_old_connections()
    assert not errors, errors
    wait_settled()
    after = [v.resource_id for v in feed_since(after_seq=head, limit=10)]
    early_seq = ResourceVersion.objects.get(resource_id="early").seq
    assert late[0].version is not None
    return [while_paused, after], [early_seq, late[0].version.seq]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pull_waits_for_a_lower_position_still_in_flight(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (while_paused, after), (early_seq, late_seq) = _overtaken(monkeypatch)
    assert early_seq < late_seq  # "late" committed first with the higher position: the classic trap
    assert while_paused == []  # "late" is committed, but handing it out now would let a cursor skip "early"
    assert after == ["early", "late"]


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_the_horizon_the_same_interleaving_skips(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: every row counted as settled, a reader gets "late" while "early" is in flight; its cursor
    would then be past "early" when it commits."""
    from omnicare.fhir import services as svc

    monkeypatch.setattr(svc, "feed_settled", lambda stamp, xmin, xmax: True)
    (while_paused, _after), (early_seq, late_seq) = _overtaken(monkeypatch)
    assert early_seq < late_seq and while_paused == ["late"]
