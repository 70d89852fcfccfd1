"""The sign-in answer carries the role's allowed actions from the permission matrix (issue 18, item 3).

The PWA offers only the controls the role allows (pyclient.views.permissions); the matrix stays the one rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import allowed_actions, permissions_for, role_assign

pytestmark = pytest.mark.django_db


def _login(user: Any) -> dict[str, Any]:
    c = Client(enforce_csrf_checks=True)
    csrf = c.get("/api/auth/csrf").json()["csrfToken"]
    r = c.post("/api/auth/login", json.dumps({"username": user.username, "password": "correct horse battery staple"}),
               content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert r.status_code == 200, r.content
    me = c.get("/api/auth/me").json()
    assert me["permissions"] == r.json()["permissions"]
    return dict(r.json())


def test_a_nurse_is_told_she_may_not_order_medications(other_user: Any) -> None:
    role_assign(user=other_user, role="nurse")
    perms = _login(other_user)["permissions"]
    assert "create" not in perms["MedicationRequest"] and "read" in perms["MedicationRequest"]
    assert {"create", "update"} <= set(perms["Observation"])
    assert perms == permissions_for({"nurse"})


def test_a_physician_and_two_roles_get_the_union(user: Any) -> None:
    role_assign(user=user, role="physician")
    role_assign(user=user, role="front_desk")
    perms = _login(user)["permissions"]
    assert "create" in perms["MedicationRequest"]
    assert perms.pop("EmergencyAccess") == ["create"]  # physicians may break the glass (issue 18 item 7)
    for rtype, acts in perms.items():
        assert set(acts) == set(allowed_actions("physician", rtype)) | set(allowed_actions("front_desk", rtype))


def test_no_role_no_permissions(user: Any) -> None:
    assert _login(user)["permissions"] == {}
