"""The prefetch ranking on the real server: trained from the audit trail's chart opens (a versioned row, with a
heuristic fallback when history is short), ranks only the user's scope, and runs as a beat task on a real
Celery worker."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.audit.services import audit_record
from omnicare.prefetch.models import PrefetchModelVersion
from omnicare.prefetch.services import SERVER_FEATURES, prefetch_rank, prefetch_train
from tests.omnicare.sync.conftest import care_team, celery_workers, patient, practitioner, seed

__all__ = ["celery_workers"]  # the sync tests' real-worker fixture, used here too

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.get_current_timezone())


@pytest.fixture
def ward(db: Any, user: Any, other_user: Any) -> dict[str, Any]:
    """dr.test cares for 12 patients and, every morning for three weeks, opens the charts of h1..h4; the
    colleague cares for x1, whom dr.test once opened (e.g. under an earlier care-team membership)."""
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    role_assign(user=other_user, role=PHYSICIAN)
    pids = [f"h{i}" for i in range(1, 5)] + [f"c{i}" for i in range(1, 9)]
    seed(practitioner(user.username), practitioner(other_user.username),
         *(patient(p) for p in [*pids, "x1"]),
         *(care_team(p, [user.username]) for p in pids), care_team("x1", [other_user.username]))
    recorded_before(NOW - timedelta(days=60))  # the teams stood before the three weeks the replay looks at
    for day in range(21, 0, -1):
        for k, p in enumerate(["h1", "h2", "h3", "h4", "x1"] if day == 5 else ["h1", "h2", "h3", "h4"]):
            at = NOW - timedelta(days=day) + timedelta(hours=3, minutes=k)  # 09:00, inside the day shift
            audit_record(user=user, action="read", resource_type="Patient", resource_id=p, patient_ids=[p],
                         device_id="dev-ward0001", device_time=at, detail={"view": "chart"}, now=at)
        # A search and a sync pull are not chart opens: they must not count.
        at = NOW - timedelta(days=day) + timedelta(hours=4)
        audit_record(user=user, action="read", resource_type="Patient", resource_id="c1", patient_ids=["c1"],
                     detail={"view": "search"}, now=at)
        audit_record(user=user, action="sync-pull", patient_ids=["c2"], now=at)
    return {"user": user, "other": other_user, "pids": pids}


def recorded_before(at: datetime) -> None:
    """Date every stored version so far to ``at``: the history a site recorded then (the store stamps writes with
    the real clock; a training replay of a past shift sees only versions that stood at its start)."""
    from omnicare.fhir.models import ResourceVersion

    ResourceVersion.objects.update(last_updated=at)


def test_short_history_stores_a_heuristic_version(ward: dict[str, Any], settings: Any) -> None:
    settings.OMNICARE_PREFETCH_MIN_OPENS = 10_000
    row = prefetch_train(now=NOW)
    assert (row.version, row.kind, row.blob) == (1, "heuristic", b"")
    assert row.features == list(SERVER_FEATURES)
    # Every chart open of the 28-day window within the user's scope at the time, labelled to its shift (x1, the
    # colleague's patient, opened once, was not in dr.test's scope: not an example the ranking would ever see).
    assert row.n_positive == 4 * 21
    assert prefetch_rank(user=ward["user"], now=NOW).model_version == "default-v1-heuristic"


def test_enough_history_trains_a_learned_version_that_ranks_what_the_user_opens(
        ward: dict[str, Any], settings: Any) -> None:
    settings.OMNICARE_PREFETCH_MIN_OPENS = 50
    first = prefetch_train(now=NOW)
    second = prefetch_train(now=NOW)
    assert (first.kind, first.version, second.version) == ("learned", 1, 2)
    assert first.n_examples > first.n_positive > 50 and bytes(first.blob)
    offer = prefetch_rank(user=ward["user"], now=NOW + timedelta(hours=1))
    assert offer.model_version == "default-v2"
    order = [c.patient_id for c in offer.candidates]
    assert set(order[:4]) == {"h1", "h2", "h3", "h4"}, order
    assert min(c.score for c in offer.candidates[:4]) > max(c.score for c in offer.candidates[4:])


def test_predictions_never_widen_scope(ward: dict[str, Any], settings: Any) -> None:
    """x1 was opened by dr.test (history the model learns from) but is in the colleague's care team only:
    it is never offered to dr.test's devices, whatever its score."""
    settings.OMNICARE_PREFETCH_MIN_OPENS = 50
    prefetch_train(now=NOW)
    offered = {c.patient_id for c in prefetch_rank(user=ward["user"], now=NOW).candidates}
    assert offered == set(ward["pids"])
    assert "x1" not in offered
    assert {c.patient_id for c in prefetch_rank(user=ward["other"], now=NOW).candidates} == {"x1"}


@pytest.mark.redis
def test_the_beat_task_trains_on_a_real_worker(ward: dict[str, Any], celery_workers: Any, settings: Any) -> None:
    from omnicare.prefetch.tasks import train
    from tests.omnicare.sync.conftest import wait_for

    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL")
    site = f"site-{uuid.uuid4().hex[:6]}"
    celery_workers.start(OMNICARE_PREFETCH_MIN_OPENS="50", OMNICARE_PREFETCH_HISTORY_DAYS="3650")
    train.apply_async(kwargs={"site": site}, queue=celery_workers.queue)
    wait_for(lambda: PrefetchModelVersion.objects.filter(site=site).exists(), 120, "the worker's training run")
    row = PrefetchModelVersion.objects.get(site=site)
    assert row.kind == "learned" and row.n_positive >= 81


def test_the_servers_history_reads_transfers_and_flagged_vital_signs(db: Any, user: Any) -> None:
    """The History the server loads from FHIR feeds the evaluation's feature function: a transfer off the
    user's ward ends its ward period (on the ward before, recent after), an abnormal heart rate counts as a
    flagged result, a normal one as a result only, and a stay the user is a participant of is theirs. Each
    moment sees the Encounter's version that stood then: the admission recorded three days ago, the transfer
    yesterday."""
    from omnicare.prefetch.features import FEATURES
    from omnicare.prefetch.services import _features, history_load, user_context

    now = timezone.now()
    me = {"reference": f"Practitioner/pr-{user.username.replace('.', '-')}"}

    def iso(days: float) -> str:
        return (now - timedelta(days=days)).isoformat()

    def hr(oid: str, pid: str, value: float) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {"value": value, "unit": "/min"}}

    admission = {"resourceType": "Encounter", "id": "enc-t1", "status": "in-progress", "period": {"start": iso(3)},
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                 "subject": {"reference": "Patient/t1"}, "participant": [{"individual": me}],
                 "location": [{"location": {"reference": "Location/ward-a"}, "status": "active",
                               "period": {"start": iso(3)}}]}
    seed(practitioner(user.username), patient("t1"), patient("t2"),
         {"resourceType": "Location", "id": "ward-a", "name": "Ward A", "status": "active"},
         {"resourceType": "Location", "id": "ward-b", "name": "Ward B", "status": "active"},
         {"resourceType": "PractitionerRole", "id": "role-a", "active": True, "practitioner": me,
          "location": [{"reference": "Location/ward-a"}]}, admission)
    recorded_before(now - timedelta(days=3))
    seed({**admission, "location": [
              {"location": {"reference": "Location/ward-a"}, "status": "completed",
               "period": {"start": iso(3), "end": iso(1)}},
              {"location": {"reference": "Location/ward-b"}, "status": "active", "period": {"start": iso(1)}}]},
         hr("hr-t1", "t1", 142), hr("hr-t2", "t2", 72))
    h, u = history_load(since=now - timedelta(days=8)), user_context(user)

    def row(pid: str, at: Any) -> dict[str, float]:
        return dict(zip(FEATURES, _features(h, u, [pid], at)[0], strict=True))

    before, after, t2 = row("t1", now - timedelta(days=2)), row("t1", now + timedelta(minutes=1)), \
        row("t2", now + timedelta(minutes=1))
    assert (before["ward_census"], before["ward_recent_14d"]) == (1.0, 0.0)
    assert (after["ward_census"], after["ward_recent_14d"], after["inpatient"]) == (0.0, 1.0, 1.0)
    assert (after["admitted_by_user"], after["result_1d"], after["abnormal_results_1d"]) == (1.0, 1.0, 1.0)
    assert (before["result_1d"], t2["result_1d"], t2["abnormal_results_1d"], t2["inpatient"]) == (0.0, 1.0, 0.0, 0.0)


def test_the_training_replay_takes_the_care_team_as_it_stood_then(db: Any, user: Any) -> None:
    """A patient who joined the user's care team today was not on it at yesterday's shift start, and a team
    set to inactive no longer counts after that version: the replay reads the CareTeam versions."""
    from omnicare.prefetch.services import care_team_at, care_team_versions, user_context

    seed(practitioner(user.username), patient("j1"), care_team("j1", [user.username]))
    joined = timezone.now()
    seed({**care_team("j1", [user.username]), "status": "inactive"})
    left = timezone.now()
    versions, mine = care_team_versions(), user_context(user).practitioners
    assert len(versions["ct-j1"]) == 2
    assert care_team_at(versions, mine, joined - timedelta(days=1)) == frozenset()
    assert care_team_at(versions, mine, left + timedelta(seconds=1)) == frozenset()
    first = versions["ct-j1"][0][0]
    assert care_team_at(versions, mine, first + timedelta(microseconds=1)) == frozenset({"j1"})


def test_the_training_replay_sees_each_past_shift_as_it_stood_then(db: Any, user: Any) -> None:
    """Training on a past shift uses what was true at its start, not today's scope: a patient who joined the
    care team later is no example of that shift (and is ``care_team`` once they joined), a ward the user was
    assigned to later contributes no census, and a clinic slot booked after the shift began is not
    ``appointment_today`` (one booked the week before is), and an admission recorded after the shift began
    does not make its patient an inpatient at its start; an emergency grant held then (ended since) puts its
    patient in that shift's scope. Today's records would label all five wrong."""
    from datetime import time

    from omnicare.access.models import EmergencyAccessGrant
    from omnicare.fhir.models import ResourceVersion
    from omnicare.prefetch.features import FEATURES
    from omnicare.prefetch.services import training_examples

    def recorded(at: datetime, *ids: str) -> None:  # the store stamps with the real clock; date these writes
        ResourceVersion.objects.filter(resource_id__in=ids).update(last_updated=at)

    now = timezone.now()
    tz = timezone.get_current_timezone()
    shift = timezone.make_aware(datetime.combine(timezone.localdate(now) - timedelta(days=5), time(7, 0)), tz)
    later = shift + timedelta(days=3)  # a day shift after the changes
    me = {"reference": f"Practitioner/pr-{user.username.replace('.', '-')}"}

    def booking(aid: str, pid: str, start: datetime) -> dict[str, Any]:
        return {"resourceType": "Appointment", "id": aid, "status": "booked", "start": start.isoformat(),
                "end": (start + timedelta(minutes=20)).isoformat(),
                "participant": [{"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                                {"actor": me, "status": "accepted"}]}

    seed(practitioner(user.username), *(patient(p) for p in ("old", "joined", "onward", "walkin")),
         care_team("old", [user.username]), care_team("walkin", [user.username]),
         {"resourceType": "Location", "id": "ward-a", "name": "Ward A", "status": "active"},
         {"resourceType": "Encounter", "id": "enc-onward", "status": "in-progress",
          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
          "subject": {"reference": "Patient/onward"}, "period": {"start": (shift - timedelta(days=1)).isoformat()},
          "location": [{"location": {"reference": "Location/ward-a"}, "status": "active"}]},
         booking("appt-old", "old", shift + timedelta(hours=3)))
    recorded(shift - timedelta(days=10), "pr-" + user.username.replace(".", "-"), "old", "joined", "onward",
             "walkin", "ct-old", "ct-walkin", "ward-a", "enc-onward", "appt-old")
    seed(care_team("joined", [user.username]),
         {"resourceType": "PractitionerRole", "id": "role-a", "active": True, "practitioner": me,
          "location": [{"reference": "Location/ward-a"}]})
    recorded(shift + timedelta(days=2), "ct-joined", "role-a")
    seed(booking("appt-walkin", "walkin", shift + timedelta(hours=2)),
         {"resourceType": "Encounter", "id": "enc-walkin", "status": "in-progress",  # admitted at 06:00 elsewhere
          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
          "subject": {"reference": "Patient/walkin"}, "period": {"start": (shift - timedelta(hours=1)).isoformat()},
          "location": [{"location": {"reference": "Location/ward-b"}, "status": "active"}]})
    recorded(shift + timedelta(hours=1), "appt-walkin", "enc-walkin")  # booked, and recorded, into the shift
    EmergencyAccessGrant.objects.create(user=user, patient_id="glass", reason="crash call", started=shift - timedelta(
        hours=1), expires=shift + timedelta(hours=5), ended=shift + timedelta(hours=2), end_reason="user")
    for pid, at in (("old", shift + timedelta(hours=1)), ("joined", later + timedelta(hours=1))):
        audit_record(user=user, action="read", resource_type="Patient", resource_id=pid, patient_ids=[pid],
                     device_id="dev-ward0001", device_time=at, detail={"view": "chart"}, now=at)

    examples = training_examples(now=now, days=7)
    at_shift = {p: dict(zip(FEATURES, row, strict=True)) for _u, at, p, row, _y in examples if at == shift}
    at_later = {p: dict(zip(FEATURES, row, strict=True)) for _u, at, p, row, _y in examples if at == later}
    assert set(at_shift) == {"old", "walkin", "glass"}, at_shift.keys()  # not yet on the team, nor on the ward
    assert (at_shift["old"]["appointment_today"], at_shift["walkin"]["appointment_today"]) == (1.0, 0.0)
    assert (at_shift["walkin"]["inpatient"], at_shift["walkin"]["admitted_last_day"]) == (0.0, 0.0)
    assert set(at_later) == {"old", "walkin", "joined", "onward"}, at_later.keys()
    assert (at_later["joined"]["care_team"], at_later["onward"]["ward_census"], at_later["walkin"]["inpatient"]) \
        == (1.0, 1.0, 1.0)
    labels = {(at, p): y for _u, at, p, _row, y in examples}
    assert (labels[(shift, "old")], labels[(later, "joined")], labels[(later, "old")]) == (1, 1, 0)
