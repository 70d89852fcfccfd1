"""Transition topics (SubscriptionTopic ``queryCriteria.previous``): a topic such as "a planned visit starts" or
"a laboratory result becomes final" notifies exactly once, on the version that crosses the transition, never on
other updates; ``resultForCreate`` / ``resultForDelete`` / ``requireBoth`` decide creates, deletes and either/both.
To a real rest-hook endpoint on 127.0.0.1 and over a real websocket to a real uvicorn process, filtered by the
subscriber's scope, audited, numbered without gaps, ``$status`` / ``$events`` unchanged."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.audit.models import AuditEvent
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write, resources_import
from omnicare.subscriptions import topics
from omnicare.subscriptions.services import dispatch
from tests.omnicare.fhir.test_subscriptions import Hook, events_of
from tests.omnicare.subscriptions.test_topics import _http, lab, params_of, rest_hook, topic_sub

BASE = "/fhir/R4"
FHIR = "application/fhir+json"
T = "urn:omnicare:SubscriptionTopic:"


@pytest.fixture
def _eager() -> Iterator[None]:
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


def enc(eid: str, pid: str, status: str, text: str = "visit") -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": eid, "status": status, "class": {"code": "AMB"},
            "type": [{"text": text}], "subject": {"reference": f"Patient/{pid}"}}


def focus_versions(bundle: dict[str, Any]) -> list[str]:
    return [part["valueReference"]["reference"] for p in bundle["entry"][0]["resource"]["parameter"]
            if p["name"] == "notification-event" for part in p["part"] if part["name"] == "focus"]


@pytest.mark.django_db
def test_transition_topics_over_rest_hook(django_user_model: Any, hook: Hook, django_capture_on_commit_callbacks: Any,
                                          _eager: None) -> None:
    u = django_user_model.objects.create_user(username="adt.engine")
    role_assign(user=u, role="integration")
    c = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=u, name='t')}")
    dr = django_user_model.objects.create_user(username="dr.trans")
    role_assign(user=dr, role="physician")
    resources_import(resources=[
        {"resourceType": "Patient", "id": "tp1"}, {"resourceType": "Patient", "id": "tp2"},
        {"resourceType": "Practitioner", "id": "pr-trans",
         "identifier": [{"system": "urn:omnicare:user", "value": "dr.trans"}]},
        {"resourceType": "CareTeam", "id": "ct-trans", "status": "active", "subject": {"reference": "Patient/tp1"},
         "participant": [{"member": {"reference": "Practitioner/pr-trans"}}]},
    ])
    cd = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=dr, name='t')}")

    def put(res: dict[str, Any], client: Client = c) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            r = client.put(f"{BASE}/{res['resourceType']}/{res['id']}", json.dumps(res), content_type=FHIR)
        assert r.status_code in (200, 201), r.content

    def delete(rtype: str, rid: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):  # the integration role may not delete: the store does
            FhirStore.system().apply([Write(rtype, rid, None)])

    ch = rest_hook(hook.port)
    put(topic_sub("s-arrive", T + "encounter-arrived", filters=("Encounter?patient=Patient/tp1",), channel=ch))
    put(topic_sub("s-end", T + "encounter-end", filters=("Encounter?patient=Patient/tp1",), channel=ch))
    put(topic_sub("s-dr-arrive", T + "encounter-arrived", channel=ch), cd)  # a physician: only tp1 is theirs
    put(topic_sub("s-final", T + "lab-result-finalised", channel=ch))
    put(topic_sub("s-released", T + "lab-result-released", channel=ch))

    # Encounters: planned → planned → in-progress → in-progress → finished; creates and deletes around it.
    put(enc("e1", "tp1", "planned"))  # create: resultForCreate test-fails, so "arrived" is silent
    put(enc("e1", "tp1", "planned", "visit, room 2"))  # an update that does not cross the transition
    put(enc("e1", "tp1", "in-progress", "visit, room 2"))  # planned → in-progress: arrived, once
    put(enc("e1", "tp1", "in-progress", "visit, room 3"))  # still in progress: nothing
    put(enc("e2", "tp1", "in-progress"))  # created in progress: never planned, so not "arrived"
    put(enc("e1", "tp1", "finished", "visit, room 3"))  # in-progress → finished: end
    delete("Encounter", "e2")  # in progress and deleted: end (resultForDelete test-passes), filtered on its last version
    put(enc("e3", "tp2", "planned"))
    put(enc("e3", "tp2", "in-progress"))  # arrived, but tp2: not s-arrive's filter, not the physician's scope
    put(enc("e4", "tp1", "planned"))
    delete("Encounter", "e4")  # deleted while planned: not an end (previous fails)

    # Laboratory results.
    put(lab("l1", "tp1", status="preliminary"))  # create: not final
    put(lab("l1", "tp1"))  # becomes final: finalised + released
    l1 = {**lab("l1", "tp1"), "valueQuantity": {"value": 5.1}}
    put(l1)  # final → final: not "becomes final"; "released" (requireBoth false: previous or current)
    put(lab("l2", "tp2"))  # created final: finalised (resultForCreate test-passes) + released
    put({**l1, "status": "entered-in-error"})  # withdrawn: released (previous holds), not finalised
    put(lab("l3", "tp1", status="preliminary"))
    put({**lab("l3", "tp1", status="preliminary"), "valueQuantity": {"value": 1}})  # preliminary → preliminary
    delete("Observation", "l2")  # a final result deleted: released (previous), not finalised (resultForDelete fails)
    put(lab("v1", "tp1", category="vital-signs"))  # final, but not a laboratory result

    by_sub: dict[str, list[str]] = {}
    numbers: dict[str, list[int]] = {}
    for _, bundle in hook.received:
        sid = params_of(bundle)["subscription"]["valueReference"]["reference"].split("/")[1]
        by_sub.setdefault(sid, []).extend(focus_versions(bundle))
        numbers.setdefault(sid, []).extend(n for n, _ in events_of(bundle))
    assert by_sub == {
        "s-arrive": ["Encounter/e1/_history/3"],
        "s-end": ["Encounter/e1/_history/5", "Encounter/e2/_history/2"],
        "s-dr-arrive": ["Encounter/e1/_history/3"],
        "s-final": ["Observation/l1/_history/2", "Observation/l2/_history/1"],
        "s-released": ["Observation/l1/_history/2", "Observation/l1/_history/3", "Observation/l2/_history/1",
                       "Observation/l1/_history/4", "Observation/l2/_history/2"],
    }
    assert all(ns == list(range(1, len(ns) + 1)) for ns in numbers.values()), numbers  # contiguous
    assert dispatch() == 0  # nothing twice

    # Catch-up is unchanged: $status counts, $events replays by number, each delivery is audited.
    st = c.get(f"{BASE}/Subscription/s-released/$status").json()
    assert {p["name"]: p for p in st["entry"][0]["resource"]["parameter"]}["events-since-subscription-start"][
        "valueString"] == "5"
    replay = c.get(f"{BASE}/Subscription/s-released/$events", {"eventsSinceNumber": "4"}).json()
    assert events_of(replay) == [(4, "Observation/l1"), (5, "Observation/l2")]
    notified = AuditEvent.objects.filter(action="subscription-notify", resource_id="s-end")
    assert sorted(p for e in notified for p in e.patient_ids) == ["tp1", "tp1"]

    # Several versions of one resource in one dispatch batch: each is judged on its own body and the one before
    # it, not on the latest state (a current-only topic too: encounter-start is versions 2 and 3, not 4).
    put(topic_sub("s-start", T + "encounter-start", filters=("Encounter?patient=Patient/tp1",), channel=ch))
    hook.received.clear()
    resources_import(resources=[enc("e5", "tp1", "planned")])  # no dispatch queued outside the capture
    for status in ("in-progress", "in-progress", "finished"):
        FhirStore.system().apply([Write("Encounter", "e5", enc("e5", "tp1", status, status))])
    assert dispatch() >= 2
    got = {params_of(b)["subscription"]["valueReference"]["reference"]: focus_versions(b) for _, b in hook.received}
    assert got["Subscription/s-arrive"] == ["Encounter/e5/_history/2"]
    assert got["Subscription/s-end"] == ["Encounter/e5/_history/4"]
    assert got["Subscription/s-start"] == ["Encounter/e5/_history/2", "Encounter/e5/_history/3"]


@pytest.mark.django_db
def test_a_topic_the_server_cannot_evaluate_is_refused_not_ignored(django_user_model: Any, hook: Hook,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic whose ``previous`` the server could not evaluate (here: FHIRPath, a parameter Encounter does not
    define) makes the Subscription a 400 OperationOutcome naming the element; nothing is stored."""
    u = django_user_model.objects.create_user(username="adt.engine2")
    role_assign(user=u, role="integration")
    c = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=u, name='t')}")
    # Topics are the server's catalogue: a client cannot store one of its own (R4 has no SubscriptionTopic type).
    own = {**topics.topic_by_id("encounter-arrived"), "id": "mine"}  # type: ignore[dict-item]
    for r in (c.post(f"{BASE}/SubscriptionTopic", json.dumps(own), content_type=FHIR),
              c.put(f"{BASE}/SubscriptionTopic/mine", json.dumps(own), content_type=FHIR)):
        assert r.status_code == 405 and "catalogue" in r.json()["issue"][0]["diagnostics"], r.content
    real = topics.catalogue()
    for tid, trigger, words in (
        ("fhirpath", {"fhirPathCriteria": [{"previous": "%previous.status = 'planned'"}]}, "fhirPathCriteria"),
        ("colour", {"queryCriteria": {"previous": "Encounter?colour=blue", "requireBoth": True}}, "colour"),
    ):
        topic = {**topics.topic_by_id("Encounter-change"), "id": tid, "url": T + tid}  # type: ignore[dict-item]
        topic["resourceTrigger"] = [{**topic["resourceTrigger"][0], **trigger}]
        monkeypatch.setattr(topics, "catalogue", lambda t=topic: {**real, t["url"]: t})
        sub = topic_sub("s-bad", T + tid, channel=rest_hook(hook.port))
        r = c.put(f"{BASE}/Subscription/s-bad", json.dumps(sub), content_type=FHIR)
        assert r.status_code == 400, r.content
        issue = r.json()["issue"][0]
        assert issue["code"] == "not-supported" and words in issue["diagnostics"]
        assert c.get(f"{BASE}/Subscription/s-bad").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_transition_over_a_real_websocket(live_asgi: str, live_asgi_server: Any, django_user_model: Any,
                                                request: pytest.FixtureRequest) -> None:
    """planned → planned → in-progress → in-progress over HTTP to a uvicorn process: the socket gets exactly one
    event, for version 3; then only heartbeats, which count that one event."""
    from channels.db import database_sync_to_async
    from websockets.asyncio.client import connect

    if os.environ.get("REDIS_URL"):
        request.getfixturevalue("redis_channel_layer")

    def setup() -> str:
        u = django_user_model.objects.create_user(username="ws.adt.engine")
        role_assign(user=u, role="integration")
        resources_import(resources=[{"resourceType": "Patient", "id": "wt1"}])
        return token_create(user=u, name="ws")

    token = await database_sync_to_async(setup)()
    sub = topic_sub("s-ws-arrive", T + "encounter-arrived", filters=("Encounter?patient=Patient/wt1",),
                    channel={"type": "websocket"}, heartbeat=1)
    status, _ = await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Subscription/s-ws-arrive", token, "PUT", sub)
    assert status == 201
    _, binding = await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Subscription/s-ws-arrive/$get-ws-binding-token",
                                         token, "GET")
    bind = {p["name"]: p for p in binding["parameter"]}
    async with connect(live_asgi_server.ws_url + bind["websocket-url"]["valueUrl"], origin=live_asgi_server.origin,
                       open_timeout=10) as ws:
        await ws.send(f"bind-with-token {bind['token']['valueString']}")
        assert params_of(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))["type"]["valueCode"] == "handshake"
        for status_, text in (("planned", "a"), ("planned", "b"), ("in-progress", "b"), ("in-progress", "c")):
            await asyncio.to_thread(_http, f"{live_asgi}{BASE}/Encounter/we1", token, "PUT",
                                    enc("we1", "wt1", status_, text))
            if os.environ.get("REDIS_URL"):  # the server queued the dispatch for a worker: be the worker
                await database_sync_to_async(dispatch)()
        events: list[str] = []
        beats = 0
        while beats < 2:  # two heartbeats after the writes: anything sent twice would have come before them
            b = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            kind = params_of(b)["type"]["valueCode"]
            if kind == "event-notification":
                events += focus_versions(b)
            elif events:
                beats += 1
                assert kind == "heartbeat" and params_of(b)["events-since-subscription-start"]["valueString"] == "1"
        assert events == ["Encounter/we1/_history/3"]
