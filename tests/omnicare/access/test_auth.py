"""Authentication at the edge: no anonymous access, bearer tokens, errors as OperationOutcome."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from omnicare.access.models import ApiToken
from omnicare.access.services import token_authenticate, token_create

pytestmark = pytest.mark.django_db


def test_health_is_public(anon: Client) -> None:
    assert anon.get("/api/health").json() == {"status": "ok"}


def test_token_is_stored_only_as_a_hash(user: Any) -> None:
    token = token_create(user=user, name="cli")
    row = ApiToken.objects.get()
    assert token not in row.token_hash and len(row.token_hash) == 64
    assert token_authenticate(token=token) == user


@pytest.mark.parametrize("change", ["revoked", "expired", "inactive"])
def test_dead_tokens_do_not_authenticate(user: Any, change: str) -> None:
    token = token_create(user=user, name="cli")
    if change == "revoked":
        ApiToken.objects.update(revoked=True)
    elif change == "expired":
        ApiToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    else:
        user.is_active = False
        user.save()
    assert token_authenticate(token=token) is None


def test_unknown_route_under_fhir_is_not_a_500(api: Client) -> None:
    response = api.get("/fhir/R4/NoSuchType/123")
    assert 400 <= response.status_code < 500


def test_api_docs_load_nothing_from_another_origin(anon: Client) -> None:
    import re

    html = anon.get("/api/docs").content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/") for u in urls), urls


def test_a_value_the_database_cannot_store_is_a_400_not_a_500(api: Client, user: Any) -> None:
    """PostgreSQL text cannot hold NUL; SQLite can. Either way the caller never sees a 500."""
    from omnicare.access.roles import role_assign

    role_assign(user=user, role="front_desk")  # may register patients
    body = '{"resourceType": "Patient", "name": [{"family": "A\\u0000B"}]}'
    response = api.post("/fhir/R4/Patient", body, content_type="application/fhir+json")
    assert response.status_code in {201, 400}, response.content
    assert response.json()["resourceType"] == ("Patient" if response.status_code == 201 else "OperationOutcome")
