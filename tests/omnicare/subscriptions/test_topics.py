"""Topic-based FHIR Subscriptions (R4 Subscriptions Backport IG): the server's SubscriptionTopics, filters from
``backport-filter-criteria``, the topic's interactions (deletes) and ``queryCriteria``, and heartbeats, to a
real rest-hook endpoint on 127.0.0.1 and over a real websocket to a real uvicorn process."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write, resources_import
from omnicare.subscriptions.services import dispatch, heartbeats_send
from tests.omnicare.fhir.test_subscriptions import Hook, events_of

BASE = "/fhir/R4"
FHIR = "application/fhir+json"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
LAB_FINAL = "urn:omnicare:SubscriptionTopic:lab-result-final"
OBS_CHANGE = "urn:omnicare:SubscriptionTopic:Observation-change"


@pytest.fixture
def _eager() -> Iterator[None]:
    """The dispatch queued on commit runs inline even when REDIS_URL configures a broker."""
    from omnicare.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    try:
        h.stop()
    except OSError:
        pass


def topic_sub(sid: str, topic: str, *, filters: tuple[str, ...] = (), channel: dict[str, Any],
              heartbeat: int | None = None) -> dict[str, Any]:
    ch = dict(channel)
    if heartbeat is not None:
        ch["extension"] = [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    body: dict[str, Any] = {"resourceType": "Subscription", "id": sid, "status": "active", "reason": "interface",
                            "criteria": topic, "channel": ch}
    if filters:
        body["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f}
                                           for f in filters]}
    return body


def rest_hook(port: int) -> dict[str, Any]:
    return {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{port}/hook", "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}]},
            "header": ["Authorization: Bearer hook-secret"]}


def lab(oid: str, pid: str, status: str = "final", category: str = "laboratory") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": status, "code": {"text": "potassium"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "subject": {"reference": f"Patient/{pid}"}}


def params_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] != "notification-event"}


@pytest.mark.django_db
def test_topics_filters_deletes_and_rest_hook_heartbeats(
    django_user_model: Any, hook: Hook, django_capture_on_commit_callbacks: Any, _eager: None
) -> None:
    u = django_user_model.objects.create_user(username="lab.engine")
    role_assign(user=u, role="integration")
    c = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=u, name='t')}")
    resources_import(resources=[{"resourceType": "Patient", "id": "tp1"}, {"resourceType": "Patient", "id": "tp2"}])

    # The topics are listed, readable and advertised.
    listed = c.get(f"{BASE}/SubscriptionTopic", {"url": LAB_FINAL}).json()
    assert [e["resource"]["id"] for e in listed["entry"]] == ["lab-result-final"]
    topic = c.get(f"{BASE}/SubscriptionTopic/lab-result-final").json()
    assert "patient" in {f["filterParameter"] for f in topic["canFilterBy"]}
    assert c.get(f"{BASE}/SubscriptionTopic/nope").status_code == 404
    cap = c.get(f"{BASE}/metadata").json()
    sub_entry = next(r for r in cap["rest"][0]["resource"] if r["type"] == "Subscription")
    assert LAB_FINAL in {e["valueCanonical"] for e in sub_entry["extension"]}

    # Unknown topics and filters the topic does not offer are refused, and nothing is stored.
    for bad, word in ((topic_sub("s-bad", "urn:omnicare:SubscriptionTopic:unicorns", channel=rest_hook(hook.port)),
                       "SubscriptionTopic"),
                      (topic_sub("s-bad", LAB_FINAL, filters=("Observation?colour=blue",), channel=rest_hook(hook.port)),
                       "colour"),
                      (topic_sub("s-bad", LAB_FINAL, filters=("Patient?name=x",), channel=rest_hook(hook.port)),
                       "Observation")):
        r = c.put(f"{BASE}/Subscription/s-bad", json.dumps(bad), content_type=FHIR)
        assert r.status_code == 400 and word in r.json()["issue"][0]["diagnostics"], r.content
    assert c.get(f"{BASE}/Subscription/s-bad").status_code == 404

    def put(res: dict[str, Any]) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            r = c.put(f"{BASE}/{res['resourceType']}/{res['id']}", json.dumps(res), content_type=FHIR)
        assert r.status_code in (200, 201), r.content

    put(topic_sub("s-lab", LAB_FINAL, filters=("Observation?patient=Patient/tp1",), channel=rest_hook(hook.port)))
    put(topic_sub("s-all", OBS_CHANGE, channel=rest_hook(hook.port)))
    put(lab("l1", "tp1", status="preliminary"))  # not final yet: no lab-result-final event
    put(lab("l1", "tp1"))  # now final
    put(lab("l2", "tp2"))  # another patient: filtered out
    put(lab("v1", "tp1", category="vital-signs"))  # not a lab
    with django_capture_on_commit_callbacks(execute=True):  # the integration role may not delete: the store does
        FhirStore.system().apply([Write("Observation", "v1", None)])
    by_sub: dict[str, list[tuple[int, str]]] = {}
    for headers, bundle in hook.received:
        assert headers["Authorization"] == "Bearer hook-secret"
        p = params_of(bundle)
        assert p["type"]["valueCode"] == "event-notification"
        by_sub.setdefault(p["subscription"]["valueReference"]["reference"], []).extend(events_of(bundle))
        assert p["topic"]["valueCanonical"] in (LAB_FINAL, OBS_CHANGE)
    assert by_sub["Subscription/s-lab"] == [(1, "Observation/l1")]
    # The unfiltered change topic sees every create, update and the delete, each once, in order.
    assert [f for _, f in by_sub["Subscription/s-all"]] == ["Observation/l1", "Observation/l1", "Observation/l2",
                                                           "Observation/v1", "Observation/v1"]
    assert [n for n, _ in by_sub["Subscription/s-all"]] == [1, 2, 3, 4, 5]
    assert dispatch() == 0  # nothing twice

    # Heartbeats: only for a subscription that asked, only once it has been quiet for its period.
    hook.received.clear()
    put(topic_sub("s-beat", LAB_FINAL, channel=rest_hook(hook.port), heartbeat=60))
    assert heartbeats_send() == 0  # just created: not quiet for 60 s yet
    later = timezone.now() + timedelta(seconds=61)
    assert heartbeats_send(now=later) == 1
    assert heartbeats_send(now=later) == 0  # it was just sent
    (headers, beat), = hook.received
    p = params_of(beat)
    assert p["type"]["valueCode"] == "heartbeat" and p["subscription"]["valueReference"]["reference"] == \
        "Subscription/s-beat"
    assert p["events-since-subscription-start"]["valueString"] == "0" and len(beat["entry"]) == 1
    r = c.put(f"{BASE}/Subscription/s-beat2", json.dumps(topic_sub("s-beat2", LAB_FINAL, channel=rest_hook(hook.port),
                                                                    heartbeat=0)), content_type=FHIR)
    assert r.status_code == 400  # a heartbeat period must be positive (FHIR unsignedInt 0 would mean "never")


def _http(url: str, token: str, method: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR, "Accept": FHIR})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return resp.status, json.loads(resp.read() or b"{}")


@pytest.mark.django_db(transaction=True)
async def test_real_websocket_gets_topic_events_and_heartbeats(
    live_asgi: str, live_asgi_server: Any, django_user_model: Any, request: pytest.FixtureRequest
) -> None:
    """A uvicorn process, a websockets client: bind with the token, get each matching event once, then a
    heartbeat after each quiet period; the heartbeat counts the events so far."""
    from channels.db import database_sync_to_async
    from websockets.asyncio.client import connect

    if os.environ.get("REDIS_URL"):
        request.getfixturevalue("redis_channel_layer")  # this process's dispatch reaches the server's socket

    def setup() -> str:
        u = django_user_model.objects.create_user(username="ws.topic.engine")
        role_assign(user=u, role="integration")
        resources_import(resources=[{"resourceType": "Patient", "id": "wp1"}])
        return token_create(user=u, name="ws")

    token = await database_sync_to_async(setup)()
    sub = topic_sub("s-ws", LAB_FINAL, filters=("Observation?patient=Patient/wp1",), channel={"type": "websocket"},
                    heartbeat=1)
    status, _ = await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Subscription/s-ws", token, "PUT", sub)
    assert status == 201
    _, binding = await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Subscription/s-ws/$get-ws-binding-token",
                                         token, "GET")
    bind = {p["name"]: p for p in binding["parameter"]}
    async with connect(live_asgi_server.ws_url + bind["websocket-url"]["valueUrl"], origin=live_asgi_server.origin,
                       open_timeout=10) as ws:
        await ws.send(f"bind-with-token {bind['token']['valueString']}")
        handshake = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        assert params_of(handshake)["type"]["valueCode"] == "handshake"
        await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Observation/wl1", token, "PUT", lab("wl1", "wp1"))
        if os.environ.get("REDIS_URL"):  # the server queued the dispatch for a worker: be the worker
            await database_sync_to_async(dispatch)()
        got: list[dict[str, Any]] = []
        while not any(params_of(b)["type"]["valueCode"] == "event-notification" for b in got):
            got.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))
        event = next(b for b in got if params_of(b)["type"]["valueCode"] == "event-notification")
        assert events_of(event) == [(1, "Observation/wl1")]
        assert params_of(event)["topic"]["valueCanonical"] == LAB_FINAL
        beats = []
        while len(beats) < 2:
            b = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            assert params_of(b)["type"]["valueCode"] == "heartbeat", b  # no event twice
            beats.append(b)
        assert params_of(beats[-1])["events-since-subscription-start"]["valueString"] == "1"
