"""Search semantics checked against an independent model: partial dates as SETS OF DAYS, not bounds."""

from __future__ import annotations

import calendar
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnicare.fhir.search import normalize, parse_reference

from .conftest import Fhir, patient

pytestmark = pytest.mark.django_db

BIRTHDATES = [
    "1969",
    "1970",
    "1970-02",
    "1970-02-28",
    "1970-03-01",
    "1970-12-31",
    "1971-01",
    "1999-06-15",
    "2000",
]


def days(value: str) -> set[int]:
    """Every calendar day a FHIR date of any precision covers, as ordinals."""
    parts = [int(p) for p in value.split("-")]
    if len(parts) == 3:
        return {date(*parts).toordinal()}
    year = parts[0]
    months = [parts[1]] if len(parts) == 2 else list(range(1, 13))
    return {
        date(year, m, d).toordinal() for m in months for d in range(1, calendar.monthrange(year, m)[1] + 1)
    }


def matches(prefix: str, resource: set[int], search: set[int]) -> bool:
    """FHIR R4 §3.1.1.4.3 prefixes, phrased over day sets."""
    return {
        "eq": resource <= search,
        "ne": not resource <= search,
        "gt": max(resource) > max(search),
        "ge": max(resource) >= min(search),
        "lt": min(resource) < min(search),
        "le": min(resource) <= max(search),
    }[prefix]


query_dates = st.one_of(
    st.sampled_from(["1969", "1970", "1971", "2000"]),
    st.builds(lambda y, m: f"{y}-{m:02d}", st.sampled_from([1969, 1970, 1971, 1999]), st.integers(1, 12)),
    st.dates(min_value=date(1968, 12, 1), max_value=date(2001, 1, 31)).map(date.isoformat),
)


@pytest.fixture
def cohort(fhir: Fhir) -> dict[str, str]:
    return {fhir.create(patient(family="Cohort", birthDate=b))["id"]: b for b in BIRTHDATES}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), value=query_dates)
def test_birthdate_prefixes_agree_with_the_day_set_model(
    fhir: Fhir, cohort: dict[str, str], prefix: str, value: str
) -> None:
    got = {
        e["resource"]["id"]
        for e in fhir.get(f"/Patient?birthdate={prefix}{value}&_count=100").json()["entry"]
    }
    expected = {pid for pid, b in cohort.items() if matches(prefix, days(b), days(value))}
    assert got == expected, (prefix, value)


@given(st.text(alphabet=st.characters(categories=("L",)), min_size=1, max_size=12))
def test_normalize_is_idempotent_and_accent_free(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.casefold()


def test_normalize_examples() -> None:
    assert normalize("  Müller ") == "muller"
    assert normalize("ŽOË") == "zoe"
    assert normalize("Dvořák") == "dvorak"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", ("Patient", "123")),
        ("https://example.org/fhir/Patient/abc", ("Patient", "abc")),
        ("Patient/1/_history/4", ("Patient", "1")),
        ("#contained", None),
        ("urn:uuid:1234", None),
        ("", None),
        ("justanid", None),
    ],
)
def test_parse_reference(ref: str, expected: Any) -> None:
    assert parse_reference(ref) == expected
