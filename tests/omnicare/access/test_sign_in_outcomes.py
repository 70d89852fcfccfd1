"""The sign-in screen shows the server's sentence as it is (pwa/app/net.js runs before the browser's Python):
so every sign-in outcome is one issue whose diagnostics is what pyclient.outcome reads, worded by pyclient
(PROTOCOL.md §9; issue 11 item 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from pyclient import outcome

pytestmark = pytest.mark.django_db


def _attempt(c: Client, username: str, password: str) -> Any:
    csrf = c.get("/api/auth/csrf").json()["csrfToken"]
    return c.post("/api/auth/login", json.dumps({"username": username, "password": password}),
                  content_type="application/json", HTTP_X_CSRFTOKEN=csrf)


def test_a_wrong_password_and_a_paused_sign_in_read_alike_on_every_client(user: Any) -> None:
    c = Client(enforce_csrf_checks=True)
    r = _attempt(c, user.username, "not-the-password")
    body = r.json()
    assert r.status_code == 401 and len(body["issue"]) == 1
    assert body["issue"][0]["diagnostics"] == outcome.text(body) and "Wrong username or password" in outcome.text(body)
    for _ in range(10):
        r = _attempt(c, user.username, "not-the-password")
        if r.status_code == 429:
            break
    assert r.status_code == 429, r.content
    body = r.json()
    assert len(body["issue"]) == 1
    # The wait in the words is the wait in the header (the JS no longer works it out from Retry-After).
    assert body["issue"][0]["diagnostics"] == outcome.sign_in_paused(int(r["Retry-After"])) == outcome.text(body)
