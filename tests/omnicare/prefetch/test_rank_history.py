"""The device-set offer reads only what its ranking needs (issue 13): the features it computes from the narrowed
history (``history_for_rank``: the user's scope, current stays, today's and tomorrow's schedule, found through the
search index) are the ones the whole-site history (``history_load``, for training) gives — and a hospital's other
wards, other clinicians' schedules and old stays are not read at all."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from omnicare.access.services import scope_reasons
from omnicare.audit.services import audit_record
from omnicare.prefetch.features import FEATURES, features_at
from omnicare.prefetch.services import history_for_rank, history_load, prefetch_rank, user_context
from tests.omnicare.sync.conftest import care_team, clinic, observation, patient, seed
from tests.omnicare.sync.test_device_set import appointment, hospital, left, stay

__all__ = ["clinic", "hospital"]  # the sync tests' fixtures, used here too


def _chart_open(user: Any, pid: str, at: Any) -> None:
    audit_record(user=user, action="read", resource_type="Patient", resource_id=pid, patient_ids=[pid],
                 device_id="dev-rank0001", device_time=at, detail={"view": "chart"}, now=at)


def test_the_offer_ranks_from_the_same_features_as_the_whole_site_history(hospital: dict[str, Any]) -> None:
    user, other = hospital["user"], hospital["other"]
    seed(
        patient("p20"), patient("p21"), care_team("p20", [user.username]), care_team("p21", [other.username]),
        stay("e20", "p20", "w4"),  # the user's care-team patient, an inpatient elsewhere
        left("e21", "p20", "w4", days_ago=1),  # and discharged from another ward yesterday
        appointment("a20", "p20", user.username, 1), appointment("a21", "p21", other.username, 0),
        observation("o20", "p20"),
    )
    now = timezone.now()  # after the writes: features see only what happened before ``now``
    for pid, hours in (("p1", 2), ("p3", 30), ("p20", 100), ("p13", 200)):
        _chart_open(user, pid, now - timedelta(hours=hours))
    for pid, hours in (("p3", 3), ("p20", 20), ("p1", 40), ("p21", 1)):  # the colleague's; 40 h is too old
        _chart_open(other, pid, now - timedelta(hours=hours))
    u = user_context(user)
    patients = sorted(scope_reasons(user=user, now=now))
    assert {"p1", "p3", "p7", "p8", "p13", "p20"} <= set(patients)
    tz = timezone.get_current_timezone()
    whole = features_at(history_load(since=now - timedelta(days=8)), u, patients, now, tz)
    narrow = features_at(history_for_rank(u=u, patients=patients, now=now), u, patients, now, tz)
    assert narrow == whole
    f = {p: dict(zip(FEATURES, row, strict=True)) for p, row in zip(patients, narrow, strict=True)}
    assert f["p3"]["ward_census"] == 1.0 and f["p3"]["colleague_opens_1d"] == 1.0  # on the ward, opened by a colleague
    assert f["p1"]["colleague_opens_7d"] == 1.0 and f["p1"]["colleague_opens_1d"] == 0.0  # 40 h ago
    assert f["p20"]["appointment_tomorrow"] == 1.0 and f["p20"]["discharged_recently"] == 1.0
    assert f["p20"]["result_1d"] == 1.0
    top = [c.patient_id for c in prefetch_rank(user=user, now=now).candidates][:2]
    assert set(top) == {"p7", "p20"}  # seen today; seen tomorrow with a new result and just discharged


def test_the_offer_does_not_read_other_wards_or_other_schedules(hospital: dict[str, Any]) -> None:
    user, other = hospital["user"], hospital["other"]
    seed(*(stay(f"ex{i}", "p6", "w4") for i in range(5)),
         *(appointment(f"ax{i}", "p6", other.username, 0) for i in range(5)),
         left("old1", "p4", "w3", days_ago=40))
    now = timezone.now()
    u = user_context(user)
    patients = sorted(scope_reasons(user=user, now=now))
    h = history_for_rank(u=u, patients=patients, now=now)
    assert "p6" not in patients and all(s.patient in patients for s in h.stays)
    assert not any(p == "p6" for appts in h.appointments.values() for _t, p, *_known in appts)
    assert {s.patient for s in h.stays} >= {"p3"}
