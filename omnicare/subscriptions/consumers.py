"""``/ws/subscriptions``: the websocket channel of FHIR Subscriptions (R4 backport). The client first calls
``Subscription/{id}/$get-ws-binding-token`` and sends ``bind-with-token <token>``; the server answers with a
handshake notification and then pushes every event-notification Bundle of that subscription. Missed ones are
fetched with ``$events`` (events are numbered).

Heartbeats are sent here, by the process holding the socket: only it knows the socket is open and when it last
sent anything, so a subscription with a ``backport-heartbeat-period`` gets a ``heartbeat`` notification after
each period without one (events reset the clock)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .services import heartbeat_bundle, ws_bind, ws_group, ws_heartbeat_period


class SubscriptionConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.bound: list[str] = []
        self.last_sent: dict[str, float] = {}
        self.beats: list[asyncio.Task[None]] = []
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        text = (text_data or "").strip()
        if not text.startswith("bind-with-token "):
            await self.close(code=4400)
            return
        sid = await database_sync_to_async(ws_bind)(token=text.split(" ", 1)[1].strip())
        if sid is None:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(ws_group(sid), self.channel_name)
        self.bound.append(sid)
        await self.send(json.dumps({"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
            "resourceType": "Parameters", "parameter": [
                {"name": "subscription", "valueReference": {"reference": f"Subscription/{sid}"}},
                {"name": "type", "valueCode": "handshake"}]}}]}))
        self.last_sent[sid] = time.monotonic()
        period = await database_sync_to_async(ws_heartbeat_period)(subscription_id=sid)
        if period:
            self.beats.append(asyncio.create_task(self._heartbeats(sid, period)))

    async def _heartbeats(self, sid: str, period: int) -> None:
        while True:
            due = self.last_sent.get(sid, 0.0) + period
            await asyncio.sleep(max(0.05, due - time.monotonic()))
            if time.monotonic() < self.last_sent.get(sid, 0.0) + period:
                continue  # something was sent meanwhile
            bundle = await database_sync_to_async(heartbeat_bundle)(subscription_id=sid)
            if bundle is None:
                return  # the subscription ended
            await self.send(json.dumps(bundle))
            self.last_sent[sid] = time.monotonic()

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send(event["text"])
        if event.get("sid"):
            self.last_sent[str(event["sid"])] = time.monotonic()

    async def disconnect(self, code: int) -> None:
        for task in self.beats:
            task.cancel()
        for sid in self.bound:
            await self.channel_layer.group_discard(ws_group(sid), self.channel_name)
