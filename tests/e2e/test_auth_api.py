"""Session sign-in endpoints the PWA uses (/api/auth/), against the live server (no browser needed)."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.request
from typing import Any

from .conftest import USERS, Server


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str | None:
        return next((c.value for c in self.jar if c.name == "csrftoken"), None)

    def call(self, method: str, path: str, data: Any = None, *, csrf: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Origin": self.base}
        if csrf and self.csrf():
            headers["X-CSRFToken"] = self.csrf() or ""
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=20) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def test_sign_in_me_sign_out(server: Server) -> None:
    c = Client(server.url)
    assert c.call("GET", "/api/auth/me")[0] == 401
    status, body = c.call("GET", "/api/auth/csrf")
    assert status == 200 and body["csrfToken"]
    assert c.call("POST", "/api/auth/login", {"username": "dr.adams", "password": "nope"})[0] == 401
    status, body = c.call("POST", "/api/auth/login", {"username": "nobody", "password": "nope"})
    assert status == 401 and "Wrong username or password" in json.dumps(body)  # same answer: no enumeration
    status, body = c.call("POST", "/api/auth/login", {"username": "dr.adams", "password": USERS["dr.adams"]})
    assert status == 200 and body["username"] == "dr.adams"
    status, body = c.call("GET", "/api/auth/me")
    assert status == 200 and body["username"] == "dr.adams"
    assert c.call("POST", "/api/auth/logout", {})[0] == 200
    assert c.call("GET", "/api/auth/me")[0] == 401


def test_login_requires_the_csrf_token(server: Server) -> None:
    c = Client(server.url)
    c.call("GET", "/api/auth/csrf")
    status, _ = c.call("POST", "/api/auth/login", {"username": "dr.adams", "password": USERS["dr.adams"]}, csrf=False)
    assert status == 403
    assert c.call("GET", "/api/auth/me")[0] == 401
