"""Searches of a shape seen before run SQL compiled once (omnicare/fhir/sqlcache.py): they must find exactly what
the ORM finds for their own values, whatever values the shape was first compiled with."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from omnicare.fhir import sqlcache
from omnicare.fhir.search import build_query

from .conftest import Fhir, patient

pytestmark = pytest.mark.django_db


def found(fhir: Fhir, rtype: str, params: list[tuple[str, str]]) -> list[str]:
    r = fhir.get(f"/{rtype}?{urlencode(params)}")
    assert r.status_code == 200, r.content
    return [e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def orm(rtype: str, params: list[tuple[str, str]]) -> list[str]:
    return list(build_query(rtype, params).queryset.order_by("pk").values_list("resource_id", flat=True))


@pytest.fixture
def people(fhir: Fhir) -> dict[str, str]:
    made = {
        "Müller": patient(family="Müller", given="Ana", identifier=[{"system": "urn:mrn", "value": "111"}]),
        "Mullins": patient(family="Mullins", given="Bob", identifier=[{"system": "urn:ssn", "value": "111"}]),
        "Smith": patient(family="Smith", given="Mu_ge", identifier=[{"system": "urn:mrn", "value": "222"}]),
        "Sm%th": patient(family="Sm%th", given="Eve", identifier=[{"system": "", "value": "333"}]),
    }
    return {k: fhir.create(v)["id"] for k, v in made.items()}


# Each group is one shape with different values: the first compiles it, the others reuse the SQL.
SHAPES: list[list[list[tuple[str, str]]]] = [
    [[("name", "smi")], [("name", "mul")], [("name", "%")], [("name", "sm%")], [("name", "mu_")], [("name", "_")]],
    [[("name:exact", "smith")], [("name:exact", "müller")], [("name:exact", "sm%th")]],
    [[("name:contains", "ll")], [("name:contains", "%")], [("name:contains", "u_g")]],
    [[("identifier", "urn:mrn|111")], [("identifier", "urn:ssn|111")], [("identifier", "urn:mrn|222")]],
    [[("identifier", "111")], [("identifier", "222")], [("identifier", "nope")]],
    [[("identifier", "|333")], [("identifier", "|111")]],
    [[("identifier", "urn:mrn|")], [("identifier", "urn:ssn|")]],
    [[("identifier:not", "111")], [("identifier:not", "222")]],
    [[("name", "mul,smi")], [("name", "eve,ana")]],
    [[("name", "mul"), ("identifier", "111")], [("name", "smi"), ("identifier", "111")]],
]


@pytest.mark.parametrize("group", SHAPES, ids=lambda g: "&".join(k for k, _ in g[0]))
def test_a_search_finds_what_the_orm_finds_for_its_own_values(fhir: Fhir, people: dict[str, str],
                                                             group: list[list[tuple[str, str]]]) -> None:
    sqlcache._CACHE.clear()
    for params in group:
        assert found(fhir, "Patient", params + [("_count", "50")]) == orm("Patient", params), params
    assert any(sqlcache._CACHE.values()), "the shape was compiled (not left to the ORM)"


def test_like_wildcards_in_a_value_match_themselves_only(fhir: Fhir, people: dict[str, str]) -> None:
    sqlcache._CACHE.clear()
    assert found(fhir, "Patient", [("name", "smi")]) == [people["Smith"]]
    assert found(fhir, "Patient", [("name", "%")]) == []  # not "everyone"
    assert found(fhir, "Patient", [("name", "sm%")]) == [people["Sm%th"]]
    assert found(fhir, "Patient", [("name", "mu_")]) == [people["Smith"]]  # the given name Mu_ge, not Müller


def test_ids_references_and_the_page_size_keep_their_meaning(fhir: Fhir, people: dict[str, str]) -> None:
    sqlcache._CACHE.clear()
    obs: list[str] = []
    for who in ("Müller", "Smith", "Smith"):
        body: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                "subject": {"reference": f"Patient/{people[who]}"}}
        obs.append(fhir.create(body)["id"])
    assert found(fhir, "Observation", [("subject", f"Patient/{people['Smith']}")]) == obs[1:]
    assert found(fhir, "Observation", [("subject", f"Patient/{people['Müller']}")]) == obs[:1]
    assert found(fhir, "Observation", [("patient", people["Smith"])]) == obs[1:]
    assert found(fhir, "Observation", [("patient", people["Müller"])]) == obs[:1]
    assert found(fhir, "Patient", [("_id", f"{people['Smith']},{people['Mullins']}")]) == sorted(
        [people["Smith"], people["Mullins"]], key=list(people.values()).index)
    assert found(fhir, "Patient", [("_id", f"{people['Müller']},{people['Sm%th']}")]) == [people["Müller"], people["Sm%th"]]
    r = fhir.get(f"/Observation?patient={people['Smith']}&_count=1").json()
    assert r["total"] == 2 and len(r["entry"]) == 1 and any(link["relation"] == "next" for link in r["link"])
    r = fhir.get(f"/Observation?patient={people['Müller']}&_count=1").json()
    assert r["total"] == 1 and not any(link["relation"] == "next" for link in r["link"])
