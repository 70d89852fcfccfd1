"""Whatever a client sends, the answer is a FHIR response and never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Fhir, outcome_of

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
# Resource-shaped junk: real element names with values of any shape.
elements = st.sampled_from(
    ["name", "birthDate", "gender", "identifier", "meta", "id", "extension", "active", "x"]
)
resources = st.dictionaries(elements, json_values, max_size=4).map(lambda d: {"resourceType": "Patient", **d})
settings_ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings_
@given(body=st.one_of(json_values, resources))
def test_create_with_any_json_is_201_or_a_4xx_outcome(fhir: Fhir, body: Any) -> None:
    r = fhir.post("/Patient", json.dumps(body))
    assert r.status_code == 201 or 400 <= r.status_code < 500, (r.status_code, r.content[:300])
    if r.status_code != 201:
        outcome_of(r)


@settings_
@given(raw=st.binary(max_size=64))
def test_any_bytes_are_a_4xx(fhir: Fhir, raw: bytes) -> None:
    r = fhir.post("/", raw)
    assert 400 <= r.status_code < 500 or r.status_code == 200, r.content[:300]


@settings_
@given(
    key=st.sampled_from(
        ["name", "birthdate", "identifier", "_lastUpdated", "_count", "_cursor", "_sort", "gender"]
    ),
    modifier=st.sampled_from(["", ":exact", ":contains", ":not", ":missing", ":Patient"]),
    value=st.text(max_size=20),
)
def test_any_search_value_is_200_or_400(fhir: Fhir, key: str, modifier: str, value: str) -> None:
    r = fhir.client.get("/fhir/R4/Patient", {key + modifier: value})
    assert r.status_code in (200, 400), (key, modifier, value, r.content[:300])


@pytest.mark.parametrize(
    "path",
    [
        "/Patient?_cursor=99999999999999999999999999",
        "/Patient?_cursor=-5",
        "/Patient?_sort=_lastUpdated&_cursor=99999999999999999999999.1",
        "/Patient/x/_history/99999999999999999999999",
        "/Patient/_history?_before=99999999999999999999999",
        "/Patient?_count=99999999999999999999999",
        "/Patient?birthdate=ge99999",
        "/Patient?_lastUpdated=gt0001-01-01",
        "/Patient?_lastUpdated=lt9999-12-31",
    ],
)
def test_out_of_range_numbers_are_not_500(fhir: Fhir, path: str) -> None:
    r = fhir.get(path)
    assert r.status_code in (200, 400, 404), (path, r.content[:300])


@pytest.mark.parametrize(
    "value", ["9999", "9999-12", "9999-12-31", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
)
def test_extreme_dates_are_stored_and_searchable(fhir: Fhir, value: str) -> None:
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectiveDateTime": value,
    }
    r = fhir.post("/Observation", obs)
    assert r.status_code in (201, 422), r.content[:300]
    s = fhir.client.get("/fhir/R4/Observation", {"date": "ge" + value})
    assert s.status_code in (200, 400), s.content[:300]
