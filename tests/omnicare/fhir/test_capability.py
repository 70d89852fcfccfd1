"""The CapabilityStatement is generated from the search table: everything advertised works."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from omnicare.fhir.search import SUPPORTED_TYPES

from .conftest import Fhir

pytestmark = pytest.mark.django_db

SAMPLE = {"token": "x", "string": "x", "date": "ge2020-01-01", "reference": "Patient/x", "uri": "http://x.org/y"}


def test_metadata_is_a_valid_capability_statement(fhir: Fhir) -> None:
    r = fhir.get("/metadata")
    assert r.status_code == 200 and r["Content-Type"].startswith("application/fhir+json")
    body = r.json()
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1"
    types = {res["type"] for res in body["rest"][0]["resource"]}
    assert types == set(SUPPORTED_TYPES)
    assert {"transaction", "batch"} <= {i["code"] for i in body["rest"][0]["interaction"]}


# Every parameter of these types is tried; for the other ~130 R4 types, the first parameter of each kind (all
# come from the same compiled table, so one per kind and type exercises every code path at 1/4 of the cost).
FULLY_CHECKED = {"Patient", "Observation", "Immunization", "Procedure", "DiagnosticReport", "MedicationRequest",
                 "Encounter", "Condition", "AllergyIntolerance", "Appointment", "Organization", "Location"}


def test_every_advertised_search_param_is_accepted_strictly(fhir: Fhir) -> None:
    body: dict[str, Any] = fhir.get("/metadata").json()
    checked = 0
    for res in body["rest"][0]["resource"]:
        kinds: set[str] = set()
        for param in res["searchParam"]:
            if res["type"] not in FULLY_CHECKED and param["name"] not in ("_id", "_lastUpdated"):
                if param["type"] in kinds:
                    continue
                kinds.add(param["type"])
            r = fhir.get(
                f"/{res['type']}?{param['name']}={SAMPLE[param['type']]}", HTTP_PREFER="handling=strict"
            )
            assert r.status_code == 200, (res["type"], param["name"], r.content)
            checked += 1
    assert checked > 600
