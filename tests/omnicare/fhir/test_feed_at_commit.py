"""The change feed takes its position at COMMIT, not at the first write (PostgreSQL).

A transaction that has written versions and is still open must not block another writer (the old design
held the feed counter's row lock from the first write to the end of the request), and the feed order is
the commit order: the writer that committed first has the lower ``seq``.
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
from tests.omnicare.sync.conftest import observation, patient


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_writing_transaction_does_not_block_other_writers(user: Any) -> None:
    resources_import(resources=[patient("fc")])
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
