"""Sessions and transport: login throttling, idle/absolute timeouts, disabling ends sessions, CSP."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client, RequestFactory
from django.utils import timezone

from omnicare.access import services
from omnicare.access.middleware import SEEN, STARTED, SessionTimeoutMiddleware
from omnicare.access.models import ApiToken

pytestmark = pytest.mark.django_db


def _fail(n: int, *, username: str = "dr.x", ip: str = "10.0.0.1", now: Any = None) -> None:
    for _ in range(n):
        services.login_attempt_record(username=username, ip=ip, success=False, now=now)


def test_five_failures_lock_the_username_with_growing_backoff() -> None:
    t = timezone.now()
    _fail(4, now=t)
    services.login_attempt_check(username="dr.x", ip="10.0.0.2", now=t)
    _fail(1, now=t)
    with pytest.raises(services.TooManyRequests) as exc:
        services.login_attempt_check(username="DR.X", ip="10.0.0.2", now=t + timedelta(seconds=1))
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "29"
    services.login_attempt_check(username="dr.x", ip="10.0.0.2", now=t + timedelta(seconds=31))
    _fail(2, now=t + timedelta(seconds=31))  # 7 failures: 2 minutes
    with pytest.raises(services.TooManyRequests):
        services.login_attempt_check(username="dr.x", ip="10.0.0.2", now=t + timedelta(seconds=31 + 100))
    services.login_attempt_check(username="dr.y", ip="10.0.0.2", now=t + timedelta(seconds=32))


def test_success_clears_the_username_count() -> None:
    _fail(4)
    services.login_attempt_record(username="dr.x", ip="10.0.0.1", success=True)
    _fail(1)
    services.login_attempt_check(username="dr.x", ip="10.0.0.1")


def test_one_address_guessing_many_usernames_is_locked() -> None:
    for i in range(20):
        _fail(1, username=f"user{i}", ip="203.0.113.9")
    with pytest.raises(services.TooManyRequests):
        services.login_attempt_check(username="someone-new", ip="203.0.113.9")
    services.login_attempt_check(username="someone-new", ip="203.0.113.10")


def test_sign_ins_are_audited_without_passwords() -> None:
    from omnicare.audit.models import AuditEvent

    _fail(1, username="mallory")
    ev = AuditEvent.objects.get(action="login")
    assert (ev.outcome, ev.category, ev.detail["username"]) == ("failure", "security", "mallory")


def test_disabling_an_account_ends_its_sessions_and_tokens(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="leaver")
    other = django_user_model.objects.create_user(username="stayer")
    Client().force_login(user)
    Client().force_login(other)
    services.token_create(user=user, name="cli")
    assert Session.objects.count() == 2
    user.is_active = False
    user.save()
    assert Session.objects.count() == 1
    assert ApiToken.objects.get(user=user).revoked


def _session_request(user: Any, **session: float) -> Any:
    from importlib import import_module

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store.update(session)
    store.create()
    request = RequestFactory().get("/api/health")
    request.session = store
    request.user = user
    return request


@pytest.mark.parametrize(
    ("idle_for", "age", "kept"),
    [(60, 3600, True), (16 * 60, 3600, False), (60, 13 * 3600, False)],
)
def test_idle_and_absolute_timeouts(django_user_model: Any, idle_for: int, age: int, kept: bool) -> None:
    user = django_user_model.objects.create_user(username="sleepy")
    now = time.time()
    request = _session_request(user, **{STARTED: now - age, SEEN: now - idle_for})
    SessionTimeoutMiddleware(lambda r: None)(request)  # type: ignore[arg-type,return-value]
    assert request.user.is_authenticated is kept


def test_csp_allows_pyodide_but_no_inline_script(anon: Client) -> None:
    csp = anon.get("/api/health")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert "'wasm-unsafe-eval'" in directives["script-src"]
    assert "unsafe-inline" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert directives["frame-ancestors"] == "'none'"


def test_the_pwa_shell_has_no_inline_script() -> None:
    index = Path(settings.BASE_DIR) / "pwa" / "index.html"
    if not index.exists():
        pytest.skip("no PWA shell yet")
    html = index.read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I)  # no inline event handlers either


def test_totp_matches_the_rfc_6238_vector() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s -> 94287082 (8 digits).
    assert services.totp_code(b"12345678901234567890", 59 // 30, digits=8) == "94287082"


def test_totp_enrol_verify_once_and_required_afterwards(django_user_model: Any, monkeypatch: Any,
                                                        settings: Any) -> None:
    import base64

    from omnicare.access.roles import role_assign
    from omnicare.keys import backends

    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x09" * 32).decode())
    backends.reset_backends()
    user = django_user_model.objects.create_user(username="dr.mfa")
    role_assign(user=user, role="physician")
    assert not services.mfa_required(user=user)
    settings.OMNICARE_MFA_ENFORCE = True
    assert services.mfa_required(user=user)
    settings.OMNICARE_MFA_ENFORCE = False

    uri = services.totp_enroll(user=user)
    secret_b32 = uri.split("secret=")[1].split("&")[0]
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    now = timezone.now()
    code = services.totp_code(secret, int(now.timestamp()) // 30)
    assert not services.totp_verify(user=user, code="000000" if code != "000000" else "111111", now=now)
    assert services.totp_verify(user=user, code=code, now=now)
    assert not services.totp_verify(user=user, code=code, now=now)  # replay refused
    assert services.mfa_required(user=user)
    later = now + timedelta(seconds=60)
    assert services.totp_verify(user=user, code=services.totp_code(secret, int(later.timestamp()) // 30 - 1), now=later)
    backends.reset_backends()
