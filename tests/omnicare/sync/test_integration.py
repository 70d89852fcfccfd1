"""Sync wired to the rest of the server: revoked devices, FHIR REST writes as WebSocket hints, gzip pulls."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from omnicare.asgi import application
from omnicare.fhir.models import ResourceVersion
from tests.omnicare.sync.conftest import SyncClient, observation, put, seed
from tests.omnicare.sync.test_ws import ORIGIN, in_memory_layer, make_clinic, token  # noqa: F401

WIPE = "revoked; wipe"


def revoke(user: Any, device_id: str) -> None:
    from omnicare.access.services import device_revoke

    device_revoke(owner=user, device_id=device_id, by=user, reason="lost on the bus")


def test_a_revoked_device_can_neither_pull_nor_push_and_is_told_to_wipe(clinic: Any, api: Any) -> None:
    sync = SyncClient(api, "tablet-1")
    sync.pull_all()
    revoke(clinic["user"], "tablet-1")
    versions = ResourceVersion.objects.count()
    for r in (
        sync.post("/pull?deviceId=tablet-1", {"cursor": None, "limit": 10}),
        api.get("/api/sync/pull", {"deviceId": "tablet-1"}),
        sync.post("/push", {"deviceId": "tablet-1", "mutations": [put(observation("o1", "p1", 99.0), 1)]}),
        sync.post("/push/jobs", {"deviceId": "tablet-1", "mutations": [put(observation("o1", "p1", 99.0), 1)]}),
    ):
        assert r.status_code == 403, r.content
        assert r["OmniCare-Device"] == WIPE
        assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "device-revoked"
    assert ResourceVersion.objects.count() == versions
    # Revoking ended the token that tablet ran on (issue 10); another device of the same user still syncs
    # with its own credentials.
    assert api.get("/api/auth/me").status_code == 403  # its token is dead and tells the tablet to wipe
    from django.test import Client

    from omnicare.access.services import token_create

    fresh = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=clinic['user'], name='tablet-2')}")
    assert SyncClient(fresh, "tablet-2").post("/pull?deviceId=tablet-2", {"cursor": None}).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_a_revoked_device_is_refused_on_the_websocket(in_memory_layer: Any, user: Any, other_user: Any) -> None:  # noqa: F811
    await make_clinic(user, other_user)
    await database_sync_to_async(revoke)(user, "tablet-9")
    comm = WebsocketCommunicator(application, "/ws/sync?deviceId=tablet-9", headers=[ORIGIN])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "auth", "token": await token(user)})
    assert await comm.receive_json_from(timeout=5) == {"type": "device-revoked", "wipe": True}
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4403}

    comm = WebsocketCommunicator(application, "/ws/sync", headers=[ORIGIN])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "auth", "token": await token(user), "deviceId": "tablet-9"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "device-revoked"
    comm2 = WebsocketCommunicator(application, "/ws/sync?deviceId=tablet-ok", headers=[ORIGIN])
    await comm2.connect()
    await comm2.send_json_to({"type": "auth", "token": await token(user)})
    assert (await comm2.receive_json_from(timeout=5))["type"] == "ready"
    await comm2.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_fhir_rest_put_produces_a_hint_for_a_subscribed_in_scope_user(
    in_memory_layer: Any, user: Any, other_user: Any  # noqa: F811
) -> None:
    await make_clinic(user, other_user)
    await database_sync_to_async(seed)(observation("o1", "p1"), observation("o2", "p2"))
    comm = WebsocketCommunicator(application, "/ws/sync", headers=[ORIGIN])
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": await token(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    @database_sync_to_async
    def rest_put(who: Any, oid: str, pid: str, value: float) -> int:
        from django.test import Client

        from omnicare.access.services import token_create

        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=who, name='rest')}")
        body = json.dumps(observation(oid, pid, value))
        return int(client.put(f"/fhir/R4/Observation/{oid}", body, content_type="application/fhir+json").status_code)

    assert await rest_put(other_user, "o2", "p2", 60.0) == 200  # p2 is not dr.test's patient: no hint
    assert await rest_put(user, "o1", "p1", 61.0) == 200
    hint = await comm.receive_json_from(timeout=5)
    assert hint["type"] == "sync.hint"
    assert [(c["resourceType"], c["id"], c["versionId"]) for c in hint["changes"]] == [("Observation", "o1", 2)]
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


def test_a_large_pull_is_gzip_encoded_when_asked(clinic: Any, api: Any) -> None:
    seed(*[observation(f"big-{i}", "p1", float(i)) for i in range(300)])
    api.post("/api/sync/devices", json.dumps({"deviceId": "gz"}), content_type="application/json")
    r = api.post("/api/sync/pull?deviceId=gz", json.dumps({"cursor": None, "limit": 500}), content_type="application/json",
                 HTTP_ACCEPT_ENCODING="gzip")
    assert r.status_code == 200 and r["Content-Encoding"] == "gzip"
    page = json.loads(gzip.decompress(r.content))
    assert len(page["changes"]) >= 300
    assert len(r.content) * 4 < len(gzip.decompress(r.content))
    plain = api.post("/api/sync/pull?deviceId=gz", json.dumps({"cursor": None, "limit": 500}), content_type="application/json")
    assert not plain.has_header("Content-Encoding") and json.loads(plain.content)["changes"]


@pytest.mark.django_db(transaction=True)
async def test_a_push_through_the_audited_api_still_sends_its_hint(
    in_memory_layer: Any, user: Any, other_user: Any  # noqa: F811
) -> None:
    """The API runs a push inside the audit transaction: the hint must wait for that commit, not be lost."""
    await make_clinic(user, other_user)
    comm = WebsocketCommunicator(application, "/ws/sync", headers=[ORIGIN])
    await comm.connect()
    await comm.send_json_to({"type": "auth", "token": await token(user)})
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"

    @database_sync_to_async
    def api_push() -> int:
        from django.test import Client

        from omnicare.access.services import token_create

        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='push')}")
        body = {"deviceId": "d-api", "mutations": [put(observation("o-api", "p1"), None)]}
        return int(client.post("/api/sync/push", json.dumps(body), content_type="application/json").status_code)

    assert await api_push() == 200
    hint = await comm.receive_json_from(timeout=5)
    assert [c["id"] for c in hint["changes"]] == ["o-api"]
    await comm.disconnect()
