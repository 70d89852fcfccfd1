"""The end of an emergency grant is pushed to the grantee's open sync socket (issue 18 review): a privacy
officer's revocation in the admin, or the grantee's own end, reaches the device within a second instead of at
its next 15 s poll (the socket also recomputes its scope then)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from omnicare.access import services
from omnicare.access.models import EmergencyAccessGrant
from omnicare.access.roles import AUDITOR, role_assign
from omnicare.asgi import application
from omnicare.audit.models import AuditEvent
from omnicare.keys import backends
from tests.omnicare.core.test_channels import session_cookie_for

ORIGIN = (b"origin", b"http://127.0.0.1")
REASON = "Unconscious patient in the emergency department, allergy history needed"


@pytest.fixture
def in_memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x03" * 32).decode())
    backends.reset_backends()
    yield
    backends.reset_backends()


@database_sync_to_async
def _clinic(django_user_model: Any) -> tuple[Any, Any, EmergencyAccessGrant]:
    from omnicare.fhir.services import resources_import

    resources_import(resources=[{"resourceType": "Patient", "id": "p-er"}])
    nurse = django_user_model.objects.create_user(username="nurse.er")
    role_assign(user=nurse, role="nurse")
    officer = django_user_model.objects.create_user(username="privacy.officer")
    role_assign(user=officer, role=AUDITOR)
    grant = services.break_glass_request(user=nurse, patient_id="p-er", reason=REASON, device_id="tab-7")
    return nurse, officer, grant


@database_sync_to_async
def _revoke_in_admin(officer: Any, grant: EmergencyAccessGrant) -> int:
    client = Client()
    client.force_login(officer)
    r = client.post("/admin/access/emergencyaccessgrant/", {"action": "revoke", "_selected_action": [grant.pk]})
    return r.status_code


async def _socket(user: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/sync?deviceId=tab-7",
                                 headers=[ORIGIN, (b"cookie", await session_cookie_for(user))])
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    return comm


@pytest.mark.django_db(transaction=True)
async def test_a_privacy_officers_revocation_reaches_the_grantees_socket_at_once(
        in_memory_layer: Any, django_user_model: Any) -> None:
    nurse, officer, grant = await _clinic(django_user_model)
    comm = await _socket(nurse)
    assert await _revoke_in_admin(officer, grant) == 302  # back to the list, with "1 … revoked"
    msg = await comm.receive_json_from(timeout=2)
    assert msg == {"type": "emergency-ended", "grantId": grant.pk, "patientId": "p-er"}

    stop = await database_sync_to_async(lambda: AuditEvent.objects.get(action="break-glass-stop"))()
    assert stop.detail["end"] == "revoked" and stop.username == "privacy.officer" and stop.patient_ids == ["p-er"]
    ended = await database_sync_to_async(lambda: EmergencyAccessGrant.objects.get(pk=grant.pk))()
    assert ended.end_reason == "revoked" and ended.ended is not None
    assert not await database_sync_to_async(services.patient_ids_granted)(user=nurse)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_ending_ones_own_grant_is_pushed_too_and_other_users_hear_nothing(
        in_memory_layer: Any, django_user_model: Any) -> None:
    nurse, officer, grant = await _clinic(django_user_model)
    mine, theirs = await _socket(nurse), await _socket(officer)
    await database_sync_to_async(services.break_glass_end)(user=nurse, grant_id=grant.pk)
    assert (await mine.receive_json_from(timeout=2))["type"] == "emergency-ended"
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


def test_only_a_privacy_officer_may_revoke_in_the_admin(django_user_model: Any) -> None:
    from omnicare.fhir.services import resources_import

    resources_import(resources=[{"resourceType": "Patient", "id": "p-er"}])
    nurse = django_user_model.objects.create_user(username="nurse.er")
    role_assign(user=nurse, role="nurse")
    admin_user = django_user_model.objects.create_user(username="it.admin")
    role_assign(user=admin_user, role="administrator")
    grant = services.break_glass_request(user=nurse, patient_id="p-er", reason=REASON)
    client = Client()
    client.force_login(admin_user)  # an administrator manages devices, not emergency access: no such page
    r = client.post("/admin/access/emergencyaccessgrant/", {"action": "revoke", "_selected_action": [grant.pk]})
    assert r.status_code == 403
    assert services.patient_ids_granted(user=nurse) == {"p-er"}
