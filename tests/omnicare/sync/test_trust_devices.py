"""Device revocation that revokes (issue 10, item 14), replayed with real requests and a real WebSocket.

After a tablet is reported lost: the session and tokens it used are dead; the same credentials get nothing with
no device id, a new device id or the revoked id re-registered; no snapshot is built for it; an open socket of
that device, token or account is closed within seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from omnicare.access.models import ApiToken
from omnicare.access.services import device_revoke, token_create
from omnicare.sync.models import Device, Snapshot
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, seed

WIPE = "revoked; wipe"


def _token_client(user: Any) -> tuple[Client, str]:
    tok = token_create(user=user, name="tablet")
    return Client(HTTP_AUTHORIZATION=f"Bearer {tok}"), tok


def _pull(client: Client, device: str | None) -> Any:
    path = "/api/sync/pull" + (f"?deviceId={device}" if device else "")
    return client.post(path, json.dumps({"cursor": None, "limit": 50}), content_type="application/json")


def _register(client: Client, device: str) -> Any:
    return client.post("/api/sync/devices", json.dumps({"deviceId": device}), content_type="application/json")


@pytest.mark.django_db
def test_revoking_a_device_ends_its_token_and_session_and_nothing_else(clinic: dict[str, Any]) -> None:
    doctor = clinic["user"]
    tablet, _ = _token_client(doctor)
    laptop, _ = _token_client(doctor)
    browser = Client(HTTP_OMNICARE_DEVICE_ID="tab-lost")  # the PWA names its device on every request
    browser.force_login(doctor)
    for client, device in ((tablet, "tab-lost"), (laptop, "laptop-1"), (browser, "tab-lost")):
        assert _register(client, device).status_code == 200
        assert _pull(client, device).status_code == 200
    assert ApiToken.objects.filter(device_id="tab-lost").count() == 1
    device_revoke(owner=doctor, device_id="tab-lost", by=doctor, reason="lost on the bus")
    r = tablet.get("/fhir/R4/Observation/o1")
    assert r.status_code == 403 and r["OmniCare-Device"] == WIPE  # dead token, told to wipe
    r = browser.get("/fhir/R4/Observation/o1")
    assert r.status_code == 403 and r["OmniCare-Device"] == WIPE  # its session is dead and orders the wipe
    assert laptop.get("/fhir/R4/Observation/o1").status_code == 200  # the laptop's own token is untouched
    assert _pull(laptop, "laptop-1").status_code == 200


@pytest.mark.django_db
def test_the_same_credentials_get_nothing_with_no_new_or_reregistered_device_id(clinic: dict[str, Any]) -> None:
    doctor = clinic["user"]
    tablet, _ = _token_client(doctor)
    assert _register(tablet, "tab-1").status_code == 200
    assert _pull(tablet, "tab-1").status_code == 200
    # Same token, no device id / another device id: no patient data.
    assert _pull(tablet, None).status_code == 400
    r = _pull(tablet, "tab-new")
    assert r.status_code in (403, 400) and "changes" not in r.json()
    push = tablet.post("/api/sync/push", json.dumps({"deviceId": "tab-other", "mutations": []}),
                       content_type="application/json")
    assert push.status_code == 403
    device_revoke(owner=doctor, device_id="tab-1", by=doctor, reason="stolen")
    # A fresh token (the thief signed in again) cannot bring the revoked id back, nor can anyone else.
    fresh, _ = _token_client(doctor)
    for client in (fresh, _token_client(clinic["other"])[0]):
        r = _register(client, "tab-1")
        assert r.status_code == 403 and r["OmniCare-Device"] == WIPE
        assert _pull(client, "tab-1").status_code == 403
        snap = client.post("/api/sync/snapshots", json.dumps({"deviceId": "tab-1"}), content_type="application/json")
        assert snap.status_code == 403
    assert not Snapshot.objects.exists()
    assert not Device.objects.filter(device_id="tab-1").exclude(user=doctor).exists()


@pytest.mark.django_db
def test_an_unregistered_device_gets_no_patient_data(clinic: dict[str, Any]) -> None:
    client, _ = _token_client(clinic["user"])
    r = _pull(client, "never-registered")
    assert r.status_code == 403 and "changes" not in r.json()
    r = client.get("/api/sync/pull", {"limit": 10})
    assert r.status_code == 400 and "changes" not in r.json()


@pytest.mark.django_db
def test_a_session_bound_to_a_device_reads_nothing_without_that_device(clinic: dict[str, Any]) -> None:
    """Item 15: the cookie of a tablet wiped by an offline sign-out (its device id is gone with it) reads no
    chart over FHIR REST or sync, while the tablet itself, naming its device, does; the sign-out still works."""
    browser = Client()
    browser.force_login(clinic["user"])
    assert browser.get("/fhir/R4/Observation/o1").status_code == 200  # not bound yet: no sync contact so far
    tablet = Client(HTTP_OMNICARE_DEVICE_ID="tab-7")
    tablet.cookies = browser.cookies
    assert _register(tablet, "tab-7").status_code == 200
    assert _pull(tablet, "tab-7").status_code == 200
    assert tablet.get("/fhir/R4/Observation/o1").status_code == 200
    stale = Client()
    stale.cookies = browser.cookies
    r = stale.get("/fhir/R4/Observation/o1")
    assert r.status_code == 401 and "o1" not in r.content.decode()
    assert stale.get("/fhir/R4/Patient", {"_count": 5}).status_code == 401
    assert _pull(stale, "tab-7").status_code == 401
    other = Client(HTTP_OMNICARE_DEVICE_ID="tab-8")
    other.cookies = browser.cookies
    assert other.get("/fhir/R4/Observation/o1").status_code == 403
    # The sign-out made offline completes with the bare cookie; after it the device id does not help either.
    stale.get("/api/auth/csrf")
    assert stale.post("/api/auth/logout", "{}", content_type="application/json").status_code == 200
    assert tablet.get("/fhir/R4/Observation/o1").status_code == 401


# --- a real WebSocket on a real server --------------------------------------------------------------------------


def _live_clinic() -> tuple[Any, str]:
    from omnicare.access.roles import PHYSICIAN, role_assign

    user = get_user_model().objects.create_user(username=f"dr.ws{time.monotonic_ns() % 10**8}")
    role_assign(user=user, role=PHYSICIAN)
    seed(practitioner(user.username), patient("pw1"), care_team("pw1", [user.username]), observation("ow1", "pw1"))
    return user, token_create(user=user, name="ws")


async def _open(live: str, token: str, device: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(live.replace("http://", "ws://") + f"/ws/sync?deviceId={device}", origin=live,  # type: ignore[arg-type]
                       open_timeout=20)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    ready = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
    assert ready["type"] == "ready", ready
    return ws


async def _closed_within(ws: Any, seconds: float) -> tuple[float, int | None, list[Any]]:
    """Read until the server closes the socket; (seconds it took, close code, messages seen)."""
    from websockets.exceptions import ConnectionClosed

    start = time.monotonic()
    seen: list[Any] = []
    try:
        while True:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=seconds)))
    except ConnectionClosed as exc:
        return time.monotonic() - start, exc.rcvd.code if exc.rcvd else None, seen
    except TimeoutError:
        return seconds, None, seen


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["device", "token", "account"])
async def test_an_open_websocket_is_closed_within_seconds_of_revocation(live_asgi: str, how: str) -> None:
    from asgiref.sync import sync_to_async

    user, token = await sync_to_async(_live_clinic)()
    ws = await _open(live_asgi, token, "tab-ws")

    def revoke() -> None:
        if how == "device":
            device_revoke(owner=user, device_id="tab-ws", by=user, reason="lost")
        elif how == "token":
            ApiToken.objects.filter(user=user).update(revoked=True)
        else:
            user.is_active = False
            user.save()

    await sync_to_async(revoke)()
    took, code, seen = await _closed_within(ws, 15.0)
    assert code is not None, f"socket still open after {took:.1f}s; got {seen}"
    assert took < 8.0, took
    assert not any(m.get("type") == "sync.hint" for m in seen)
    if how == "device":
        assert code == 4403 and {"type": "device-revoked", "wipe": True} in seen
    else:
        assert code == 4401
