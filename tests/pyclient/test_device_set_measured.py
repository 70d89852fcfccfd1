"""Measured sizes in the device-set budget (issue 13): where the device measures what its store really uses,
the budget is spent on that (every estimate scaled by measured / estimated of what it holds now), the screen
says the figure is measured; without a believable measure the estimates stay and the screen says so."""

from __future__ import annotations

from pyclient.device_set import Candidate, DeviceSetOffer, plan_device_set
from pyclient.views.device_set import device_set_view

MB = 1_000_000


def cand(pid: str, score: float, *reasons: str, size: int) -> Candidate:
    return Candidate(pid, tuple(reasons), score, size, 0)


def hospital() -> DeviceSetOffer:
    # Each compartment is estimated at 4 MB at rest (3 MB of JSON, base64); the budget is 20 MB.
    est = 3 * MB
    return DeviceSetOffer(20 * MB, "v1", (
        cand("pin", 0.1, "care-team", size=est), *(cand(f"r{i}", 0.9 - i / 10, size=est) for i in range(6))))


def test_a_store_twice_the_estimate_holds_half_as_many_patients_and_says_measured() -> None:
    estimated = plan_device_set(hospital(), held_now=["pin", "r0"])
    measured = plan_device_set(hospital(), held_now=["pin", "r0"], stored_bytes=16 * MB)  # 8 MB is estimated
    assert [h.patient_id for h in estimated.held] == ["pin", "r0", "r1", "r2", "r3"]
    assert [h.patient_id for h in measured.held] == ["pin", "r0"]  # 8 MB each really: 2 of them fill 20 MB
    assert measured.measured and not estimated.measured
    assert measured.bytes_used == 16 * MB and measured.not_held == 5
    view = device_set_view(measured, names={}, online=True)
    assert view["space"] == "16 MB used of 20 MB"
    assert view["spaceHow"] == "Measured on this device."
    est_view = device_set_view(estimated, names={}, online=True)
    assert est_view["space"] == "About 20 MB used of 20 MB"
    assert est_view["spaceHow"].startswith("Estimated from the size of the records")


def test_no_measure_a_tiny_store_or_an_unbelievable_figure_keeps_the_estimates() -> None:
    base = [h.patient_id for h in plan_device_set(hospital()).held]
    for held_now, stored in ((["pin"], None), ([], 10 * MB), (["pin"], 1), (["pin"], 400 * MB)):
        plan = plan_device_set(hospital(), held_now=held_now, stored_bytes=stored)
        assert not plan.measured
        assert [h.patient_id for h in plan.held] == base


def test_a_store_smaller_than_estimated_holds_more() -> None:
    plan = plan_device_set(hospital(), held_now=["pin", "r0"], stored_bytes=4 * MB)  # half the estimate
    assert plan.measured and [h.patient_id for h in plan.held] == ["pin", *(f"r{i}" for i in range(6))]
