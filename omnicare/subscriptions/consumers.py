"""``/ws/subscriptions``: the websocket channel of FHIR Subscriptions (R4 backport). The client first calls
``Subscription/{id}/$get-ws-binding-token`` and sends ``bind-with-token <token>``; the server answers with a
handshake notification and then pushes every event-notification Bundle of that subscription. Missed ones are
fetched with ``$events`` (events are numbered)."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .services import ws_bind, ws_group


class SubscriptionConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.bound: list[str] = []
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

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send(event["text"])

    async def disconnect(self, code: int) -> None:
        for sid in self.bound:
            await self.channel_layer.group_discard(ws_group(sid), self.channel_name)
