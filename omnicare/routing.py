"""WebSocket routes (/ws/...). Each domain contributes its own patterns."""

from __future__ import annotations

from django.urls import path

from omnicare.core.consumers import PingConsumer
from omnicare.subscriptions.consumers import SubscriptionConsumer
from omnicare.sync.consumers import SyncConsumer

websocket_urlpatterns = [
    path("ws/ping", PingConsumer.as_asgi()),
    path("ws/sync", SyncConsumer.as_asgi()),
    path("ws/subscriptions", SubscriptionConsumer.as_asgi()),  # FHIR Subscriptions, websocket channel
]
