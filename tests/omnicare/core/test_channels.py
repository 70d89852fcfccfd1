"""Channels: the authenticated /ws/ping socket, on the in-memory layer, on Redis, and through a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from omnicare.asgi import application
from omnicare.core.consumers import PingConsumer
from tests.conftest import requires_redis
from tests.live import LiveServer

ORIGIN = (b"origin", b"http://127.0.0.1")


def communicator(headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/ping", headers=[ORIGIN, *(headers or [])])


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


async def session_cookie_for(user: Any) -> bytes:
    """Log ``user`` in with the Django test client and return the ``Cookie`` header it would send."""
    from django.test import Client

    def login() -> str:
        client = Client()
        client.force_login(user)
        return str(client.cookies[settings.SESSION_COOKIE_NAME].value)

    session_key = await database_sync_to_async(login)()
    return f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_socket_is_refused(in_memory_layer: Any) -> None:
    comm = communicator()
    connected, code = await comm.connect()
    assert not connected
    assert code == 4401
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_from_a_foreign_origin_is_refused_even_with_a_session(
    in_memory_layer: Any, user: Any
) -> None:
    cookie = await session_cookie_for(user)
    comm = WebsocketCommunicator(
        application, "/ws/ping", headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie)]
    )
    connected, _ = await comm.connect()
    assert not connected
    await comm.disconnect()


async def _assert_group_send_reaches_socket(comm: WebsocketCommunicator, layer: Any) -> None:
    connected, _ = await comm.connect()
    assert connected
    await comm.send_json_to({"hello": "world"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong", "echo": {"hello": "world"}}
    await layer.group_send(PingConsumer.group, {"type": "ping.message", "data": {"n": 7}})
    assert await comm.receive_json_from(timeout=5) == {"type": "broadcast", "data": {"n": 7}}
    await comm.disconnect()
    # After disconnect the socket has left the group: a later broadcast reaches nobody (and does not fail).
    await layer.group_send(PingConsumer.group, {"type": "ping.message", "data": {"n": 8}})


@pytest.mark.django_db(transaction=True)
async def test_session_user_connects_and_receives_group_broadcast_in_memory(
    in_memory_layer: Any, user: Any
) -> None:
    cookie = await session_cookie_for(user)
    await _assert_group_send_reaches_socket(communicator([(b"cookie", cookie)]), in_memory_layer)


@pytest.mark.django_db(transaction=True)
async def test_forced_scope_user_connects_and_anonymous_scope_user_does_not(
    in_memory_layer: Any, user: Any
) -> None:
    comm = WebsocketCommunicator(PingConsumer.as_asgi(), "/ws/ping")
    comm.scope["user"] = user
    await _assert_group_send_reaches_socket(comm, in_memory_layer)

    anon = WebsocketCommunicator(PingConsumer.as_asgi(), "/ws/ping")
    anon.scope["user"] = AnonymousUser()
    connected, code = await anon.connect()
    assert (connected, code) == (False, 4401)


@requires_redis
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_session_user_receives_group_broadcast_over_channels_redis(
    redis_channel_layer: Any, user: Any
) -> None:
    from channels_redis.core import RedisChannelLayer

    assert isinstance(redis_channel_layer, RedisChannelLayer)
    cookie = await session_cookie_for(user)
    await _assert_group_send_reaches_socket(communicator([(b"cookie", cookie)]), redis_channel_layer)
    await redis_channel_layer.flush()


@pytest.mark.django_db(transaction=True)
async def test_real_websocket_through_the_live_server(
    live_asgi: str, live_asgi_server: LiveServer, user: Any, settings: Any, channel_prefix: str
) -> None:
    """A real client over TCP: session cookie from a login, Origin of an allowed host.

    The group broadcast from this process reaches the server's socket only through Redis (the
    in-memory layer is per process), so that part runs when REDIS_URL is set.
    """
    import os

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    # A socket without the session is refused at the handshake (consumer closes before accept → 403).
    with pytest.raises(InvalidStatus):
        async with connect(live_asgi_server.ws_url + "/ws/ping", origin=live_asgi_server.origin):  # type: ignore[arg-type]
            pass

    cookie = (await session_cookie_for(user)).decode()
    async with connect(
        live_asgi_server.ws_url + "/ws/ping",
        origin=live_asgi_server.origin,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as ws:
        await ws.send(json.dumps({"hello": "live"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        assert reply == {"type": "pong", "echo": {"hello": "live"}}

        if os.environ.get("REDIS_URL"):
            settings.CHANNEL_LAYERS = {
                "default": {
                    "BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "prefix": channel_prefix},
                }
            }
            layer = get_channel_layer()
            assert layer is not None
            await layer.group_send(PingConsumer.group, {"type": "ping.message", "data": {"from": "test"}})
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            assert reply == {"type": "broadcast", "data": {"from": "test"}}
