"""Recovery files (issue 13 item 5): a tablet's unsynced changes, sealed to the server's recovery key, imported by
an administrator in the admin and replayed through the normal push path.

The sealing is the real one (``pyclient.adapters.cpython_crypto.recovery_seal``: P-256 ECDH-ES, HKDF, AES-GCM)
with the public key and token the real ``GET /api/sync/recovery-key`` hands the device.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from omnicare.access.roles import ADMINISTRATOR, PHYSICIAN, role_assign
from omnicare.access.services import token_create
from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.sync.models import Conflict, RecoveryImport
from pyclient.adapters.cpython_crypto import recovery_seal
from pyclient.protocol import Mutation
from pyclient.recovery import EscrowPayload, RecoveryFile, SealedItem, file_of
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, seed

pytestmark = pytest.mark.django_db
URL = "/admin/sync/recoveryimport/import/"


@pytest.fixture
def ward(django_user_model: Any) -> dict[str, Any]:
    a = django_user_model.objects.create_user(username="dr.a", password="x")
    role_assign(user=a, role=PHYSICIAN)
    admin = django_user_model.objects.create_user(username="it.admin", password="x")
    role_assign(user=admin, role=ADMINISTRATOR)
    seed(practitioner("dr.a"), patient("p1", "One"), care_team("p1", ["dr.a"]), observation("o1", "p1", 70.0),
         patient("p2", "Two"), observation("o2", "p2", 10.0))
    http = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=a, name='tab-a')}")
    assert http.post("/api/sync/devices", json.dumps({"deviceId": "tab-a"}), content_type="application/json").status_code == 200
    r = http.get("/api/sync/recovery-key", {"deviceId": "tab-a"})
    assert r.status_code == 200, r.content
    admin_http = Client()
    admin_http.force_login(admin)
    return {"a": a, "admin": admin, "key": r.json(), "http": http, "admin_http": admin_http}


def raw_key(info: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64decode(info["publicKey"] + "=" * (-len(info["publicKey"]) % 4))


def put(resource: dict[str, Any], base: int | None, mid: str | None = None) -> Mutation:
    return Mutation(mid or str(uuid.uuid4()), "put", resource["resourceType"], resource["id"], base, resource)


def sealed(info: dict[str, Any], *mutations: Mutation, device: str = "tab-a", token: str | None = None,
           user: str = "dr.a", public: bytes | None = None) -> list[SealedItem]:
    return [recovery_seal(public_key=public or raw_key(info), device_id=device, payload=EscrowPayload(
        user=user, device_id=device, token=token or info["token"], queued=1.0, mutation=m)) for m in mutations]


def upload(ward: dict[str, Any], data: bytes) -> Any:
    return ward["admin_http"].post(URL, {"file": SimpleUploadedFile("tab-a.omnicare-recovery", data)})


def body(rid: str) -> dict[str, Any] | None:
    row = Resource.objects.filter(resource_id=rid, deleted=False).first()
    return None if row is None else row.body


def test_an_imported_file_is_replayed_as_its_author_merged_parked_audited_and_idempotent(ward: Any) -> None:
    # Meanwhile on the server: o1 changed by someone else (the tablet's edit of o1 was made on version 1).
    seed({**observation("o1", "p1", 75.0)})
    assert ResourceVersion.objects.filter(resource_id="o1").count() == 2
    items = sealed(ward["key"],
                   put(observation("o7", "p1", 99.0), None, "m-new"),           # a new observation
                   put({**observation("o1", "p1", 80.0)}, 1, "m-clash"),      # clashes with 75 -> parked
                   put(observation("o2", "p2", 11.0), 1, "m-out"))            # outside dr.a's scope -> refused
    data = file_of("tab-a", "2026-12-01T10:00:00Z", items)
    page = ward["admin_http"].get("/admin/sync/recoveryimport/")
    assert page.status_code == 200 and b"Import a recovery file" in page.content
    r = upload(ward, data)
    assert r.status_code == 302, r.content.decode()[:2000]
    assert body("o7") is not None and body("o7")["valueQuantity"]["value"] == 99.0
    assert body("o1")["valueQuantity"]["value"] == 75.0  # never overwritten silently
    conflict = Conflict.objects.get(mutation_id="m-clash")
    assert conflict.author == ward["a"] and conflict.device_id == "tab-a" and conflict.status == Conflict.OPEN
    assert body("o2")["valueQuantity"]["value"] == 10.0
    rec = RecoveryImport.objects.get()
    assert rec.author == ward["a"] and rec.imported_by == ward["admin"] and rec.changes == 3
    assert rec.counts == {"applied": 1, "conflict": 1, "rejected": 1}
    # Audited as a recovery, attributed to the author and the device; the import itself as a security event.
    push = AuditEvent.objects.get(action="sync-push", detail__recovery="file")
    assert push.username == "dr.a" and push.device_id == "tab-a" and push.detail["importedBy"] == "it.admin"
    imp = AuditEvent.objects.get(action="sync-recovery-import")
    assert imp.username == "it.admin" and imp.detail["counts"] == rec.counts
    msgs = [str(m) for m in r.wsgi_request._messages]
    assert any("1 waiting for review as conflicts" in m and "1 refused" in m for m in msgs), msgs
    # The author's tablet (or a new one) learns of the parked conflict like any other.
    mine = ward["http"].get("/api/sync/conflicts").json()
    assert [c["mutationId"] for c in mine] == ["m-clash"]

    versions = ResourceVersion.objects.count()
    assert upload(ward, data).status_code == 302  # importing the same file again changes nothing
    assert ResourceVersion.objects.count() == versions and Conflict.objects.count() == 1


def bad_files(ward: dict[str, Any]) -> dict[str, bytes]:
    info = ward["key"]
    good = sealed(info, put(observation("o8", "p1", 1.0), None, "m-8"))
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    tampered = SealedItem(good[0].key_id, good[0].mutation_id, good[0].epk, good[0].iv,
                          good[0].ct[:-1] + bytes([good[0].ct[-1] ^ 1]))
    valid_then_broken = [*sealed(info, put(observation("o9", "p1", 2.0), None, "m-9")), tampered]
    full = json.loads(file_of("tab-a", "t", good))
    return {
        "not a recovery file": b"%PDF-1.7 hello",
        "not an OmniCare recovery file": json.dumps({"format": "something-else"}).encode(),
        "incomplete": json.dumps({**full, "count": 2}).encode(),
        "another server": file_of("tab-a", "t", sealed(info, put(observation("o8", "p1", 1.0), None), public=other)),
        "altered": file_of("tab-a", "t", [tampered]),
        "moved to another device": json.dumps({**full, "deviceId": "tab-b"}).encode(),
        "not vouched for": file_of("tab-a", "t", sealed(info, put(observation("o8", "p1", 1.0), None), token="0" * 32)),
        "someone else's name": file_of("tab-a", "t", sealed(info, put(observation("o8", "p1", 1.0), None), user="it.admin")),
        "no partial write": file_of("tab-a", "t", valid_then_broken),
    }


def test_a_bad_file_is_refused_in_plain_words_and_nothing_is_written(ward: Any) -> None:
    for name, data in bad_files(ward).items():
        versions, audits = ResourceVersion.objects.count(), AuditEvent.objects.count()
        r = upload(ward, data)
        assert r.status_code == 400, name
        text = r.content.decode()
        assert "This file was not imported and nothing was changed" in text, name
        assert "Traceback" not in text
        assert ResourceVersion.objects.count() == versions and RecoveryImport.objects.count() == 0, name
        assert AuditEvent.objects.count() == audits, name


def test_only_administrators_may_import(ward: Any, django_user_model: Any) -> None:
    doctor = Client()
    doctor.force_login(ward["a"])
    data = file_of("tab-a", "t", sealed(ward["key"], put(observation("o8", "p1", 1.0), None)))
    r = doctor.post(URL, {"file": SimpleUploadedFile("x", data)})
    assert r.status_code in (302, 403) and body("o8") is None


def test_the_file_format_round_trips() -> None:
    items = [SealedItem("k" * 16, "m1", b"\x04" + b"\x01" * 64, b"\x02" * 12, b"\x03" * 20)]
    f = RecoveryFile.parse(file_of("tab-a", "2026-12-01T10:00:00Z", items))
    assert f.device_id == "tab-a" and f.items == tuple(items)
