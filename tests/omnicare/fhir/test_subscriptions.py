"""FHIR Subscriptions (R4 backport, rest-hook) to a real HTTP endpoint on 127.0.0.1: every matching change is
notified exactly once with its event number and the subscriber's secret header, nothing outside the owner's
scope, a subscriber that was down catches up (retry, ``$events``), ``$status`` counts the events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.fhir.services import resources_import
from omnicare.subscriptions.models import SubscriptionEvent
from omnicare.subscriptions.services import dispatch

from .conftest import BASE, outcome_of

REAL_ACCESS = True
pytestmark = pytest.mark.django_db
FHIR = "application/fhir+json"
CONTENT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"


@pytest.fixture(autouse=True)
def _eager() -> Iterator[None]:
    """The dispatch queued on commit runs inline even when REDIS_URL configures a broker."""
    from omnicare.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


class Hook:
    """A subscriber's rest-hook endpoint: records every notification (headers and body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.received.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[tuple[int, str]]:
        return [e for _, bundle in self.received for e in events_of(bundle)]


def events_of(bundle: dict[str, Any]) -> list[tuple[int, str]]:
    """(event number, focus) of each notification-event in a notification Bundle."""
    out = []
    for p in bundle["entry"][0]["resource"]["parameter"]:
        if p["name"] == "notification-event":
            parts = {x["name"]: x for x in p["part"]}
            out.append((int(parts["event-number"]["valueString"]),
                        parts["focus"]["valueReference"]["reference"].split("/_history")[0]))
    return out


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    try:
        h.stop()
    except OSError:
        pass


@pytest.fixture
def clients(django_user_model: Any) -> dict[str, Client]:
    integ = django_user_model.objects.create_user(username="engine")
    role_assign(user=integ, role="integration")
    dr = django_user_model.objects.create_user(username="dr.sub")
    role_assign(user=dr, role="physician")
    resources_import(resources=[
        {"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"},
        {"resourceType": "Practitioner", "id": "pr-sub", "identifier": [{"system": "urn:omnicare:user", "value": "dr.sub"}]},
        {"resourceType": "CareTeam", "id": "ct-1", "status": "active", "subject": {"reference": "Patient/p1"},
         "participant": [{"member": {"reference": "Practitioner/pr-sub"}}]},
    ])
    return {u: Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=x, name='t')}") for u, x in (("integ", integ), ("dr", dr))}


def subscription(sid: str, criteria: str, port: int) -> dict[str, Any]:
    return {"resourceType": "Subscription", "id": sid, "status": "active", "reason": "lab interface",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{port}/hook",
                        "payload": "application/fhir+json", "_payload": {"extension": [{"url": CONTENT, "valueCode": "full-resource"}]},
                        "header": ["Authorization: Bearer s3cret"]}}


def obs(oid: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "hr"},
            "subject": {"reference": f"Patient/{pid}"}}


def put(client: Client, res: dict[str, Any], capture: Any) -> None:
    with capture(execute=True):  # the dispatch queued on commit runs (eager Celery)
        r = client.put(f"{BASE}/{res['resourceType']}/{res['id']}", json.dumps(res), content_type=FHIR)
    assert r.status_code in (200, 201), r.content


def test_rest_hook_exactly_once_in_scope_and_catch_up(clients: dict[str, Client], hook: Hook,
                                                      django_capture_on_commit_callbacks: Any) -> None:
    integ, dr = clients["integ"], clients["dr"]
    bad = subscription("bad", "Unicorn?x=1", hook.port)
    r = integ.put(f"{BASE}/Subscription/bad", json.dumps(bad), content_type=FHIR)
    assert r.status_code == 400 and "criteria" in outcome_of(r)["issue"][0]["diagnostics"]
    assert integ.get(f"{BASE}/Subscription/bad").status_code == 404  # nothing written
    put(integ, subscription("sub-p1", "Observation?patient=Patient/p1", hook.port), django_capture_on_commit_callbacks)
    put(dr, subscription("sub-dr", "Observation?status=final", hook.port), django_capture_on_commit_callbacks)
    for o in (obs("o1", "p1"), obs("o2", "p2"), obs("o3", "p1")):
        put(integ, o, django_capture_on_commit_callbacks)
    by_sub: dict[str, list[tuple[int, str]]] = {}
    for headers, bundle in hook.received:
        assert headers["Authorization"] == "Bearer s3cret"
        sub = bundle["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"]
        by_sub.setdefault(sub, []).extend(events_of(bundle))
        assert [e["resource"]["id"] for e in bundle["entry"][1:]]  # full-resource payload
    assert by_sub["Subscription/sub-p1"] == [(1, "Observation/o1"), (2, "Observation/o3")]
    # The physician's subscription matches every final Observation, but p2 is outside their care team.
    assert by_sub["Subscription/sub-dr"] == [(1, "Observation/o1"), (2, "Observation/o3")]

    # The subscriber goes down: the event waits, is counted and can be fetched; delivered once it is back.
    hook.stop()
    put(integ, obs("o4", "p1"), django_capture_on_commit_callbacks)
    assert SubscriptionEvent.objects.filter(subscription_id="sub-p1", status="pending").count() == 1
    status = integ.get(f"{BASE}/Subscription/sub-p1/$status").json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["events-since-subscription-start"]["valueString"] == "3"
    missed = integ.get(f"{BASE}/Subscription/sub-p1/$events", {"eventsSinceNumber": "3"}).json()
    assert [e["resource"]["id"] for e in missed["entry"][1:]] == ["o4"]
    assert dr.get(f"{BASE}/Subscription/sub-p1/$events").status_code == 404  # not the physician's
    back = Hook()
    try:
        resources_import(resources=[subscription("sub-p1", "Observation?patient=Patient/p1", back.port)])
        assert dispatch() >= 1  # what beat (or the next write) does, after a restart too
        assert dispatch() == 0  # nothing twice
        assert back.events() == [(3, "Observation/o4")]
    finally:
        back.stop()


@pytest.mark.django_db(transaction=True)
async def test_websocket_channel_binds_with_a_token_and_receives_notifications(
    django_user_model: Any, settings: Any
) -> None:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from omnicare.asgi import application

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    def setup() -> Client:
        u = django_user_model.objects.create_user(username="ws.engine")
        role_assign(user=u, role="integration")
        resources_import(resources=[{"resourceType": "Patient", "id": "pw"}])
        c = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=u, name='t')}")
        sub = {"resourceType": "Subscription", "id": "sub-ws", "status": "active", "reason": "ws",
               "criteria": "Observation?patient=Patient/pw", "channel": {"type": "websocket"}}
        assert c.put(f"{BASE}/Subscription/sub-ws", json.dumps(sub), content_type=FHIR).status_code == 201
        return c

    client = await database_sync_to_async(setup)()
    r = await database_sync_to_async(client.get)(f"{BASE}/Subscription/sub-ws/$get-ws-binding-token")
    token = {p["name"]: p for p in r.json()["parameter"]}["token"]["valueString"]
    comm = WebsocketCommunicator(application, "/ws/subscriptions", headers=[(b"origin", b"http://127.0.0.1")])
    assert (await comm.connect())[0]
    await comm.send_to(text_data="bind-with-token not-a-token")
    assert (await comm.receive_output(timeout=5))["type"] == "websocket.close"
    comm = WebsocketCommunicator(application, "/ws/subscriptions", headers=[(b"origin", b"http://127.0.0.1")])
    assert (await comm.connect())[0]
    await comm.send_to(text_data=f"bind-with-token {token}")
    handshake = json.loads(await comm.receive_from(timeout=5))
    assert handshake["entry"][0]["resource"]["parameter"][1]["valueCode"] == "handshake"
    await database_sync_to_async(resources_import)(resources=[obs("ow1", "pw"), obs("ow2", "pw")])
    await database_sync_to_async(dispatch)()  # already run by the commit (eager Celery); a second run adds nothing
    got = json.loads(await comm.receive_from(timeout=5))
    assert events_of(got) == [(1, "Observation/ow1"), (2, "Observation/ow2")]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()
