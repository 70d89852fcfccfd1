"""``/ws/sync``: change hints for a signed-in device (Channels).

Authentication: the session cookie (the PWA), or — for API clients without cookies — a bearer token sent as
the FIRST message ``{"type": "auth", "token": "oc_...", "deviceId": "..."}`` within ``AUTH_TIMEOUT`` seconds. Tokens are never
taken from the query string (URLs end up in access logs). Until authenticated nothing is sent; a bad token
closes with code 4401. The device (``?deviceId=`` in the URL or ``deviceId`` in the auth message) is checked
with ``access.services.device_check``: a revoked one gets ``{"type": "device-revoked", "wipe": true}`` and
close code 4403 (the PWA then erases its local data). On success the server sends ``{"type": "ready", "seq": <feed head>}``.

Notifications are hints, not data: ``{"type": "sync.hint", "seq": N, "bundle": <R4B SubscriptionStatus
notification Bundle>}`` naming what changed (type/id/version, ``eventNumber`` = feed seq) within the user's
scope, up to feed position N. The client then pulls with its cursor; after any reconnect it pulls anyway,
so a dropped hint costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from omnicare.access.services import (
    SESSION_REVOKED,
    DeviceRevoked,
    device_check,
    device_is_revoked,
    grants_preload_clear,
    may_access,
    token_authenticate,
)
from omnicare.core.errors import BadRequest
from omnicare.fhir.search import SUPPORTED_TYPES
from omnicare.fhir.services import feed_head

from . import scope as scopes
from .notify import GROUP

AUTH_TIMEOUT = 10.0


def notification_bundle(*, seq: int, changes: list[dict[str, Any]], events_total: int) -> dict[str, Any]:
    """An R4B ``SubscriptionStatus`` event-notification Bundle (type ``history``) for these changes."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
        "eventsSinceSubscriptionStart": str(events_total),
        "notificationEvent": [
            {
                "eventNumber": str(c["seq"]),
                "timestamp": now,
                "focus": {"reference": f"{c['resourceType']}/{c['id']}/_history/{c['versionId']}"},
            }
            for c in changes
        ],
        "subscription": {"reference": "Subscription/omnicare-sync"},
        "topic": "urn:omnicare:sync:changes",
    }
    return {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": now,
        "entry": [{"fullUrl": "urn:omnicare:sync:status", "resource": status}],
        "meta": {"tag": [{"system": "urn:omnicare:sync", "code": "head", "display": str(seq)}]},
    }


@database_sync_to_async
def _auth_token(token: str) -> Any:
    return token_authenticate(token=token)


@database_sync_to_async
def _scope(user: Any) -> tuple[set[str], set[tuple[str, str]], frozenset[str]]:
    """(patients, other resources, readable types): a hint names only what a pull would deliver."""
    patients, others = scopes.split_keys(scopes.scope_keys(user=user))
    readable = frozenset(t for t in SUPPORTED_TYPES if may_access(user=user, action="read", resource_type=t))
    return patients, others, readable


@database_sync_to_async
def _revoked(user: Any, device_id: str | None) -> str | None:
    """``access.services.device_check`` for a socket: ``"revoked"`` (and the wipe is noted) if the device is
    revoked, ``"invalid"`` if the id breaks the device-id rule, None if fine."""
    try:
        device_check(user=user, device_id=device_id)
    except DeviceRevoked:
        return "revoked"
    except BadRequest:
        return "invalid"
    return None


#: Close code for a revoked device (after a ``{"type": "device-revoked", "wipe": true}`` message).
CLOSE_REVOKED = 4403
#: Close code for a device id that breaks ``access.services.device_id_check``.
CLOSE_BAD_DEVICE = 4400


@database_sync_to_async
def _still_allowed(user_id: Any, token: str | None, session_key: str | None, device_id: str | None) -> str | None:
    """Why this socket must close now (``"revoked"`` device, ``"signed-out"``), or None while it may stay open:
    the account is active, its token is not revoked (or its session still exists), the device not revoked."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return "signed-out"
    if token is not None and token_authenticate(token=token) is None:
        return "signed-out"
    if token is None:
        if session_key is None or not SessionStore().exists(session_key):
            return "signed-out"

        if SessionStore(session_key=session_key).load().get(SESSION_REVOKED):
            return "revoked"
    if device_is_revoked(user=user, device_id=device_id):
        return "revoked"
    return None


#: Seconds between an open socket's credential re-checks (revocations are also pushed at once).
RECHECK_SECONDS = 5.0


@database_sync_to_async
def _head() -> int:
    return feed_head()


class SyncConsumer(AsyncJsonWebsocketConsumer):
    """One socket per device; joins the ``sync.feed`` group once authenticated."""

    user: Any = None
    patients: set[str]
    others: set[tuple[str, str]]
    readable: frozenset[str] = frozenset()
    events = 0
    _timeout: asyncio.Task[None] | None = None

    device_id: str | None = None
    _token: str | None = None
    _session_key: str | None = None
    _recheck: asyncio.Task[None] | None = None
    _user_group: str | None = None

    async def connect(self) -> None:
        await self.accept()
        # The device id is not a secret (unlike a token): the query string is fine.
        query = parse_qs((self.scope.get("query_string") or b"").decode("latin-1"))
        self.device_id = (query.get("deviceId") or [None])[0]
        user = self.scope.get("user")
        if user is not None and user.is_authenticated and user.is_active:
            await self._ready(user)
        else:
            self._timeout = asyncio.ensure_future(self._auth_deadline())

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(AUTH_TIMEOUT)
        if self.user is None:
            await self.close(code=4401)

    async def _ready(self, user: Any) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        verdict = await _revoked(user, self.device_id)
        if verdict == "invalid":
            await self.close(code=CLOSE_BAD_DEVICE)
            return
        if verdict == "revoked":
            await self.send_json({"type": "device-revoked", "wipe": True})
            await self.close(code=CLOSE_REVOKED)
            return
        self.user = user
        self.patients, self.others, self.readable = await _scope(user)
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self._user_group = f"oc.user.{user.pk}"
        await self.channel_layer.group_add(self._user_group, self.channel_name)
        session = self.scope.get("session")
        self._session_key = getattr(session, "session_key", None) if self._token is None else None
        self._recheck = asyncio.ensure_future(self._recheck_loop())
        await self.send_json({"type": "ready", "seq": await _head()})

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            if await self._close_if_revoked():
                return

    async def _close_if_revoked(self) -> bool:
        """Close at once if the device was revoked, the token revoked, the session ended or the account
        disabled (issue 10, item 14: no hint after a revocation)."""
        if self.user is None:
            return True
        why = await _still_allowed(self.user.pk, self._token, self._session_key, self.device_id)
        if why is None:
            return False
        self.user = None  # no further hint, even one already queued
        if why == "revoked":
            await self.send_json({"type": "device-revoked", "wipe": True})
            await self.close(code=CLOSE_REVOKED)
        else:
            await self.close(code=4401)
        return True

    async def credentials_changed(self, event: dict[str, Any]) -> None:
        """Group message from ``access.services.credentials_notify``: re-check now."""
        await self._close_if_revoked()

    async def emergency_ended(self, event: dict[str, Any]) -> None:
        """Group message from ``access.services.break_glass_notify``: one of this user's emergency grants ended.
        The scope shrinks now (no further hint about that patient) and the device is told, so it removes the
        chart at once instead of at its next poll."""
        if self.user is None:
            return

        grants_preload_clear(self.user)
        self.patients, self.others, self.readable = await _scope(self.user)
        await self.send_json({"type": "emergency-ended", "grantId": event.get("grantId"),
                              "patientId": event.get("patientId")})

    async def disconnect(self, code: int) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        if self._recheck is not None:
            self._recheck.cancel()
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(GROUP, self.channel_name)
        if self._user_group is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(self._user_group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.user is None:
            token = (
                content.get("token") if isinstance(content, dict) and content.get("type") == "auth" else None
            )
            user = await _auth_token(token) if isinstance(token, str) else None
            self._token = token if user is not None else None
            if isinstance(content.get("deviceId"), str):
                self.device_id = content["deviceId"]
            if user is None:
                await self.close(code=4401)
                return
            await self._ready(user)
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def sync_changed(self, event: dict[str, Any]) -> None:
        """Group message from ``notify.send_hint``: forward only what this user may see."""
        if self.user is None:
            return
        if event.get("scopeChanged"):
            self.patients, self.others, self.readable = await _scope(self.user)
        mine = [
            c
            for c in event.get("changes", [])
            if c.get("resourceType") in self.readable
            and scopes.version_in_scope(
                resource_type=c["resourceType"],
                resource_id=c["id"],
                patient_ids=c.get("patients") or [],
                patients=self.patients,
                others=self.others,
            )
        ]
        if not mine and not event.get("more") and not event.get("scopeChanged"):
            return
        if not mine and not (self.patients or self.others):
            return
        public = [{k: c[k] for k in ("resourceType", "id", "versionId", "seq", "deleted")} for c in mine]
        self.events += len(public)
        await self.send_json(
            {
                "type": "sync.hint",
                "seq": event["seq"],
                "changes": public,
                "more": bool(event.get("more")),
                "bundle": notification_bundle(seq=event["seq"], changes=public, events_total=self.events),
            }
        )
