"""Feed positions handed out at COMMIT (PostgreSQL): every version that commits gets one, in the order it was
written, and a version whose savepoint rolled back leaves no position and no gap behind."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.services import Write, feed_head, resources_apply, system_trusted
from tests.conftest import requires_postgres


def _obs(oid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}  # fmt: skip


def _write(oid: str, *, savepoint: bool) -> None:
    resources_apply(user=None, writes=[Write("Observation", oid, _obs(oid), expected_version=0)],
                    check=system_trusted, savepoint=savepoint)  # fmt: skip


def _positions(*ids: str) -> dict[str, int]:
    return dict(ResourceVersion.objects.filter(resource_id__in=ids).values_list("resource_id", "seq"))


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_versions_written_without_savepoints_get_consecutive_positions_in_write_order() -> None:
    head = feed_head()
    with transaction.atomic():
        for oid in ("fs-a", "fs-b", "fs-c"):
            _write(oid, savepoint=False)
    got = _positions("fs-a", "fs-b", "fs-c")  # no other writer: the sequence hands out a run (never reset)
    assert head < got["fs-a"] and got["fs-b"] == got["fs-a"] + 1 and got["fs-c"] == got["fs-a"] + 2, got


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_version_whose_savepoint_rolled_back_takes_no_position() -> None:
    head = feed_head()
    with transaction.atomic():
        _write("fs-x", savepoint=False)
        try:
            with transaction.atomic():  # a savepoint
                _write("fs-y", savepoint=False)
                raise RuntimeError("this part is refused")
        except RuntimeError:
            pass
        _write("fs-z", savepoint=True)
    got = _positions("fs-x", "fs-y", "fs-z")
    assert set(got) == {"fs-x", "fs-z"} and head < got["fs-x"] and got["fs-z"] == got["fs-x"] + 1, got
    assert not ResourceVersion.objects.filter(seq__lt=0).exists()  # nothing left with a provisional position
