"""Errors as values at the edge: every failure leaves the API as a FHIR OperationOutcome.

Services raise :class:`ApiError` (or a subclass); the single exception pipeline in
``omnicare.api`` turns it into a response. Diagnostics must never contain PHI
that the caller did not send (they go to the caller, never to the logs).
"""

from __future__ import annotations

from typing import Any

FHIR_JSON = "application/fhir+json"


def operation_outcome(
    *, code: str, diagnostics: str, severity: str = "error", expression: list[str] | None = None
) -> dict[str, Any]:
    """Build a FHIR R4 OperationOutcome with one issue (``code`` from the IssueType value set)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class ApiError(Exception):
    """An error the caller can act on. ``status`` is the HTTP status, ``code`` the FHIR IssueType."""

    status = 400
    code = "invalid"

    def __init__(
        self,
        diagnostics: str,
        *,
        status: int | None = None,
        code: str | None = None,
        expression: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.expression = expression
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(code=self.code, diagnostics=self.diagnostics, expression=self.expression)


class BadRequest(ApiError):
    status, code = 400, "invalid"


class NotAuthenticated(ApiError):
    status, code = 401, "login"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not-found"


class MethodNotAllowed(ApiError):
    status, code = 405, "not-supported"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Gone(ApiError):
    status, code = 410, "deleted"


class PreconditionFailed(ApiError):
    status, code = 412, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(ApiError):
    status, code = 415, "not-supported"


class Unprocessable(ApiError):
    status, code = 422, "processing"


class ServiceUnavailable(ApiError):
    """A dependency (database, broker) is unreachable: 503 with ``Retry-After`` so clients back off."""

    status, code = 503, "transient"

    def __init__(self, diagnostics: str, *, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(diagnostics, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after))
