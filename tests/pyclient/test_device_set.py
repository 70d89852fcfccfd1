"""The device-set rule: pins are always held, the rest by the model's rank within the budget, eviction never
touches unsynced work, and the "On this device" screen says why each patient is there."""

from __future__ import annotations

import pytest

from pyclient.device_set import (
    Candidate,
    DeviceSetOffer,
    plan_device_set,
    sealed_bytes,
)
from pyclient.protocol import ProtocolError
from pyclient.views.device_set import device_set_view, online_only_device_view, reason_words, size_words

KB = 1000


def cand(pid: str, score: float, *reasons: str, size: int = 30 * KB, records: int = 0) -> Candidate:
    return Candidate(pid, tuple(reasons), score, size, records)


def offer(budget: int, *cs: Candidate) -> DeviceSetOffer:
    return DeviceSetOffer(budget, "v3", tuple(cs))


def test_recent_ward_patients_and_later_appointments_are_ranked_not_pinned() -> None:
    plan = plan_device_set(offer(40 * KB, cand("gone", 0.2, "ward-recent:Ward 3"), cand("week", 0.6, "appointment-week")))
    assert [(h.patient_id, h.pinned, h.reasons) for h in plan.held] == [("week", False, ("likely", "appointment-week"))]


def test_pins_are_held_and_the_rest_fill_the_budget_in_rank_order() -> None:
    o = offer(
        200 * KB,
        cand("team", 0.1, "care-team"),
        cand("appt", 0.2, "appointment-tomorrow"),
        cand("ward", 0.3, "ward:Ward 3"),
        cand("p-low", 0.05),
        cand("p-high", 0.9),
        cand("p-mid", 0.5),
    )
    plan = plan_device_set(o)
    ids = [h.patient_id for h in plan.held]
    # 3 pins x 40 kB sealed (30 kB JSON -> 40 kB base64) leave 80 kB: the two most likely, not the third.
    assert ids == ["team", "appt", "ward", "p-high", "p-mid"]
    assert [h.pinned for h in plan.held] == [True, True, True, False, False]
    assert plan.not_held == 1 and plan.bytes_used == 200 * KB and not plan.over_budget
    assert plan.patient_ids == sorted(ids)


def test_the_same_offer_gives_the_same_set_whatever_the_order() -> None:
    cs = [cand(f"p{i}", 0.5) for i in range(10)]
    a = plan_device_set(offer(120 * KB, *cs))
    b = plan_device_set(offer(120 * KB, *reversed(cs)))
    assert a.patient_ids == b.patient_ids == ["p0", "p1", "p2"]  # ties: patient id


def test_pins_win_over_the_budget_and_the_plan_says_so() -> None:
    plan = plan_device_set(offer(50 * KB, cand("a", 0.1, "care-team"), cand("b", 0.1, "grant"), cand("c", 0.99)))
    assert [h.patient_id for h in plan.held] == ["a", "b"]
    assert plan.over_budget
    view = device_set_view(plan, names={}, online=True)
    assert view["warning"] and "storage budget" in view["warning"]


def test_eviction_drops_the_least_likely_first_and_never_unsynced_work() -> None:
    o = offer(100 * KB, cand("x", 0.9), cand("y", 0.2), cand("z", 0.6), cand("w", 0.1))
    before = ["x", "y", "z", "w"]
    plan = plan_device_set(o, held_now=before, pending=["w"], conflicted=["y"])
    kept = {h.patient_id for h in plan.held}
    assert {"w", "y"} <= kept  # unsynced work stays although least likely
    assert kept == {"w", "y"}  # and it uses the whole budget (2 x 40 kB; 20 kB left fits nobody)
    assert plan.evict == ("z", "x")  # least likely first
    held = {h.patient_id: h for h in plan.held}
    assert held["w"].reasons[0] == "pending" and held["y"].reasons[0] == "conflict"


def test_a_patient_that_left_scope_with_pending_changes_is_kept_until_they_are_sent() -> None:
    plan = plan_device_set(offer(100 * KB, cand("a", 0.5)), held_now=["gone", "a"], pending=["gone"])
    assert "gone" in plan.patient_ids and plan.evict == ()


def test_a_chart_opened_on_demand_stays_pinned() -> None:
    o = offer(40 * KB, cand("far", 0.01), cand("near", 0.9))
    plan = plan_device_set(o, on_demand=["far"])
    assert [h.patient_id for h in plan.held] == ["far"]
    assert plan.held[0].reasons == ("on-demand",)


def test_a_device_budget_overrides_the_offer() -> None:
    o = offer(10_000 * KB, *(cand(f"p{i}", i / 10) for i in range(10)))
    assert len(plan_device_set(o).held) == 10
    assert [h.patient_id for h in plan_device_set(o, budget_bytes=80 * KB).held] == ["p9", "p8"]


def test_sealed_size_estimate_counts_base64_and_envelope_overhead() -> None:
    assert sealed_bytes(3000, 0) == 4000
    assert sealed_bytes(3000, 2) == 4000 + 640


def test_the_offer_round_trips_and_refuses_malformed_input() -> None:
    o = offer(5, cand("a", 0.25, "ward:W1", size=10, records=2))
    assert DeviceSetOffer.from_json(o.to_json()) == o
    for bad in ({"budgetBytes": -1, "patients": []}, {"budgetBytes": 1, "patients": [{"id": ""}]},
                {"budgetBytes": 1, "patients": [{"id": "a", "score": 2}]},
                {"budgetBytes": 1, "patients": [{"id": "a", "bytes": "9"}]}, []):
        with pytest.raises(ProtocolError):
            DeviceSetOffer.from_json(bad)


def test_the_screen_says_why_each_patient_is_on_the_device() -> None:
    o = offer(
        1_000_000_000,
        cand("t", 0.1, "care-team", "appointment-tomorrow"),
        cand("w", 0.1, "ward:Ward 3"),
        cand("l", 0.7, "ward-recent:Ward 3", size=2_000_000),
    )
    plan = plan_device_set(o, pending=["t"])
    view = device_set_view(plan, names={"t": "Ada Lovelace", "w": "Alan Turing"}, online=True)
    assert view["title"] == "On this device"
    assert view["summary"] == "3 patients on this device"
    assert view["space"] == "About 3 MB used of 1 GB"
    whys = {r["patientId"]: r["why"] for r in view["rows"]}
    assert whys == {
        "t": "Changes not yet sent, your care team, appointment tomorrow",
        "w": "Ward 3 inpatient",
        "l": "Likely needed, recently on Ward 3",
    }
    assert [r["name"] for r in view["rows"]] == ["Ada Lovelace", "Alan Turing", "Patient not yet downloaded"]
    assert view["rows"][0]["unsynced"] and not view["rows"][1]["unsynced"]
    assert view["notHeld"] == "Every patient you may see is on this device."
    assert view["warning"] is None  # the screen shows no warning box
    texts = [view["summary"], view["space"], view["notHeld"], *(str(v) for r in view["rows"] for v in r.values())]
    assert not [t for t in texts if "None" in t or "null" in t]


def test_the_screen_says_how_to_reach_patients_not_on_the_device() -> None:
    plan = plan_device_set(offer(40 * KB, cand("a", 0.9), cand("b", 0.1), cand("c", 0.1)))
    assert device_set_view(plan, names={}, online=True)["notHeld"].startswith(
        "2 other patients you may see are not on this device. Search for one on the Patients screen")
    assert "online again" in device_set_view(plan, names={}, online=False)["notHeld"]


def test_words() -> None:
    assert reason_words("ward:") == "ward inpatient"
    assert reason_words("appointment-week") == "appointment this week"
    assert reason_words("ward-recent:") == "recently on your ward"
    assert reason_words("something-new") == "in your patients"
    assert [size_words(n) for n in (1, 999, 1500, 2_400_000, 500_000_000, 1_500_000_000)] == [
        "1 byte", "999 bytes", "2 kB", "2 MB", "500 MB", "1.5 GB"]


def test_a_device_that_keeps_nothing_shows_no_budget_and_no_count() -> None:
    # Online only: a budget and "0 patients on this device" would read as records gone missing.
    v = online_only_device_view()
    assert v["rows"] == [] and v["percent"] is None and "used of" not in v["space"]
    assert v["summary"] == "No patient data is kept on this device"
    assert set(v) == set(device_set_view(plan_device_set(DeviceSetOffer(0, "", ()), budget_bytes=1, pending=(),
                                                         conflicted=()), names={}, online=True))


def test_a_large_device_lists_a_page_of_rows_but_counts_and_sizes_every_patient() -> None:
    # Issue 13: 9,090 rows (and their names decrypted) for one screen was a tall step of the tab's memory.
    o = offer(1_000_000_000, *(cand(f"p{i:04d}", 0.5, "care-team", size=1_000_000) for i in range(120)))
    plan = plan_device_set(o)
    view = device_set_view(plan, names={"p0000": "Ada Lovelace"}, online=True, limit=50)
    assert len(view["rows"]) == 50 and view["rows"][0]["name"] == "Ada Lovelace"
    assert [r["patientId"] for r in view["rows"]] == [f"p{i:04d}" for i in range(50)]  # the plan's order
    assert view["summary"] == "120 patients on this device"
    assert view["space"] == "About 160 MB used of 1 GB"  # sealed: base64 of 120 MB of JSON
    assert view["rowsTotal"] == 120
    assert view["more"] == "Show more patients"
    assert len(device_set_view(plan, names={}, online=True)["rows"]) == 120  # no limit: every row
