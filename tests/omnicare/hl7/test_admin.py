"""Operating the HL7 queues in the Django admin: health figures, replay/discard, raw bodies gated and audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission

from omnicare.access.roles import ADMINISTRATOR, role_assign
from omnicare.audit.models import AuditEvent
from omnicare.hl7 import services
from omnicare.hl7.models import InboundMessage

from .conftest import fixture
from .test_mapping import ingest

pytestmark = pytest.mark.django_db

SECRET_NAME = "Okonkwo-Brandt"


@pytest.fixture
def admin_client_of(client: Any, django_user_model: Any) -> Any:
    def make(username: str, raw: bool = False) -> Any:
        user = django_user_model.objects.create_user(username=username, password="x-long-password-1")
        role_assign(user=user, role=ADMINISTRATOR)
        if raw:
            user.user_permissions.add(Permission.objects.get(codename="view_raw_message"))
        client.force_login(user)
        return client, user
    return make


@pytest.fixture
def queue() -> dict[str, InboundMessage]:
    ok = ingest("adt_a01_v251")
    bad = ingest("oru_r01_prelim", **{"FL-88123^NGLAB": "", "PL-4410": ""})
    waiting = services.inbound_store(items=[services.inbound_accept(raw=fixture("adt_a28_person").encode())])[0]
    return {"ok": ok, "bad": bad, "waiting": InboundMessage.objects.get(pk=waiting.id)}


def test_administrator_sees_depth_age_and_reasons_but_never_content(admin_client_of: Any, queue: Any) -> None:
    client, _ = admin_client_of("ops.admin")
    page = client.get("/admin/hl7/inboundmessage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="hl7-depth">1<' in html  # the one still waiting
    assert "OBR-3 filler order number" in html  # the failure reason of the dead one
    assert SECRET_NAME not in html
    detail = client.get(f"/admin/hl7/inboundmessage/{queue['ok'].pk}/change/").content.decode()
    assert "NG-A01-0001" in detail and SECRET_NAME not in detail and "raw message" not in detail
    assert not AuditEvent.objects.filter(resource_type="HL7Message").exists()


def test_raw_body_needs_the_permission_and_every_display_is_audited(admin_client_of: Any, queue: Any) -> None:
    client, user = admin_client_of("interface.analyst", raw=True)
    detail = client.get(f"/admin/hl7/inboundmessage/{queue['ok'].pk}/change/").content.decode()
    assert SECRET_NAME in detail
    ev = AuditEvent.objects.get(resource_type="HL7Message")
    assert ev.user_id == user.pk and ev.resource_id == f"inbound/{queue['ok'].pk}" and ev.action == "read"


def test_superuser_without_the_permission_does_not_see_raw(client: Any, django_user_model: Any, queue: Any) -> None:
    su = django_user_model.objects.create_superuser(username="root.admin", password="x-long-password-1")
    client.force_login(su)
    detail = client.get(f"/admin/hl7/inboundmessage/{queue['ok'].pk}/change/").content.decode()
    assert SECRET_NAME not in detail


def test_replay_and_discard_actions(admin_client_of: Any, queue: Any) -> None:
    client, _ = admin_client_of("ops.admin2")
    dead = queue["bad"]
    r = client.post("/admin/hl7/inboundmessage/", {"action": "discard", "_selected_action": [queue["waiting"].pk]})
    assert r.status_code == 302
    queue["waiting"].refresh_from_db()
    assert queue["waiting"].state == InboundMessage.DEAD and queue["waiting"].last_error.startswith("discarded")
    r = client.post("/admin/hl7/inboundmessage/", {"action": "replay", "_selected_action": [queue["waiting"].pk]})
    assert r.status_code == 302
    queue["waiting"].refresh_from_db()
    assert queue["waiting"].state in (InboundMessage.RECEIVED, InboundMessage.PROCESSED)
    dead.refresh_from_db()
    assert dead.state == InboundMessage.DEAD  # not selected: untouched
