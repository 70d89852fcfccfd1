"""/ws/sync: authenticated change hints, filtered by scope; across two server processes through Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from omnicare.asgi import application
from omnicare.sync import services
from pyclient.protocol import PushRequest
from tests.conftest import requires_redis
from tests.live import LiveServer, live_server_start, live_server_stop
from tests.omnicare.core.test_channels import session_cookie_for
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, put, seed

ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


@database_sync_to_async
def make_clinic(user: Any, other: Any) -> None:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    role_assign(user=other, role=PHYSICIAN)
    seed(
        practitioner(user.username),
        practitioner(other.username),
        patient("p1"),
        patient("p2"),
        care_team("p1", [user.username]),
        care_team("p2", [other.username]),
    )


@database_sync_to_async
def push_as(user: Any, *mutations: dict[str, Any]) -> Any:
    return services.push(
        user=user, request=PushRequest.from_json({"deviceId": "d1", "mutations": list(mutations)})
    )


@database_sync_to_async
def token(user: Any) -> str:
    from omnicare.access.services import token_create

    return token_create(user=user, name="ws")


@pytest.mark.django_db(transaction=True)
async def test_session_socket_gets_hints_for_its_patients_only(
    in_memory_layer: Any, user: Any, other_user: Any
) -> None:
    await make_clinic(user, other_user)
    comm = WebsocketCommunicator(
        application, "/ws/sync", headers=[ORIGIN, (b"cookie", await session_cookie_for(user))]
    )
    connected, _ = await comm.connect()
    assert connected
    ready = await comm.receive_json_from(timeout=5)
    assert ready["type"] == "ready" and ready["seq"] > 0

    await push_as(other_user, put(observation("o2", "p2"), None))  # not dr.test's patient: no hint
    await push_as(user, put(observation("o1", "p1", 80.0), None))
    hint = await comm.receive_json_from(timeout=5)
    assert hint["type"] == "sync.hint"
    assert [(c["resourceType"], c["id"], c["versionId"]) for c in hint["changes"]] == [
        ("Observation", "o1", 1)
    ]
    bundle = hint["bundle"]
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "SubscriptionStatus" and status["type"] == "event-notification"
    assert status["notificationEvent"][0]["focus"]["reference"] == "Observation/o1/_history/1"
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_bearer_token_as_first_message_and_bad_token_closes(
    in_memory_layer: Any, user: Any, other_user: Any
) -> None:
    await make_clinic(user, other_user)
    comm = WebsocketCommunicator(application, "/ws/sync", headers=[ORIGIN])
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"type": "auth", "token": await token(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    await push_as(user, put(observation("o1", "p1"), None))
    assert (await comm.receive_json_from(timeout=5))["changes"][0]["id"] == "o1"
    await comm.disconnect()

    bad = WebsocketCommunicator(application, "/ws/sync", headers=[ORIGIN])
    await bad.connect()
    await bad.send_json_to({"type": "auth", "token": "oc_wrong"})
    out = await bad.receive_output(timeout=5)
    assert out == {"type": "websocket.close", "code": 4401}


@pytest.mark.django_db(transaction=True)
async def test_joining_a_care_team_starts_hints_for_that_patient(
    in_memory_layer: Any, user: Any, other_user: Any
) -> None:
    await make_clinic(user, other_user)
    comm = WebsocketCommunicator(
        application, "/ws/sync", headers=[ORIGIN, (b"cookie", await session_cookie_for(user))]
    )
    await comm.connect()
    await comm.receive_json_from(timeout=5)
    await push_as(other_user, put(care_team("p2", [other_user.username, user.username]), 1))
    hint = await comm.receive_json_from(timeout=5)  # the care team itself is now in scope
    assert hint["changes"][0]["id"] == "ct-p2"
    await push_as(other_user, put(observation("o2", "p2"), None))
    assert (await comm.receive_json_from(timeout=5))["changes"][0]["id"] == "o2"
    await comm.disconnect()


def _http_push(base: str, tok: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(  # noqa: S310 (127.0.0.1)
        base + "/api/sync/push",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())  # type: ignore[no-any-return]


@requires_redis
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_hint_crosses_server_processes_through_redis(
    live_asgi: str,
    live_asgi_server: LiveServer,
    user: Any,
    other_user: Any,
    channel_prefix: str,
    settings: Any,
) -> None:
    """A client on process A gets a hint for a write made through process B's API (channels-redis)."""
    from websockets.asyncio.client import connect

    await make_clinic(user, other_user)
    tok = await token(user)
    database = dict(settings.DATABASES["default"])
    server_b = await asyncio.to_thread(
        live_server_start, database=database, extra_env={"OMNICARE_CHANNEL_PREFIX": channel_prefix}
    )
    try:
        assert server_b.port != live_asgi_server.port
        async with connect(
            live_asgi_server.ws_url + "/ws/sync",
            origin=live_asgi_server.origin,  # type: ignore[arg-type]
            open_timeout=10,
        ) as ws:
            await ws.send(json.dumps({"type": "auth", "token": tok}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            assert ready["type"] == "ready"
            oid = f"x-{uuid.uuid4().hex[:8]}"
            body = {"deviceId": "d-b", "mutations": [put(observation(oid, "p1"), None)]}
            result = await asyncio.to_thread(_http_push, server_b.url, tok, body)
            assert result["results"][0]["status"] == "applied"
            hint = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            assert hint["type"] == "sync.hint" and hint["changes"][0]["id"] == oid
            assert hint["seq"] >= ready["seq"] + 1
    finally:
        await asyncio.to_thread(live_server_stop, server_b)
