"""The ASGI entry's lean middleware chain for bearer-only FHIR requests (``omnicare.core.asgi_handler``).

Requests go through ``omnicare.asgi.django_asgi_app`` as uvicorn calls it (the view runs on the handler's own
thread, hence ``transaction=True``). A bearer request without cookies skips the session/CSRF/auth middleware but
must still be authorised, audited fail-closed and answered with the security headers; a request with a session
cookie must still get the full chain, CSRF included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def _asgi(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict[str, str], bytes, list[str]]:
    from omnicare.asgi import django_asgi_app

    sent: list[dict[str, Any]] = []
    raw = [(b"host", b"testserver"), *((k.lower().encode(), v.encode()) for k, v in headers.items())]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw,
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}  # fmt: skip

    async def go() -> None:
        done = asyncio.Event()
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)
            if msg["type"] == "http.response.body" and not msg.get("more_body"):
                done.set()

        await django_asgi_app(scope, receive, send)
        done.set()

    # asyncio.run in a thread of its own (an earlier test may leave an event loop running in this one).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()
    start = sent[0]
    hdrs: dict[str, str] = {}
    cookies: list[str] = []
    for k, v in start["headers"]:
        if k.lower() == b"set-cookie":
            cookies.append(v.decode())
        hdrs[k.decode().lower()] = v.decode()
    return start["status"], hdrs, b"".join(m.get("body", b"") for m in sent[1:]), cookies


@pytest.fixture
def lean_calls(monkeypatch: Any) -> list[str]:
    """Paths the lean chain served (a spy on the handler's lean ``get_response``)."""
    from omnicare.asgi import django_asgi_app

    calls: list[str] = []
    real = django_asgi_app.lean.get_response

    def spy(request: Any) -> Any:
        calls.append(request.path_info)
        return real(request)

    monkeypatch.setattr(django_asgi_app.lean, "get_response", spy)
    return calls


@pytest.fixture
def clerk(django_user_model: Any) -> Any:
    from omnicare.access.roles import role_assign

    u = django_user_model.objects.create_user(username="clerk.lean", password="correct horse battery staple")
    role_assign(user=u, role="front_desk")
    return u


@pytest.fixture
def patient() -> str:
    from omnicare.fhir.services import resources_import

    resources_import(resources=[{"resourceType": "Patient", "id": "lean1", "name": [{"family": "Leanchain"}]}])
    return "lean1"


def _reads_audited(resource_id: str) -> int:
    from omnicare.audit.models import AuditEvent

    return AuditEvent.objects.filter(resource_type="Patient", resource_id=resource_id, action="read").count()


def _assert_security_headers(h: dict[str, str]) -> None:
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store, private"


def test_a_bearer_read_takes_the_lean_chain_and_is_audited_with_security_headers(
    clerk: Any, patient: str, lean_calls: list[str]
) -> None:
    from django.contrib.sessions.models import Session

    from omnicare.access.services import token_create

    token = token_create(user=clerk, name="t")
    before = _reads_audited(patient)
    status, h, body, cookies = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": f"Bearer {token}"})
    assert status == 200, body[:300]
    assert lean_calls == [f"/fhir/R4/Patient/{patient}"]
    assert json.loads(body)["name"][0]["family"] == "Leanchain"
    assert _reads_audited(patient) == before + 1
    _assert_security_headers(h)
    assert cookies == []  # no session, no CSRF cookie
    assert Session.objects.count() == 0


def test_the_lean_chain_still_refuses_a_bad_token_and_a_user_without_the_right(clerk: Any, patient: str,
                                                                                 django_user_model: Any) -> None:  # fmt: skip
    from omnicare.access.services import token_create

    status, h, body, _ = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": "Bearer oc_not-a-token"})
    assert status == 401 and b"Leanchain" not in body
    _assert_security_headers(h)
    nobody = django_user_model.objects.create_user(username="no.role.lean", password="correct horse battery staple")
    status, h, body, _ = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": f"Bearer {token_create(user=nobody, name='t')}"})
    assert status == 403 and b"Leanchain" not in body
    _assert_security_headers(h)


def test_the_lean_chain_fails_closed_when_the_audit_cannot_be_written(clerk: Any, patient: str, monkeypatch: Any) -> None:
    from omnicare.access.services import token_create
    from omnicare.audit import services as audit_services

    token = token_create(user=clerk, name="t")

    def broken(event: Any) -> None:
        raise RuntimeError("audit store down")

    monkeypatch.setattr(audit_services, "_event_insert", broken)
    status, h, body, _ = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": f"Bearer {token}"})
    assert status == 503 and b"Leanchain" not in body
    _assert_security_headers(h)


def test_a_cookie_session_request_still_gets_csrf_and_session_handling(clerk: Any, lean_calls: list[str]) -> None:
    from django.conf import settings
    from django.test import Client

    from omnicare.core.asgi_handler import is_bearer_only

    c = Client()
    c.force_login(clerk)
    sid = c.cookies[settings.SESSION_COOKIE_NAME].value
    body = json.dumps({"resourceType": "Patient", "name": [{"family": "Cookie"}]}).encode()
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={sid}", "Content-Type": "application/fhir+json"}
    status, h, out, _ = _asgi("POST", "/fhir/R4/Patient", headers, body)
    assert status == 403, out[:300]  # the session is recognised, and CSRF is enforced for it
    _assert_security_headers(h)
    csrf = "a" * 32
    headers = {**headers, "Cookie": headers["Cookie"] + f"; {settings.CSRF_COOKIE_NAME}={csrf}", "X-CSRFToken": csrf}
    status, h, out, _ = _asgi("POST", "/fhir/R4/Patient", headers, body)
    assert status == 201, out[:300]
    assert lean_calls == []  # both took the full chain
    # A bearer header beside a cookie is not "bearer only": the full chain runs.
    from django.test import RequestFactory

    req = RequestFactory().get("/fhir/R4/Patient", HTTP_AUTHORIZATION="Bearer x", HTTP_COOKIE="a=b")
    assert not is_bearer_only(req)
    assert is_bearer_only(RequestFactory().get("/fhir/R4/Patient", HTTP_AUTHORIZATION="Bearer x"))
    assert not is_bearer_only(RequestFactory().get("/api/sync/pull", HTTP_AUTHORIZATION="Bearer x"))


def test_the_copied_handle_is_the_one_of_the_django_in_use() -> None:
    """The one-hop ``handle`` is a copy of Django's: it is in force only while Django's is the version copied."""
    from omnicare.asgi import django_asgi_app
    from omnicare.core import asgi_handler

    assert asgi_handler.django_handle_digest() == asgi_handler.DJANGO_HANDLE_DIGEST, (
        "Django's ASGIHandler.handle changed: compare ReusedThreadASGIHandler.handle with it, then update "
        "DJANGO_HANDLE_DIGEST")
    assert django_asgi_app.own_handle


def test_with_djangos_own_handle_both_chains_still_serve(clerk: Any, patient: str, lean_calls: list[str],
                                                          monkeypatch: Any) -> None:
    """The fallback for a Django the copy was not checked against: Django's handle, our one-hop chain."""
    from omnicare.access.services import token_create
    from omnicare.asgi import django_asgi_app

    monkeypatch.setattr(django_asgi_app, "own_handle", False)
    token = token_create(user=clerk, name="t")
    before = _reads_audited(patient)
    status, h, body, cookies = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": f"Bearer {token}"})
    assert status == 200 and json.loads(body)["name"][0]["family"] == "Leanchain", body[:300]
    assert lean_calls == [f"/fhir/R4/Patient/{patient}"] and cookies == []
    assert _reads_audited(patient) == before + 1
    _assert_security_headers(h)
    status, h, body, _ = _asgi("GET", f"/fhir/R4/Patient/{patient}", {"Authorization": "Bearer oc_not-a-token"})
    assert status == 401 and b"Leanchain" not in body
    _assert_security_headers(h)
