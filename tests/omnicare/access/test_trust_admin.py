"""Administrators, conflicts and the one sign-in policy (issue 10, items 7, 8, 12, 13).

Each test replays an attack from the adversarial review against the real admin site and API (Django test
client, real sessions, the test database: SQLite or PostgreSQL).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from omnicare.access import services
from omnicare.access.models import LoginFailure, PasswordResetRequired
from omnicare.access.roles import ADMINISTRATOR, AUDITOR, NURSE, PHYSICIAN, role_assign
from omnicare.audit.models import AuditEvent
from omnicare.fhir.services import resources_import
from omnicare.keys import backends
from omnicare.sync.models import AppliedMutation, Conflict, PushJob, Snapshot
from tests.omnicare.sync.conftest import SyncClient, care_team, observation, patient, practitioner, put

pytestmark = pytest.mark.django_db

MARK = "ZEBRAFISH-7734"  # a piece of clinical content that must never appear in the admin
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[None]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x05" * 32).decode())
    backends.reset_backends()
    yield
    backends.reset_backends()


def make(username: str, role: str | None = None, **flags: Any) -> Any:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **flags)
    if role:
        role_assign(user=user, role=role)
    return user


def token_client(user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(user=user, name='t')}")


@pytest.fixture
def ward() -> dict[str, Any]:
    """dr.a (author) and nurse.b on p1's care team; dr.c on p2 only; an administrator and an auditor."""
    users = {"a": make("dr.a", PHYSICIAN), "b": make("nurse.b", NURSE), "c": make("dr.c", PHYSICIAN),
             "admin": make("it.admin", ADMINISTRATOR), "auditor": make("privacy", AUDITOR)}
    resources_import(resources=[practitioner("dr.a"), practitioner("nurse.b"), practitioner("dr.c"),
                                patient("p1"), patient("p2"), care_team("p1", ["dr.a", "nurse.b"]),
                                care_team("p2", ["dr.c"]), observation("o1", "p1")])
    return users


def _conflict(ward: dict[str, Any]) -> str:
    server = observation("o1", "p1", 75.0)
    server["note"] = [{"text": MARK}]
    resources_import(resources=[server])
    mine = observation("o1", "p1", 68.0)
    mine["note"] = [{"text": MARK + " mine"}]
    [r] = SyncClient(token_client(ward["a"]), "tab-a").push(put(mine, 1))
    assert r["status"] == "conflict", r
    return str(r["conflictId"])


# --- item 7: no clinical content in the admin, no escalation ------------------------------------------------


def test_no_admin_page_shows_clinical_content_even_to_a_superuser(ward: dict[str, Any]) -> None:
    cid = _conflict(ward)
    push = {"deviceId": "tab-a", "mutations": [put(observation("o9", "p1", 1.0) | {"note": [{"text": MARK}]}, None)]}
    PushJob.objects.create(user=ward["a"], device_id="tab-a", request=push, result={"results": [MARK]})
    Snapshot.objects.create(user=ward["a"], device_id="tab-a", cursor=MARK, data=MARK.encode())
    assert AppliedMutation.objects.exists() and Conflict.objects.filter(pk=cid).exists()
    root = make("root", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(root)
    pages = 0
    for model in list(admin.site._registry):
        opts = model._meta
        changelist = client.get(f"/admin/{opts.app_label}/{opts.model_name}/")
        assert changelist.status_code == 200, (opts.label, changelist.status_code)
        assert MARK not in changelist.content.decode(), opts.label
        if not opts.managed:  # a dashboard page registered as a model: no rows of its own
            continue
        for obj in model.objects.all()[:20]:
            page = client.get(f"/admin/{opts.app_label}/{opts.model_name}/{obj.pk}/change/")
            assert page.status_code == 200, (opts.label, obj.pk, page.status_code)
            assert MARK not in page.content.decode(), (opts.label, obj.pk)
            pages += 1
    assert pages > 20  # resources, versions, the conflict, the mutation log, jobs, snapshots were all looked at


def _change_form(client: Client, user: Any, **changes: Any) -> Any:
    """POST the admin change form of ``user`` as the browser would, with ``changes`` applied."""
    page = client.get(f"/admin/auth/user/{user.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form.initial.get(name, field.initial)
        if hasattr(field.widget, "decompress"):
            parts = field.widget.decompress(value)
            for i, part in enumerate(parts):
                data[f"{name}_{i}"] = "" if part is None else str(part)
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        if isinstance(value, (list, tuple)) or hasattr(value, "all"):
            data[name] = [getattr(v, "pk", v) for v in (value.all() if hasattr(value, "all") else value)]
            continue
        data[name] = "" if value is None else value
    data.update(changes)
    return client.post(f"/admin/auth/user/{user.pk}/change/", data)


def test_an_administrator_cannot_make_itself_superuser_or_staff_others(ward: dict[str, Any]) -> None:
    admin_user = ward["admin"]
    client = Client()
    client.force_login(admin_user)
    r = _change_form(client, admin_user, first_name="Ada", is_superuser="on", user_permissions=[1, 2, 3])
    assert r.status_code == 302, r.content[:500]
    admin_user.refresh_from_db()
    assert admin_user.first_name == "Ada"  # the edit went through ...
    assert not admin_user.is_superuser and not admin_user.user_permissions.exists()  # ... the escalation did not
    nurse = ward["b"]
    r = _change_form(client, nurse, last_name="Baker", is_staff="on", is_superuser="on")
    assert r.status_code == 302
    nurse.refresh_from_db()
    assert nurse.last_name == "Baker" and not nurse.is_staff and not nurse.is_superuser


def test_an_administrator_cannot_touch_a_superuser_account(ward: dict[str, Any]) -> None:
    root = make("root", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(ward["admin"])
    r = client.post(f"/admin/auth/user/{root.pk}/password/",
                    {"password1": "brand-new-secret-42", "password2": "brand-new-secret-42", "usable_password": "true"})
    assert r.status_code == 403
    root.refresh_from_db()
    assert root.check_password(PASSWORD)


def test_the_demo_admin_is_not_a_superuser() -> None:
    from omnicare.fhir.demo import DEMO_USERS

    assert not any(u.superuser for u in DEMO_USERS)


def test_an_admin_password_reset_forces_a_new_password_and_is_a_security_event(ward: dict[str, Any]) -> None:
    nurse = ward["b"]
    old_token = token_client(nurse)
    assert old_token.get("/api/auth/me").status_code == 200
    client = Client()
    client.force_login(ward["admin"])
    temp = "temporary-pass-8841"
    r = client.post(f"/admin/auth/user/{nurse.pk}/password/",
                    {"password1": temp, "password2": temp, "usable_password": "true"})
    assert r.status_code == 302, r.content[:500]
    assert PasswordResetRequired.objects.filter(user=nurse, set_by=ward["admin"]).exists()
    event = AuditEvent.objects.filter(action="password-reset").latest("seq")
    assert event.category == "security" and event.username == "it.admin" and event.detail["target"] == "nurse.b"
    assert temp not in json.dumps(event.detail)
    assert old_token.get("/api/auth/me").status_code == 401  # the reset ended the old token

    # The admin now signs in as the nurse with the password they chose: refused until the nurse picks a new one.
    pwa = Client(enforce_csrf_checks=True)
    csrf = pwa.get("/api/auth/csrf").json()["csrfToken"]

    def login(**body: str) -> Any:
        return pwa.post("/api/auth/login", json.dumps({"username": "nurse.b", **body}),
                        content_type="application/json", HTTP_X_CSRFTOKEN=csrf)

    r = login(password=temp)
    assert r.status_code == 401 and r.json()["issue"][0]["details"]["text"] == "password-change-required"
    assert pwa.get("/api/auth/me").status_code == 401  # no session was started
    assert login(password=temp, newPassword=temp).status_code == 400
    r = login(password=temp, newPassword="my-own-secret-5512")
    assert r.status_code == 200, r.content
    csrf = pwa.cookies["csrftoken"].value
    assert pwa.get("/api/auth/me").json()["username"] == "nurse.b"
    assert not PasswordResetRequired.objects.filter(user=nurse).exists()
    assert login(password=temp).status_code == 401


# --- item 8: conflicts readable by their author and clinicians in scope, every read audited -----------------


def test_conflicts_are_for_the_author_and_clinicians_in_scope_only(ward: dict[str, Any]) -> None:
    cid = _conflict(ward)
    for who in ("admin", "auditor", "c"):
        client = token_client(ward[who])
        assert client.get("/api/sync/conflicts").json() == [], who
        assert client.get(f"/api/sync/conflicts/{cid}").status_code == 404, who
        r = client.post(f"/api/sync/conflicts/{cid}/resolve", json.dumps({"resolution": "keep-server"}),
                        content_type="application/json")
        assert r.status_code == 404, who
    superuser = make("root", is_superuser=True, is_staff=True)
    assert token_client(superuser).get(f"/api/sync/conflicts/{cid}").status_code == 404
    assert Conflict.objects.get(pk=cid).status == "open"

    before = AuditEvent.objects.filter(resource_type="Conflict").count()
    nurse = token_client(ward["b"])  # on p1's care team
    listed = nurse.get("/api/sync/conflicts").json()
    assert [c["id"] for c in listed] == [cid]
    detail = nurse.get(f"/api/sync/conflicts/{cid}").json()
    assert detail["theirs"]["valueQuantity"]["value"] == 68.0
    reads = AuditEvent.objects.filter(resource_type="Conflict").order_by("seq")[before:]
    assert [(e.action, e.username, e.patient_ids) for e in reads] == [
        ("search", "nurse.b", ["p1"]), ("read", "nurse.b", ["p1"])]
    author = token_client(ward["a"])
    r = author.post(f"/api/sync/conflicts/{cid}/resolve", json.dumps({"resolution": "keep-server"}),
                    content_type="application/json")
    assert r.status_code == 200, r.content


# --- item 12: /admin/login/ through the same sign-in service ----------------------------------------------


def _admin_login(client: Client, username: str, password: str, **extra: str) -> Any:
    client.get("/admin/login/")
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password, **extra,
                                                      "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def test_admin_login_is_throttled_and_audited_like_the_app(ward: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    for _ in range(30):
        r = _admin_login(client, "it.admin", "wrong password!")
        assert r.status_code == 200 and "_auth_user_id" not in client.session
    assert LoginFailure.objects.filter(username="it.admin").count() >= 5
    assert AuditEvent.objects.filter(action="login", outcome="failure").count() >= 5
    r = _admin_login(client, "it.admin", PASSWORD)  # right password, but locked
    assert r.status_code == 200 and "_auth_user_id" not in client.session
    assert "Too many failed sign-ins" in r.content.decode()
    assert token_client(ward["admin"]).get("/api/auth/me").status_code == 200  # (the account itself is fine)


def test_admin_login_asks_for_the_totp_code(ward: dict[str, Any]) -> None:
    admin_user = ward["admin"]
    uri = services.totp_enroll(user=admin_user)
    secret_b32 = uri.split("secret=")[1].split("&")[0]
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    code = services.totp_code(secret, int(timezone.now().timestamp()) // 30)
    assert services.totp_verify(user=admin_user, code=code)  # enrolment confirmed (this code is now spent)
    client = Client(enforce_csrf_checks=True)
    r = _admin_login(client, "it.admin", PASSWORD)
    assert r.status_code == 200 and "_auth_user_id" not in client.session
    assert "6-digit code" in r.content.decode()
    r = _admin_login(client, "it.admin", PASSWORD, code="000000" if code != "000000" else "111111")
    assert "_auth_user_id" not in client.session
    fresh = services.totp_code(secret, int(timezone.now().timestamp()) // 30 + 1)
    r = _admin_login(client, "it.admin", PASSWORD, code=fresh)
    assert r.status_code == 302, r.content.decode()[:2000]
    assert client.get("/admin/").status_code == 200
    assert AuditEvent.objects.filter(action="login", outcome="success", username="it.admin").exists()


# --- item 13: tokens and sessions end with a password change or deactivation -----------------------------


def test_a_password_change_ends_tokens_and_sessions(ward: dict[str, Any]) -> None:
    doctor = ward["a"]
    tok = token_client(doctor)
    browser = Client()
    browser.force_login(doctor)
    assert tok.get("/fhir/R4/Observation/o1").status_code == 200
    assert browser.get("/api/auth/me").status_code == 200
    doctor.set_password("a-completely-new-one-77")
    doctor.save()
    assert tok.get("/fhir/R4/Observation/o1").status_code == 401
    assert browser.get("/api/auth/me").status_code == 401
    assert AuditEvent.objects.filter(action="password-change", category="security").exists()


def test_deactivation_ends_tokens_and_sessions(ward: dict[str, Any]) -> None:
    doctor = ward["a"]
    tok = token_client(doctor)
    browser = Client()
    browser.force_login(doctor)
    doctor.is_active = False
    doctor.save()
    doctor.is_active = True  # even re-enabled, the old credentials stay dead
    doctor.save()
    assert tok.get("/fhir/R4/Observation/o1").status_code == 401
    assert browser.get("/api/auth/me").status_code == 401


@pytest.mark.django_db
def test_sign_in_tells_the_device_how_wide_the_users_scope_is() -> None:
    """Item 16: the PWA asks a passphrase instead of a PIN of a role that sees every patient."""
    from django.contrib.auth import get_user_model

    from omnicare.access.roles import AUDITOR, PHYSICIAN, role_assign

    for name, role, scope in (("aud.scope", AUDITOR, "all"), ("doc.scope", PHYSICIAN, "care-team")):
        user = get_user_model().objects.create_user(username=name, password="a-long-pass-phrase-9")
        role_assign(user=user, role=role)
        c = Client()
        c.get("/api/auth/csrf")
        r = c.post("/api/auth/login", {"username": name, "password": "a-long-pass-phrase-9"},
                   content_type="application/json")
        assert r.status_code == 200 and r.json()["scope"] == scope
        assert c.get("/api/auth/me").json()["scope"] == scope
