"""FHIR R4 REST router, mounted at /fhir/R4. Views only translate HTTP ↔ the request's store.

Every interaction goes through one :class:`repository.FhirStore` per request, which owns the access check,
the fail-closed audit record and the write's hooks; here are status codes, headers and OperationOutcomes.

Bodies are read raw (not through ninja schemas) so that the FHIR error rules apply: 415 for a wrong content
type, 413 above OMNICARE_MAX_BODY_BYTES (checked before reading), 400 for malformed JSON, 422 for invalid
resources. Unsupported methods on a known path get a 405 OperationOutcome instead of Django's bare 405.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.http import http_date
from ninja import Router

from omnicare.access.auth import api_auth
from omnicare.core.errors import (
    FHIR_JSON,
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)

from . import services as svc
from .bundles import parse_if_match
from .capability import capability_statement
from .models import Resource, ResourceVersion
from .repository import FhirStore
from .validation import check_type, parse_json

router = Router(tags=["fhir"], auth=api_auth)

JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
# Accepted but not yet implemented: they 405 with an outcome rather than a bare Django page.
OTHER_METHODS = ["PATCH", "HEAD", "OPTIONS"]


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/fhir/R4")


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False) if body is not None else b"",
        status=status,
        content_type=FHIR_JSON + "; charset=utf-8",
    )
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def version_headers(row: Resource | ResourceVersion) -> dict[str, str]:
    return {"ETag": f'W/"{row.version_id}"', "Last-Modified": http_date(row.last_updated.timestamp())}


def read_body(request: HttpRequest) -> Any:
    """The request's JSON body, after the size and content-type checks."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.OMNICARE_MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body exceeds {settings.OMNICARE_MAX_BODY_BYTES} bytes")
    if (request.content_type or "").lower() not in JSON_TYPES:
        raise UnsupportedMediaType("Content-Type must be application/fhir+json or application/json")
    raw = request.body
    if len(raw) > settings.OMNICARE_MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body exceeds {settings.OMNICARE_MAX_BODY_BYTES} bytes")
    return parse_json(raw)


def _prefer(request: HttpRequest) -> set[str]:
    return {
        p.strip().lower()
        for p in request.headers.get("Prefer", "").split(";")
        for p in p.split(",")
        if p.strip()
    }


def write_response(request: HttpRequest, result: svc.WriteResult) -> HttpResponse:
    v = result.version
    assert v is not None
    headers = version_headers(v)
    if result.created:
        headers["Location"] = f"{base_url(request)}/{v.resource_type}/{v.resource_id}/_history/{v.version_id}"
    prefer = _prefer(request)
    body = None if "return=minimal" in prefer else v.body
    return fhir_response(body, status=201 if result.created else 200, headers=headers)


def _not_allowed(request: HttpRequest, **_: Any) -> HttpResponse:
    raise MethodNotAllowed(f"{request.method} is not supported on this path")


def _history_bundle(request: HttpRequest, page: svc.HistoryPage, path: str) -> HttpResponse:
    base = base_url(request)
    entries = []
    for v in page.versions:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{v.resource_type}/{v.resource_id}"}
        if v.deleted:
            entry["request"] = {"method": "DELETE", "url": f"{v.resource_type}/{v.resource_id}"}
            entry["response"] = {
                "status": "204 No Content",
                "etag": f'W/"{v.version_id}"',
                "lastModified": v.body["meta"]["lastUpdated"],
            }
        else:
            entry["resource"] = v.body
            method, url = (
                ("POST", v.resource_type)
                if v.version_id == 1
                else ("PUT", f"{v.resource_type}/{v.resource_id}")
            )
            entry["request"] = {"method": method, "url": url}
            entry["response"] = {
                "status": "201 Created" if v.version_id == 1 else "200 OK",
                "etag": f'W/"{v.version_id}"',
                "lastModified": v.body["meta"]["lastUpdated"],
            }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": svc.new_id(), "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    links = [
        {
            "relation": "self",
            "url": base
            + path
            + ("?" + request.META["QUERY_STRING"] if request.META.get("QUERY_STRING") else ""),
        }
    ]
    if page.next_before_seq is not None:
        q = request.GET.copy()
        q["_before"] = str(page.next_before_seq)
        links.append({"relation": "next", "url": f"{base}{path}?{q.urlencode()}"})
    bundle["link"] = links
    bundle["entry"] = entries
    return fhir_response(bundle)


def _history(
    request: HttpRequest, resource_type: str | None, resource_id: str | None, path: str
) -> HttpResponse:
    before = request.GET.get("_before")
    try:
        before_seq = int(before) if before else None
    except ValueError as exc:
        raise BadRequest("Invalid _before", expression=["_before"]) from exc
    page = FhirStore.for_request(request).history(
        resource_type, resource_id, count=svc.page_size(request.GET.get("_count")),
        since=request.GET.get("_since"), before_seq=before_seq,
    )
    return _history_bundle(request, page, path)


def _search(request: HttpRequest, resource_type: str, params: list[tuple[str, str]]) -> HttpResponse:
    bundle = FhirStore.for_request(request).search(
        resource_type, params, base_url=base_url(request), strict="handling=strict" in _prefer(request)
    )
    return fhir_response(bundle)


def _query_pairs(qd: Any) -> list[tuple[str, str]]:
    return [(k, v) for k in qd for v in qd.getlist(k)]


# ---- system level ---------------------------------------------------------------------------------------------


@router.get("/metadata", auth=None, include_in_schema=True)
def metadata(request: HttpRequest) -> HttpResponse:
    """The CapabilityStatement (no authentication, as FHIR clients expect)."""
    return fhir_response(capability_statement(base_url=base_url(request)))


@router.api_operation(
    ["POST", "PUT", "DELETE", *OTHER_METHODS], "/metadata", auth=None, include_in_schema=False
)
def metadata_other(request: HttpRequest) -> HttpResponse:
    return _not_allowed(request)


@router.post("/")
def system_bundle(request: HttpRequest) -> HttpResponse:
    """Transaction or batch Bundle."""
    return fhir_response(FhirStore.for_request(request).bundle(read_body(request), base_url=base_url(request)))


@router.post("", include_in_schema=False)
def system_bundle_no_slash(request: HttpRequest) -> HttpResponse:
    """Same as ``POST /fhir/R4/``: clients differ on the trailing slash of the base URL."""
    return system_bundle(request)


@router.api_operation(["GET", "PUT", "DELETE", *OTHER_METHODS], "/", include_in_schema=False)
def system_other(request: HttpRequest) -> HttpResponse:
    return _not_allowed(request)


@router.get("/_history")
def system_history(request: HttpRequest) -> HttpResponse:
    return _history(request, None, None, "/_history")


# ---- type level -------------------------------------------------------------------------------------------------


@router.get("/{resource_type}/_history")
def type_history(request: HttpRequest, resource_type: str) -> HttpResponse:
    check_type(resource_type)
    return _history(request, resource_type, None, f"/{resource_type}/_history")


@router.post("/{resource_type}/_search")
def search_post(request: HttpRequest, resource_type: str) -> HttpResponse:
    """Search with form-encoded parameters (plus any in the query string)."""
    check_type(resource_type)
    ctype = (request.content_type or "").lower()
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise UnsupportedMediaType("_search takes application/x-www-form-urlencoded")
    return _search(request, resource_type, _query_pairs(request.GET) + _query_pairs(request.POST))


@router.get("/{resource_type}")
def search_get(request: HttpRequest, resource_type: str) -> HttpResponse:
    check_type(resource_type)
    return _search(request, resource_type, _query_pairs(request.GET))


@router.post("/{resource_type}")
def create(request: HttpRequest, resource_type: str) -> HttpResponse:
    check_type(resource_type)
    return write_response(request, FhirStore.for_request(request).create(resource_type, read_body(request)))


@router.api_operation(["PUT", "DELETE", *OTHER_METHODS], "/{resource_type}", include_in_schema=False)
def type_other(request: HttpRequest, resource_type: str) -> HttpResponse:
    check_type(resource_type)
    return _not_allowed(request)


# ---- instance level ----------------------------------------------------------------------------------------------


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(request: HttpRequest, resource_type: str, resource_id: str, version_id: str) -> HttpResponse:
    try:
        vid = int(version_id)
    except ValueError as exc:
        raise BadRequest("Invalid version id") from exc
    v = FhirStore.for_request(request).vread(resource_type, resource_id, vid)
    return fhir_response(v.body, headers=version_headers(v))


@router.get("/{resource_type}/{resource_id}/_history")
def instance_history(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    return _history(request, resource_type, resource_id, f"/{resource_type}/{resource_id}/_history")


@router.get("/{resource_type}/{resource_id}")
def read(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    row = FhirStore.for_request(request).read(resource_type, resource_id)
    headers = version_headers(row)
    if request.headers.get("If-None-Match", "").strip() == headers["ETag"]:
        return fhir_response(None, status=304, headers=headers)  # the client's copy is current
    return fhir_response(row.body, headers=headers)


@router.put("/{resource_type}/{resource_id}")
def update(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    body = read_body(request)
    result = FhirStore.for_request(request).update(
        resource_type, resource_id, body, if_match=parse_if_match(request.headers.get("If-Match"))
    )
    return write_response(request, result)


@router.delete("/{resource_type}/{resource_id}")
def delete(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    result = FhirStore.for_request(request).delete(
        resource_type, resource_id, if_match=parse_if_match(request.headers.get("If-Match"))
    )
    headers = {"ETag": f'W/"{result.version.version_id}"'} if result.version else {}
    return fhir_response(None, status=204, headers=headers)


@router.api_operation(["POST", *OTHER_METHODS], "/{resource_type}/{resource_id}", include_in_schema=False)
def instance_other(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    return _not_allowed(request)


# ---- other methods on history paths: a 405 OperationOutcome, not Django's bare HTML 405 (found by schemathesis) --


@router.api_operation(["POST", "PUT", "DELETE", *OTHER_METHODS], "/_history", include_in_schema=False)
def system_history_other(request: HttpRequest) -> HttpResponse:
    return _not_allowed(request)


@router.api_operation(["POST", "PUT", "DELETE", *OTHER_METHODS], "/{resource_type}/_history", include_in_schema=False)
def type_history_other(request: HttpRequest, resource_type: str) -> HttpResponse:
    check_type(resource_type)
    return _not_allowed(request)


@router.api_operation(["POST", "PUT", "DELETE", *OTHER_METHODS], "/{resource_type}/{resource_id}/_history",
                      include_in_schema=False)
def instance_history_other(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    return _not_allowed(request)


@router.api_operation(["POST", "PUT", "DELETE", *OTHER_METHODS], "/{resource_type}/{resource_id}/_history/{version_id}",
                      include_in_schema=False)
def vread_other(request: HttpRequest, resource_type: str, resource_id: str, version_id: str) -> HttpResponse:
    check_type(resource_type)
    return _not_allowed(request)
