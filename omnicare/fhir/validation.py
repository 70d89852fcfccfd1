"""Structural validation with ``fhir.resources.R4B`` (wire-compatible with R4 for the types we serve).

We validate but never store the validated model: the original JSON is stored, so unknown elements and
extensions survive byte-for-byte. FHIR lets servers keep elements they do not know; fhir.resources forbids
extra fields, so "extra_forbidden" errors are dropped and everything else (wrong types, bad codes/dates,
missing required elements) is reported as 422 with the element paths (never the values: they may be PHI).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from omnicare.core.errors import BadRequest, NotFound, Unprocessable
from omnicare.core.jsonbody import json_body_loads

from . import fhircore_plans, r4
from .search import SUPPORTED_TYPES, walk

fhircore_plans.install()  # fhir_core's per-element checks with their per-class part computed once (see there)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_ISSUES = 20


def check_type(resource_type: str) -> None:
    if resource_type not in SUPPORTED_TYPES:
        raise NotFound(f"Resource type {resource_type[:64]!r} is not supported", code="not-supported")


def check_id(resource_id: str) -> None:
    if not ID_RE.match(resource_id):
        raise BadRequest("Invalid resource id (expected [A-Za-z0-9-.]{1,64})", expression=["id"])


def parse_json(raw: bytes) -> Any:
    """Decode a request body; malformed, too deep, NUL or lone-surrogate JSON is a 400 (``core.jsonbody``)."""
    return json_body_loads(raw)


def validate_resource(body: Any, *, expected_type: str | None = None) -> str:
    """Check ``body`` is a structurally valid resource of a supported type; return its type."""
    if not isinstance(body, dict):
        raise BadRequest("Body must be a JSON object", code="structure")
    resource_type = body.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("Missing resourceType", code="structure", expression=["resourceType"])
    if expected_type is not None and resource_type != expected_type:
        raise BadRequest(
            f"resourceType {resource_type[:64]!r} does not match the URL ({expected_type})",
            code="invalid",
            expression=["resourceType"],
        )
    if resource_type not in SUPPORTED_TYPES:
        raise BadRequest(f"Resource type {resource_type[:64]!r} is not supported", code="not-supported")
    if "id" in body and (not isinstance(body["id"], str) or not ID_RE.match(body["id"])):
        raise BadRequest("Invalid resource id", expression=["id"])
    model = _model_class(resource_type)
    if model is not None:
        _validate_structure(model, body, resource_type)
    check_bindings(body, resource_type)
    return resource_type


@cache
def _model_class(resource_type: str) -> Any:
    """The fhir.resources model (looked up once per type: the lookup was ~12 % of validation), or None for an
    R4 type that R4B dropped (e.g. MedicinalProduct): bindings only."""
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def check_bindings(body: dict[str, Any], resource_type: str) -> None:
    """Every ``code`` element with a required binding holds a code of its value set (official R4 value sets,
    ``r4.required_bindings``); otherwise 400 naming the element. The value itself is not echoed."""
    bad: list[str] = []
    for path, url in r4.required_bindings(resource_type):
        allowed = r4.valueset_codes(url)
        for value in walk(body, path):
            if not isinstance(value, str) or value not in allowed:
                bad.append(f"{resource_type}.{path}")
                break
    if bad:
        raise BadRequest(
            "Code not in the required value set: " + ", ".join(bad[:MAX_ISSUES]),
            code="code-invalid",
            expression=bad[:MAX_ISSUES],
        )


def _validate_structure(model: Any, body: dict[str, Any], resource_type: str) -> None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        problems = [e for e in exc.errors() if e.get("type") != "extra_forbidden"]
        if problems:
            where = []
            for err in problems[:MAX_ISSUES]:
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__") or resource_type
                where.append(f"{resource_type}.{loc}" if loc != resource_type else loc)
            msgs = "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, problems, strict=False))
            raise Unprocessable(
                f"Invalid {resource_type}: {msgs}", code="structure", expression=where
            ) from exc
    except (ValueError, TypeError) as exc:  # fhir.resources root validators raise these directly at times
        raise Unprocessable(f"Invalid {resource_type}", code="structure") from exc
