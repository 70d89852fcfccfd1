"""The patient list shows a page (issue 13): the first patients in name order out of batches, and the count of
all of them, whatever order the batches come in."""

from __future__ import annotations

import random

from pyclient import chart as cv
from pyclient import storage_mode as sm


def summary(i: int, family: str, given: str = "Pat") -> dict[str, object]:
    return cv.patient_summary({"resourceType": "Patient", "id": f"p{i:05d}", "name": [{"family": family,
                                                                                      "given": [given]}]})


def test_the_page_is_the_first_in_name_order_whatever_the_batches() -> None:
    people = [summary(i, f"Fam{(i * 7919) % 1000:04d}") for i in range(1000)]
    random.Random(13).shuffle(people)
    page = cv.PatientPage(50)
    for k in range(0, len(people), 200):  # as BrowserApp decrypts them: 200 at a time
        page.add(people[k:k + 200])
    everyone = sorted(people, key=lambda s: (cv.sort_key(s), s["id"]))
    assert [s["id"] for s in page.results] == [s["id"] for s in everyone[:50]]
    assert page.total == 1000 and page.more


def test_names_sort_folded_and_equal_names_by_id() -> None:
    page = cv.PatientPage(3)
    page.add([summary(3, "émile"), summary(1, "Zed"), summary(2, "Emile")])
    page.add([summary(0, "Emile")])
    assert [s["id"] for s in page.results] == ["p00000", "p00002", "p00003"]
    assert page.total == 4 and page.more


def test_a_list_that_fits_the_page_offers_no_more() -> None:
    page = cv.PatientPage(50)
    page.add([summary(i, "Fam") for i in range(12)])
    assert len(page.results) == 12 and not page.more


def test_the_line_above_a_page_says_how_many_of_how_many() -> None:
    assert sm.patients_summary(9090, "device", shown=50) == "Showing 50 of 9,090 patients on this device"
    assert sm.patients_summary(12, "device", shown=12) == "12 patients on this device"
    assert sm.patients_summary(1, "device") == "1 patient on this device"
