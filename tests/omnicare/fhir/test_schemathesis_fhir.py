"""API fuzzing with schemathesis over FHIR REST (/fhir/R4), from a hand-written OpenAPI description.

The FHIR router reads bodies raw (FHIR's own error rules), so ninja's generated schema says nothing useful
about it; this module describes the interactions we serve — search with the real parameters, read, vread,
history at three levels, create, update, delete, transaction/batch — with bodies shaped like resources
(including NUL strings and bad dates; deep nesting and lone surrogates have their own tests in
tests/omnicare/core/test_bad_input.py). Bounded (``MAX_EXAMPLES`` per
operation). Properties: no 5xx; every error is an OperationOutcome; a rejected request writes nothing.
Runs beside ``tests/omnicare/sync/test_schemathesis.py`` (sync, audit, access).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import row_counts

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

MAX_EXAMPLES = 12
TYPES = ["Patient", "Observation", "Encounter", "Condition", "CareTeam", "Communication", "Practitioner"]
ID = {"type": "string", "maxLength": 70}
SEARCH_PARAMS = ["name", "family", "birthdate", "identifier", "gender", "_id", "_count", "_sort", "_cursor",
                 "_lastUpdated", "_total", "_summary", "patient", "subject", "code", "status", "date"]

_element: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "maxLength": 20},
        {"type": "string", "enum": ["a\u0000b", "1950-13-40", "Patient/p1", "x" * 70]},
        {"type": "integer"},
        {"type": "boolean"},
        {"type": "array", "maxItems": 2, "items": {"type": "object", "maxProperties": 2}},
        {"type": "object", "maxProperties": 3},
    ]
}
RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"type": "string", "enum": [*TYPES, "Bundle", "Nope"]},
        "id": ID,
        "name": _element, "status": _element, "subject": _element, "code": _element, "birthDate": _element,
        "meta": _element, "extension": _element, "participant": _element, "valueQuantity": _element,
    },
}
BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["transaction", "batch", "searchset", "x"]},
        "entry": {"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
            "fullUrl": {"type": "string", "maxLength": 40},
            "resource": RESOURCE,
            "request": {"type": "object", "properties": {
                "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE", "PATCH"]},
                "url": {"type": "string", "maxLength": 60}}},
        }}},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/fhir+json": {"schema": schema}}}


def _path(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": TYPES} if name == "type" else ID
    return {"name": name, "in": "path", "required": True, "schema": schema}


_ok = {"default": {"description": "FHIR resource or OperationOutcome"}}
SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "OmniCare FHIR R4 (hand-written for fuzzing)", "version": "1"},
    "paths": {
        "/fhir/R4/{type}": {
            "get": {"parameters": [_path("type")] + [
                {"name": p, "in": "query", "required": False, "schema": {"type": "string", "maxLength": 30}}
                for p in SEARCH_PARAMS], "responses": _ok},
            "post": {"parameters": [_path("type")], "requestBody": _body(RESOURCE), "responses": _ok},
        },
        "/fhir/R4/{type}/{id}": {
            "get": {"parameters": [_path("type"), _path("id")], "responses": _ok},
            "put": {"parameters": [_path("type"), _path("id")], "requestBody": _body(RESOURCE), "responses": _ok},
            "delete": {"parameters": [_path("type"), _path("id")], "responses": _ok},
        },
        "/fhir/R4/{type}/{id}/_history": {"get": {"parameters": [_path("type"), _path("id")], "responses": _ok}},
        "/fhir/R4/{type}/{id}/_history/{vid}": {
            "get": {"parameters": [_path("type"), _path("id"), _path("vid")], "responses": _ok}},
        "/fhir/R4/{type}/_history": {"get": {"parameters": [_path("type"), {
            "name": "_since", "in": "query", "required": False, "schema": {"type": "string"}}], "responses": _ok}},
        "/fhir/R4/_history": {"get": {"parameters": [{"name": "_before", "in": "query", "required": False,
                                                       "schema": {"type": "string"}}], "responses": _ok}},
        "/fhir/R4/": {"post": {"requestBody": _body(BUNDLE), "responses": _ok}},
    },
}

schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture
def fuzz_client(api: Any) -> Any:
    from omnicare.fhir.services import resources_import

    resources_import(resources=[
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Lefèvre"}], "birthDate": "1950-01-02"},
        {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "weight"},
         "subject": {"reference": "Patient/p1"}},
    ])
    return api


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_fhir_no_5xx_errors_are_outcomes_and_rejections_write_nothing(case: Any, fuzz_client: Any) -> None:
    method = case.method.lower()
    if method not in ("get", "post", "put", "delete"):
        return
    before = row_counts()
    path = case.formatted_path
    query = {k: v for k, v in (case.query or {}).items() if v is not None}
    body = getattr(case, "body", None)
    kwargs: dict[str, Any] = {}
    if body is not None and type(body).__name__ != "NotSet":
        data = json.dumps(body) if not isinstance(body, (bytes, str)) else body
        kwargs = {"data": data, "content_type": "application/fhir+json"}
    if method == "get":
        r = fuzz_client.get(path, query)
    else:
        r = getattr(fuzz_client, method)(path, **kwargs)
    assert r.status_code < 500, (case.method, path, query, kwargs, r.content[:500])
    if r.status_code >= 400:
        assert r["Content-Type"].startswith("application/fhir+json"), (case.method, path, r.status_code, r.content[:200])
        assert r.json()["resourceType"] == "OperationOutcome", r.content[:300]
        assert row_counts() == before, (case.method, path, r.status_code)
