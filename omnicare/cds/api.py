"""CDS Hooks 2.0 (``/cds-services``) and the signed knowledge bundles devices fetch (``/api/cds/...``).

Routers translate HTTP to ``omnicare.cds.services``. A CDS Hooks call authenticates with an OmniCare API
token (or the app's session) or with the signed JWT of a registered CDS client.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router
from ninja.security import HttpBearer

from omnicare.access.auth import ActiveSessionAuth, api_auth
from omnicare.access.services import token_authenticate
from omnicare.core.errors import BadRequest

from . import services

hooks_router = Router(tags=["cds-hooks"])
bundles_router = Router(tags=["cds"], auth=api_auth)


class HooksBearer(HttpBearer):
    """An OmniCare API token, else a CDS Hooks client JWT (verified against the client's registered keys)."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = token_authenticate(token=token)
        if user is not None:
            request.user = user
            return services.Caller(user=user)
        if token.count(".") == 2:
            client = services.jwt_authenticate(token=token, audience=request.build_absolute_uri(request.path))
            return services.Caller(client=client)
        return None


class HooksSession(ActiveSessionAuth):
    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return services.Caller(user=user) if user is not None else None


@hooks_router.get("", auth=None, summary="CDS Hooks discovery")
def discovery(request: HttpRequest) -> HttpResponse:
    """The CDS services offered here, with their hooks and prefetch templates (no patient data)."""
    return JsonResponse(services.cds_discovery())


@hooks_router.post("/{service_id}", auth=[HooksBearer(), HooksSession()], summary="Call a CDS service")
def call(request: HttpRequest, service_id: str) -> HttpResponse:
    """A CDS Hooks 2.0 request (``order-select`` / ``order-sign``) -> ``{"cards": [...]}``. With ``prefetch``
    the service reads nothing else; without it, an OmniCare caller's own chart access is used and a JWT
    client gets 412."""
    try:
        body = json.loads(request.body or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("The CDS Hooks request body is not valid JSON", code="structure") from None
    caller = request.auth  # type: ignore[attr-defined]
    return JsonResponse(services.cds_hooks_call(service_id=service_id, body=body, caller=caller))


@bundles_router.get("/bundles", summary="Published knowledge bundles")
def bundles(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"bundles": services.bundle_index()})


@bundles_router.get("/bundles/{kind}/latest", summary="The newest signed bundle of a kind (kb, guidelines)")
def bundle_latest(request: HttpRequest, kind: str) -> HttpResponse:
    """Payload, the signed statement (kind, version, SHA-256, time) and its Ed25519 signature."""
    return JsonResponse(services.bundle_json(services.bundle_latest(kind=kind)))
