"""FHIR Bulk Data endpoints under /fhir/R4 (registered before the FHIR router so ``$export`` is not read as a
resource type): kick-off, status (``$bulk-status``), files (``$bulk-file``) and ``$import``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Router

from omnicare.access.auth import api_auth
from omnicare.core.errors import BadRequest, UnsupportedMediaType

from . import services as svc

router = Router(tags=["bulk"], auth=api_auth)
NDJSON = "application/fhir+ndjson"


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/fhir/R4")


def _prefer_async(request: HttpRequest) -> bool:
    return "respond-async" in request.headers.get("Prefer", "").lower()


def _accepted(request: HttpRequest, job: Any) -> HttpResponse:
    response = HttpResponse(status=202)
    response["Content-Location"] = f"{_base(request)}/$bulk-status/{job.pk}"
    return response


def _pairs(request: HttpRequest) -> list[tuple[str, str]]:
    return [(k, v) for k in request.GET for v in request.GET.getlist(k)]


def _kickoff(request: HttpRequest, level: str, group_id: str | None = None) -> HttpResponse:
    job = svc.export_start(
        user=request.user, level=level, params=_pairs(request), prefer_async=_prefer_async(request),
        request_url=request.build_absolute_uri(), base_url=_base(request), group_id=group_id,
    )
    return _accepted(request, job)


@router.get("/$export")
def export_system(request: HttpRequest) -> HttpResponse:
    """System-level export (every type the caller may search, within the caller's patient scope)."""
    return _kickoff(request, "system")


@router.get("/Patient/$export")
def export_patients(request: HttpRequest) -> HttpResponse:
    """Patient-level export: the Patient compartments in the caller's scope."""
    return _kickoff(request, "patient")


@router.get("/Group/{group_id}/$export")
def export_group(request: HttpRequest, group_id: str) -> HttpResponse:
    """Group-level export: the compartments of the Group's patients (within the caller's scope)."""
    return _kickoff(request, "group", group_id)


@router.post("/$import")
def import_ndjson(request: HttpRequest) -> HttpResponse:
    """Bulk import: an ``application/fhir+ndjson`` body, any mix of types, one resource per line."""
    if (request.content_type or "").lower() not in svc.NDJSON_TYPES:
        raise UnsupportedMediaType("$import takes application/fhir+ndjson")
    if not _prefer_async(request):
        raise BadRequest("$import needs the header 'Prefer: respond-async'", code="not-supported")

    def chunks() -> Iterator[bytes]:
        while True:
            block = request.read(1 << 20)
            if not block:
                return
            yield block

    job = svc.import_start(user=request.user, chunks=chunks(), request_url=request.build_absolute_uri())
    return _accepted(request, job)


@router.get("/$bulk-status/{job_id}")
def status(request: HttpRequest, job_id: str) -> HttpResponse:
    st = svc.job_status(user=request.user, job_id=job_id, base_url=_base(request))
    if st.body is None:
        response = HttpResponse(status=st.status)
    else:
        import json

        response = HttpResponse(json.dumps(st.body), status=st.status,
                                content_type="application/json" if st.status == 200 else "application/fhir+json")
    for k, v in st.headers.items():
        if v:
            response[k] = v
    return response


@router.delete("/$bulk-status/{job_id}")
def cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    svc.job_cancel(user=request.user, job_id=job_id)
    return HttpResponse(status=202)


@router.get("/$bulk-file/{job_id}/{name}")
def file(request: HttpRequest, job_id: str, name: str) -> HttpResponse:
    got = svc.job_file(user=request.user, job_id=job_id, name=name)
    if isinstance(got, Path):
        return FileResponse(open(got, "rb"), content_type=NDJSON)  # noqa: SIM115 (FileResponse closes it)
    return StreamingHttpResponse(got, content_type=NDJSON)
