"""``Subscription/{id}/$status`` and ``Subscription/{id}/$events`` (R4 Subscriptions Backport)."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from ninja import Router

from omnicare.access.auth import api_auth
from omnicare.core.errors import FHIR_JSON, BadRequest, MethodNotAllowed, NotFound

from . import services as svc
from . import topics

router = Router(tags=["subscriptions"], auth=api_auth)


def _int(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer", expression=[name]) from exc


@router.get("/Subscription/{sub_id}/$status")
def status(request: HttpRequest, sub_id: str) -> HttpResponse:
    body = svc.subscription_status(user=request.user, subscription_id=sub_id)
    return HttpResponse(json.dumps(body), content_type=FHIR_JSON)


@router.get("/Subscription/{sub_id}/$events")
def events(request: HttpRequest, sub_id: str) -> HttpResponse:
    body = svc.subscription_events(user=request.user, subscription_id=sub_id,
                                   since=_int(request, "eventsSinceNumber"), until=_int(request, "eventsUntilNumber"))
    return HttpResponse(json.dumps(body), content_type=FHIR_JSON)


@router.api_operation(["GET", "POST"], "/Subscription/{sub_id}/$get-ws-binding-token")
def ws_token(request: HttpRequest, sub_id: str) -> HttpResponse:
    body = svc.ws_binding_token(user=request.user, subscription_id=sub_id)
    return HttpResponse(json.dumps(body), content_type=FHIR_JSON)


@router.get("/SubscriptionTopic")
def topic_search(request: HttpRequest) -> HttpResponse:
    """The server's SubscriptionTopics (R4B shape; see ``topics.py``): ``url`` filters by canonical."""
    url = request.GET.get("url")
    found = [t for u, t in topics.catalogue().items() if url in (None, "", u)]
    body = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
            "entry": [{"fullUrl": t["url"], "resource": t, "search": {"mode": "match"}} for t in found]}
    return HttpResponse(json.dumps(body), content_type=FHIR_JSON)


@router.get("/SubscriptionTopic/{topic_id}")
def topic_read(request: HttpRequest, topic_id: str) -> HttpResponse:
    topic = topics.topic_by_id(topic_id)
    if topic is None:
        raise NotFound("No such SubscriptionTopic")
    return HttpResponse(json.dumps(topic), content_type=FHIR_JSON)


# Topics are the server's catalogue (``topics.py``: R4 has no SubscriptionTopic type to store), so writes are a
# 405 OperationOutcome saying so, not Django's bare HTML 405.
_READ_ONLY = ["POST", "PUT", "PATCH", "DELETE"]


def _catalogue_only(request: HttpRequest) -> HttpResponse:
    raise MethodNotAllowed(f"{request.method} is not supported: SubscriptionTopics are this server's catalogue "
                           "(GET SubscriptionTopic lists them); a Subscription names one in criteria")


@router.api_operation(_READ_ONLY, "/SubscriptionTopic", include_in_schema=False)
def topic_write(request: HttpRequest) -> HttpResponse:
    return _catalogue_only(request)


@router.api_operation(_READ_ONLY, "/SubscriptionTopic/{topic_id}", include_in_schema=False)
def topic_instance_write(request: HttpRequest, topic_id: str) -> HttpResponse:
    return _catalogue_only(request)
