"""The one django-ninja API: FHIR R4 at /fhir/R4/, app APIs at /api/..., docs at /api/docs.

One exception pipeline: whatever goes wrong leaves as a FHIR OperationOutcome with
the right status, never as an HTML 500 page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.renderers import JSONRenderer

from omnicare.core.errors import FHIR_JSON, ApiError, operation_outcome
from omnicare.core.health import is_ready, readiness
from omnicare.core.jsonbody import json_body_loads

log = logging.getLogger("omnicare.api")

class BoundedJsonParser(Parser):
    """Schema-bound bodies (sign-in, device events, conflict resolution, ...) go through the same decoder as
    FHIR and sync bodies: too deep, NUL and lone-surrogate JSON are a 400 (``omnicare.core.jsonbody``)."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json_body_loads(request.body)


class CompactJSONRenderer(JSONRenderer):
    """What ninja serialises from a response schema is written like every hand-built body of the API (pull
    pages, FHIR resources, pyclient's ``dumps``): no spaces after separators. The sync schemas' answers are
    then byte for byte what PROTOCOL.md's clients received before ninja wrote them."""

    json_dumps_params = {"separators": (",", ":")}  # noqa: RUF012 (ninja's own class attribute)


api = NinjaAPI(
    parser=BoundedJsonParser(),
    renderer=CompactJSONRenderer(),
    title="OmniCare API",
    version="1",
    description="FHIR R4 REST (/fhir/R4/) and the offline sync API (/api/sync/).",
    urls_namespace="omnicare",
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
)


def outcome_response(status: int, outcome: dict[str, Any], headers: dict[str, str] | None = None) -> HttpResponse:
    response = JsonResponse(outcome, status=status, content_type=FHIR_JSON)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return outcome_response(exc.status, exc.outcome(), exc.headers)


#: Exceptions whose answer is always the same: (status, issue code, diagnostics, headers). A subclass gets
#: the answer of its nearest listed class (RequestDataTooBig is a SuspiciousOperation of its own).
FIXED_OUTCOMES: dict[type[Exception], tuple[int, str, str, dict[str, str] | None]] = {
    AuthenticationError: (401, "login", "Authentication required", {"WWW-Authenticate": "Bearer"}),
    PermissionDenied: (403, "forbidden", "Forbidden", None),
    Http404: (404, "not-found", "Not found", None),
    RequestDataTooBig: (413, "too-costly", "Request body too large", None),
    SuspiciousOperation: (400, "security", "Bad request", None),
    # E.g. a NUL character, which PostgreSQL text cannot hold. Every write path runs in a transaction,
    # so the failed statement rolled everything back: nothing was written.
    DataError: (400, "invalid", "The request contains a value the server cannot store", None),
}


def _fixed_outcome(request: HttpRequest, exc: Exception) -> HttpResponse:
    status, code, diagnostics, headers = next(FIXED_OUTCOMES[c] for c in type(exc).__mro__ if c in FIXED_OUTCOMES)
    return outcome_response(status, operation_outcome(code=code, diagnostics=diagnostics), headers)


for _exc in FIXED_OUTCOMES:
    api.add_exception_handler(_exc, _fixed_outcome)


@api.exception_handler(ValidationError)
def _validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # Field locations only: the offending values may be PHI and are not echoed.
    where = sorted({".".join(str(p) for p in err.get("loc", ())) for err in exc.errors})
    return outcome_response(
        400, operation_outcome(code="invalid", diagnostics="Invalid request: " + ", ".join(where), expression=where)
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApiError):  # ninja wraps errors of BoundedJsonParser: keep their outcome
        return _api_error(request, exc.__cause__)
    return outcome_response(exc.status_code, operation_outcome(code="processing", diagnostics=str(exc)))


@api.exception_handler(OperationalError)
@api.exception_handler(InterfaceError)
def _unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database is unreachable, or the pool had no connection within OMNICARE_DB_POOL_TIMEOUT: a quick
    # 503 the client retries after Retry-After, instead of a 30 s hang and a 500.
    log.warning("database unavailable on %s %s: %s", request.method, request.path_info, type(exc).__name__)
    return unavailable_response()


def unavailable_response() -> HttpResponse:
    return outcome_response(
        503,
        operation_outcome(code="transient", diagnostics="The service is temporarily unavailable; retry later"),
        {"Retry-After": "5"},
    )


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The traceback goes to the log (no request body, no query string); the caller gets a plain outcome.
    log.exception("unhandled error on %s %s", request.method, request.path_info.split("?")[0])
    return outcome_response(500, operation_outcome(code="exception", diagnostics="Internal server error"))


@api.get("/api/health", auth=None, tags=["ops"])
def health(request: HttpRequest) -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@api.get("/api/health/ready", auth=None, tags=["ops"])
def ready(request: HttpRequest) -> HttpResponse:
    """Readiness for a load balancer: database reachable, migrations applied, Redis and the Celery broker
    reachable. 200 when all are, else 503 with ``Retry-After`` (each check gives up after ~2 s)."""
    checks = readiness()
    ok = is_ready(checks)
    response = JsonResponse({"status": "ready" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
    if not ok:
        response["Retry-After"] = "5"
    response["Cache-Control"] = "no-store"
    return response


from omnicare.access.api import router as auth_router  # noqa: E402
from omnicare.access.security_api import router as access_router  # noqa: E402
from omnicare.bulk.api import router as bulk_router  # noqa: E402
from omnicare.fhir.api import router as fhir_router  # noqa: E402
from omnicare.ops.api import router as ops_router  # noqa: E402
from omnicare.subscriptions.api import router as subscriptions_router  # noqa: E402
from omnicare.sync.api import router as sync_router  # noqa: E402
from omnicare.sync.audit_api import router as audit_router  # noqa: E402

api.add_router("/fhir/R4", bulk_router)  # before the FHIR router: "$export" is not a resource type
api.add_router("/fhir/R4", subscriptions_router)
api.add_router("/fhir/R4", fhir_router)
api.add_router("/api/sync", sync_router)
api.add_router("/api/auth", auth_router)
api.add_router("/api/access", access_router)
api.add_router("/api/audit", audit_router)
api.add_router("/api/ops", ops_router)

from omnicare.online.api import router as online_router  # noqa: E402  (issue 13 item 4: online only)

api.add_router("/api", online_router)

# CDS (clinical decision support): CDS Hooks 2.0 at the spec's /cds-services, signed bundles at /api/cds.
from omnicare.cds.api import bundles_router as cds_bundles_router  # noqa: E402
from omnicare.cds.api import hooks_router as cds_hooks_router  # noqa: E402

api.add_router("/cds-services", cds_hooks_router)
api.add_router("/api/cds", cds_bundles_router)
