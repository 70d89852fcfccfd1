"""FHIR R4 REST router, mounted at /fhir/R4. Views only translate HTTP ↔ service calls.

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
from omnicare.audit.services import append_events
from omnicare.audit.trail import audited, bundle_entry_events, compartment_of
from omnicare.core.errors import (
    FHIR_JSON,
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)

from . import services as svc
from .bundles import (
    _parse_if_match,
    bundle_process,  # bundles builds on services; services never imports it back
)
from .capability import capability_statement
from .models import Resource, ResourceVersion
from .search import compartment_patients
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
    with audited(
        user=request.user, action="history", resource_type=resource_type or "", resource_id=resource_id or "",
        denied_patients=(lambda: compartment_of(resource_type, resource_id)) if resource_type and resource_id
        else None, atomic=False,
    ) as note:
        page = svc.resource_history(
            user=request.user,
            resource_type=resource_type,
            resource_id=resource_id,
            count=svc.page_size(request.GET.get("_count")),
            since=request.GET.get("_since"),
            before_seq=before_seq,
        )
        for v in page.versions:  # one event for the page, listing every patient on it
            note.touch(resource_type=v.resource_type, resource_id=v.resource_id, patient_ids=v.patient_ids or [])
    return _history_bundle(request, page, path)


def _search(request: HttpRequest, resource_type: str, params: list[tuple[str, str]]) -> HttpResponse:
    with audited(user=request.user, action="search", resource_type=resource_type, atomic=False) as note:
        bundle = svc.resource_search(
            user=request.user,
            resource_type=resource_type,
            params=params,
            base_url=base_url(request),
            strict="handling=strict" in _prefer(request),
        )
        _note_entries(note, bundle)
    return fhir_response(bundle)


def _note_entries(note: Any, bundle: dict[str, Any]) -> None:
    """Record every patient (and resource) a response Bundle carries in the page's audit event."""
    for entry in bundle.get("entry") or []:
        res = (entry or {}).get("resource")
        if isinstance(res, dict) and res.get("resourceType") and res.get("id"):
            rt, rid = str(res["resourceType"]), str(res["id"])
            if rt == "OperationOutcome":
                continue
            note.touch(resource_type=rt, resource_id=rid, patient_ids=compartment_patients(rt, rid, res))


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
    body = read_body(request)
    kind = str(body.get("type") or "") if isinstance(body, dict) else ""
    with audited(user=request.user, action=kind if kind in ("transaction", "batch") else "transaction",
                 resource_type="Bundle") as note:
        result = bundle_process(user=request.user, bundle=body, base_url=base_url(request))
        _note_entries(note, result)
        note.detail["entries"] = len(result.get("entry") or [])
        # ... and each entry audited like the single request it stands for (patients, denials).
        append_events(bundle_entry_events(user=request.user, bundle=body, response=result, kind=kind))
    return fhir_response(result)


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
    body = read_body(request)
    if isinstance(body, dict) and body.get("resourceType") != resource_type:
        raise BadRequest(
            f"resourceType does not match the URL ({resource_type})", expression=["resourceType"]
        )
    with audited(user=request.user, action="create", resource_type=resource_type) as note:
        result = svc.resource_create(user=request.user, resource=body)
        _note_write(note, result)
        _subscription_written(request, result)
    return write_response(request, result)


def _note_write(note: Any, result: svc.WriteResult) -> None:
    note.resource_id = result.resource_id
    if result.version is None:
        note.detail["noop"] = True
    else:
        note.patients.update(result.version.patient_ids or [])
        note.detail["version"] = result.version.version_id


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
    with audited(user=request.user, action="vread", resource_type=resource_type, resource_id=resource_id,
                 detail={"version": vid}, denied_patients=lambda: compartment_of(resource_type, resource_id),
                 atomic=False) as note:
        v = svc.resource_vread(
            user=request.user, resource_type=resource_type, resource_id=resource_id, version_id=vid
        )
        note.patients.update(v.patient_ids or [])
    return fhir_response(v.body, headers=version_headers(v))


@router.get("/{resource_type}/{resource_id}/_history")
def instance_history(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    return _history(request, resource_type, resource_id, f"/{resource_type}/{resource_id}/_history")


@router.get("/{resource_type}/{resource_id}")
def read(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    with audited(user=request.user, action="read", resource_type=resource_type, resource_id=resource_id,
                 denied_patients=lambda: compartment_of(resource_type, resource_id), atomic=False) as note:
        row = svc.resource_read(user=request.user, resource_type=resource_type, resource_id=resource_id)
        note.patients.update(compartment_patients(resource_type, resource_id, row.body))
    headers = version_headers(row)
    if request.headers.get("If-None-Match", "").strip() == headers["ETag"]:
        return fhir_response(None, status=304, headers=headers)  # the client's copy is current
    return fhir_response(row.body, headers=headers)


@router.put("/{resource_type}/{resource_id}")
def update(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    check_type(resource_type)
    body = read_body(request)
    with audited(user=request.user, action="update", resource_type=resource_type, resource_id=resource_id,
                 denied_patients=lambda: compartment_of(resource_type, resource_id)) as note:
        result = svc.resource_update(
            user=request.user,
            resource_type=resource_type,
            resource_id=resource_id,
            resource=body,
            if_match=_parse_if_match(request.headers.get("If-Match")),
        )
        _note_write(note, result)
        _subscription_written(request, result)
    return write_response(request, result)


def _subscription_written(request: HttpRequest, result: svc.WriteResult) -> None:
    """A Subscription written through REST belongs to its author (whose scope filters its notifications);
    an unusable one (criteria, channel) is a 400 and, inside this transaction, is not written."""
    if result.resource_type == "Subscription" and result.version is not None:
        from omnicare.subscriptions.services import subscription_registered

        subscription_registered(user=request.user, resource=result.version.body)


@router.delete("/{resource_type}/{resource_id}")
def delete(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    with audited(user=request.user, action="delete", resource_type=resource_type, resource_id=resource_id,
                 denied_patients=lambda: compartment_of(resource_type, resource_id)) as note:
        result = svc.resource_delete(
            user=request.user,
            resource_type=resource_type,
            resource_id=resource_id,
            if_match=_parse_if_match(request.headers.get("If-Match")),
        )
        _note_write(note, result)
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
