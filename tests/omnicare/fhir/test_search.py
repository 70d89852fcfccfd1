"""Search parameters, prefixes, paging through next links."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from .conftest import Fhir, patient

pytestmark = pytest.mark.django_db

LOINC = "http://loinc.org"
CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ALLERGY_CLIN = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


def ids(bundle: dict[str, Any]) -> set[str]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def names(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])}


@pytest.fixture
def people(fhir: Fhir) -> dict[str, str]:
    made = {
        "Müller": patient(
            family="Müller",
            given="Ana",
            gender="female",
            birthDate="1970-03-15",
            identifier=[{"system": "urn:mrn", "value": "111"}],
        ),
        "Mullins": patient(
            family="Mullins",
            given="Bob",
            gender="male",
            birthDate="1970",
            identifier=[{"system": "urn:ssn", "value": "111"}],
        ),
        "Smith": patient(
            family="Smith",
            given="Müge",
            gender="female",
            birthDate="1985-12-01",
            identifier=[{"system": "urn:mrn", "value": "222"}],
        ),
    }
    return {k: fhir.create(v)["id"] for k, v in made.items()}


def search(fhir: Fhir, q: str) -> dict[str, Any]:
    r = fhir.get(q)
    assert r.status_code == 200, r.content
    return r.json()


def test_name_is_prefix_case_and_accent_insensitive(fhir: Fhir, people: dict[str, str]) -> None:
    assert names(search(fhir, "/Patient?name=mul")) == {"Müller", "Mullins"}
    assert names(search(fhir, "/Patient?name=MÜLL")) == {"Müller", "Mullins"}
    assert names(search(fhir, "/Patient?name=mug")) == {"Smith"}  # given name Müge
    assert names(search(fhir, "/Patient?family=mul&given=bo")) == {"Mullins"}
    assert names(search(fhir, "/Patient?given=mu")) == {"Smith"}
    assert names(search(fhir, "/Patient?family:exact=muller")) == {"Müller"}
    assert names(search(fhir, "/Patient?family:contains=lli")) == {"Mullins"}
    assert names(search(fhir, "/Patient?name=mil,smi")) == {"Smith"}  # comma = OR
    assert search(fhir, "/Patient?name=zzz")["total"] == 0


def test_identifier_and_gender_tokens(fhir: Fhir, people: dict[str, str]) -> None:
    assert names(search(fhir, "/Patient?identifier=111")) == {"Müller", "Mullins"}
    assert names(search(fhir, "/Patient?identifier=" + quote("urn:mrn|111"))) == {"Müller"}
    assert names(search(fhir, "/Patient?identifier=" + quote("urn:mrn|"))) == {"Müller", "Smith"}
    assert names(search(fhir, "/Patient?gender=female")) == {"Müller", "Smith"}
    assert names(search(fhir, "/Patient?gender:not=female")) == {"Mullins"}
    assert names(search(fhir, "/Patient?gender=female&identifier=222")) == {"Smith"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("birthdate=1970", {"Müller", "Mullins"}),
        ("birthdate=1970-03", {"Müller"}),  # Mullins' "1970" is wider than March: not contained
        ("birthdate=eq1970-03-15", {"Müller"}),
        ("birthdate=ne1970-03-15", {"Mullins", "Smith"}),
        ("birthdate=gt1980", {"Smith"}),
        ("birthdate=lt1970-06-01", {"Müller", "Mullins"}),
        ("birthdate=le1970-03-14", {"Mullins"}),
        ("birthdate=ge1970-03-16", {"Mullins", "Smith"}),
        ("birthdate=ge1985-12-01T10:00:00Z", {"Smith"}),
        ("birthdate=gt1985-12-01T10:00:00Z", {"Smith"}),  # the day extends past 10:00
        ("birthdate=gt1985-12-01", set()),
        ("birthdate=ge1970-01-01&birthdate=lt1971-01-01", {"Müller", "Mullins"}),
        ("birthdate=1985-12-01", {"Smith"}),
    ],
)
def test_birthdate_prefixes_and_partial_dates(
    fhir: Fhir, people: dict[str, str], query: str, expected: set[str]
) -> None:
    assert names(search(fhir, "/Patient?" + query.replace("+", "%2B"))) == expected


def test_last_updated_and_id(fhir: Fhir, people: dict[str, str]) -> None:
    smith = search(fhir, f"/Patient?_id={people['Smith']}")
    assert names(smith) == {"Smith"}
    stamp = smith["entry"][0]["resource"]["meta"]["lastUpdated"]
    assert names(search(fhir, "/Patient?_lastUpdated=ge" + quote(stamp))) == {"Smith"}
    assert names(search(fhir, "/Patient?_lastUpdated=lt" + quote(stamp))) == {"Müller", "Mullins"}
    assert names(search(fhir, "/Patient?_lastUpdated=gt" + quote(stamp))) == set()
    assert names(search(fhir, "/Patient?_lastUpdated=eq" + quote(stamp))) == {"Smith"}
    assert search(fhir, "/Patient?_lastUpdated=gt2000-01-01")["total"] == 3
    assert search(fhir, "/Patient?_lastUpdated=lt2000")["total"] == 0
    both = f"{people['Smith']},{people['Mullins']}"
    assert names(search(fhir, f"/Patient?_id={both}")) == {"Smith", "Mullins"}


@pytest.fixture
def chart(fhir: Fhir, people: dict[str, str]) -> dict[str, Any]:
    ana, bob = people["Müller"], people["Mullins"]

    def obs(pid: str, code: str, when: str, cat: str = "vital-signs") -> str:
        return fhir.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": when,
                "valueQuantity": {"value": 70, "unit": "/min"},
            }
        )["id"]

    return {
        "hr_ana_2024": obs(ana, "8867-4", "2024-05-01T08:00:00Z"),
        "hr_ana_2025": obs(ana, "8867-4", "2025-01-10T08:00:00+02:00"),
        "bp_ana": obs(ana, "85354-9", "2025-02-01"),
        "lab_bob": obs(bob, "2345-7", "2025-03-01T09:30:00Z", cat="laboratory"),
        "cond_active": fhir.create(
            {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{ana}"},
                "clinicalStatus": {"coding": [{"system": CLIN, "code": "active"}]},
                "code": {"text": "asthma"},
            }
        )["id"],
        "cond_resolved": fhir.create(
            {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{ana}"},
                "clinicalStatus": {"coding": [{"system": CLIN, "code": "resolved"}]},
                "code": {"text": "flu"},
            }
        )["id"],
        "allergy": fhir.create(
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": f"Patient/{bob}"},
                "clinicalStatus": {"coding": [{"system": ALLERGY_CLIN, "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
            }
        )["id"],
        "med_active": fhir.create(
            {
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{ana}"},
                "medicationCodeableConcept": {"text": "salbutamol"},
            }
        )["id"],
        "med_stopped": fhir.create(
            {
                "resourceType": "MedicationRequest",
                "status": "stopped",
                "intent": "order",
                "subject": {"reference": f"Patient/{ana}"},
                "medicationCodeableConcept": {"text": "amoxicillin"},
            }
        )["id"],
        "ana": ana,
        "bob": bob,
    }


def test_observation_code_category_date_patient(fhir: Fhir, chart: dict[str, Any]) -> None:
    ana = chart["ana"]
    assert ids(search(fhir, f"/Observation?patient={ana}")) == {
        chart["hr_ana_2024"],
        chart["hr_ana_2025"],
        chart["bp_ana"],
    }
    assert ids(search(fhir, f"/Observation?subject=Patient/{ana}&code=8867-4")) == {
        chart["hr_ana_2024"],
        chart["hr_ana_2025"],
    }
    assert ids(search(fhir, "/Observation?code=" + quote(f"{LOINC}|2345-7"))) == {chart["lab_bob"]}
    assert ids(search(fhir, "/Observation?code=" + quote("http://other|2345-7"))) == set()
    assert ids(search(fhir, "/Observation?category=laboratory")) == {chart["lab_bob"]}
    assert ids(search(fhir, "/Observation?date=ge2025-01-01")) == {
        chart["hr_ana_2025"],
        chart["bp_ana"],
        chart["lab_bob"],
    }
    # 2025-01-10T08:00+02:00 is 06:00Z: time zones are honoured.
    assert ids(search(fhir, "/Observation?date=lt2025-01-10T07:00:00Z&date=gt2024-12-31")) == {
        chart["hr_ana_2025"]
    }
    assert ids(search(fhir, "/Observation?date=2024")) == {chart["hr_ana_2024"]}
    assert ids(search(fhir, f"/Observation?patient=Patient/{chart['bob']}&date=le2025-03-01")) == {
        chart["lab_bob"]
    }


def test_clinical_status_and_med_status(fhir: Fhir, chart: dict[str, Any]) -> None:
    ana = chart["ana"]
    assert ids(search(fhir, f"/Condition?patient={ana}&clinical-status=active")) == {chart["cond_active"]}
    assert ids(search(fhir, f"/Condition?patient={ana}")) == {chart["cond_active"], chart["cond_resolved"]}
    assert ids(search(fhir, f"/AllergyIntolerance?patient={chart['bob']}&clinical-status=active")) == {
        chart["allergy"]
    }
    assert ids(search(fhir, f"/AllergyIntolerance?patient={ana}")) == set()
    assert ids(search(fhir, f"/MedicationRequest?patient={ana}&status=active")) == {chart["med_active"]}
    assert ids(search(fhir, "/MedicationRequest?status=active,stopped")) == {
        chart["med_active"],
        chart["med_stopped"],
    }


def test_updates_reindex_and_deletes_leave_search(fhir: Fhir, chart: dict[str, Any]) -> None:
    cid = chart["cond_active"]
    body = fhir.get(f"/Condition/{cid}").json()
    body["clinicalStatus"]["coding"][0]["code"] = "resolved"
    assert fhir.put(f"/Condition/{cid}", body).status_code == 200
    assert ids(search(fhir, "/Condition?clinical-status=active")) == set()
    assert cid in ids(search(fhir, "/Condition?clinical-status=resolved"))
    fhir.delete(f"/Condition/{cid}")
    assert cid not in ids(search(fhir, "/Condition?clinical-status=resolved"))


def test_post_search_matches_get(fhir: Fhir, people: dict[str, str]) -> None:
    r = fhir.client.post(
        "/fhir/R4/Patient/_search", "family=mul", content_type="application/x-www-form-urlencoded"
    )
    assert r.status_code == 200
    assert names(r.json()) == {"Müller", "Mullins"}


def test_paging_follows_next_links_to_the_end_without_dupes_or_gaps(fhir: Fhir) -> None:
    made = {fhir.create(patient(family=f"Page{i:02d}"))["id"] for i in range(23)}
    fhir.create(patient(family="Other"))
    first = search(fhir, "/Patient?family=page&_count=5")
    assert first["total"] == 23 and len(first["entry"]) == 5
    seen: list[str] = []
    page: dict[str, Any] | None = first
    pages = 0
    while page is not None:
        pages += 1
        seen += [e["resource"]["id"] for e in page["entry"]]
        assert all(e["search"]["mode"] == "match" for e in page["entry"])
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        # Writes between pages must not shift the pages (keyset paging).
        if pages == 2:
            fhir.create(patient(family="Other2"))
        page = search(fhir, nxt[0].split("/fhir/R4", 1)[1]) if nxt else None
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23 and set(seen) == made


def test_count_default_max_and_zero(fhir: Fhir, settings: Any) -> None:
    for i in range(25):
        fhir.create(patient(family=f"C{i}"))
    assert len(search(fhir, "/Patient")["entry"]) == 20
    settings.OMNICARE_PAGE_MAX = 7
    assert len(search(fhir, "/Patient?_count=500")["entry"]) == 7
    zero = search(fhir, "/Patient?_count=0")
    assert zero["total"] == 25 and zero.get("entry", []) == []
    assert "total" not in search(fhir, "/Patient?_total=none")


def test_encounter_careteam_practitioner_docs(fhir: Fhir, people: dict[str, str]) -> None:
    ana = people["Müller"]
    doc = fhir.create(
        {"resourceType": "Practitioner", "name": [{"family": "Dóe"}], "identifier": [{"value": "P1"}]}
    )
    enc = fhir.create(
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{ana}"},
            "period": {"start": "2025-04-01T10:00:00Z"},
        }
    )
    team = fhir.create(
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{ana}"},
            "participant": [{"member": {"reference": f"Practitioner/{doc['id']}"}}],
        }
    )
    note = fhir.create(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{ana}"},
            "date": "2025-04-01T11:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}],
        }
    )
    assert ids(search(fhir, "/Practitioner?name=doe")) == {doc["id"]}
    assert ids(search(fhir, f"/Encounter?patient={ana}&status=in-progress")) == {enc["id"]}
    # An open-ended period is ongoing: it matches any later date.
    assert ids(search(fhir, "/Encounter?date=ge2030-01-01")) == {enc["id"]}
    assert ids(search(fhir, "/Encounter?date=lt2025-04-01")) == set()
    assert ids(search(fhir, f"/CareTeam?participant=Practitioner/{doc['id']}")) == {team["id"]}
    assert ids(search(fhir, f"/DocumentReference?patient={ana}&date=2025-04-01")) == {note["id"]}


def test_search_bundle_links_are_absolute_and_entries_have_fullurl(
    fhir: Fhir, people: dict[str, str]
) -> None:
    b = search(fhir, "/Patient?family=smith")
    assert b["link"][0] == {"relation": "self", "url": "http://testserver/fhir/R4/Patient?family=smith"}
    assert b["entry"][0]["fullUrl"] == f"http://testserver/fhir/R4/Patient/{people['Smith']}"


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated", "_id", "-_id"])
def test_sorted_paging_visits_everything_in_order(fhir: Fhir, sort: str) -> None:
    made = [fhir.create(patient(family=f"Sort{i}")) for i in range(7)]
    # An update moves a resource to the end of _lastUpdated order.
    moved = made[0]
    fhir.put(f"/Patient/{moved['id']}", patient(family="Sort0", id=moved["id"]))
    url: str | None = f"/Patient?family=sort&_count=3&_sort={sort}"
    seen: list[dict[str, Any]] = []
    while url:
        page = search(fhir, url)
        seen += [e["resource"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = nxt[0].split("/fhir/R4", 1)[1] if nxt else None
    key = (lambda r: r["meta"]["lastUpdated"]) if "lastUpdated" in sort else (lambda r: r["id"])
    assert [r["id"] for r in seen] == [r["id"] for r in sorted(seen, key=key, reverse=sort.startswith("-"))]
    assert len(seen) == 7 and {r["id"] for r in seen} == {m["id"] for m in made}
    if sort == "-_lastUpdated":
        assert seen[0]["id"] == moved["id"]


def test_unsupported_sort_ignored_unless_strict_and_summary_count(fhir: Fhir, people: dict[str, str]) -> None:
    assert search(fhir, "/Patient?_sort=birthdate")["total"] == 3
    assert fhir.get("/Patient?_sort=birthdate", HTTP_PREFER="handling=strict").status_code == 400
    counted = search(fhir, "/Patient?_summary=count")
    assert counted["total"] == 3 and counted.get("entry", []) == []
