"""Shared fixtures. Storage tests run on whatever DATABASE_URL names (PostgreSQL in CI, SQLite by default)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest


def _django_ready() -> bool:
    try:
        import django  # noqa: F401
    except ImportError:  # inside Pyodide only tests/pyclient runs
        return False
    return True


if _django_ready():

    @pytest.fixture
    def user(db: Any, django_user_model: Any) -> Any:
        return django_user_model.objects.create_user(username="dr.test", password="correct horse battery staple")

    @pytest.fixture
    def other_user(db: Any, django_user_model: Any) -> Any:
        return django_user_model.objects.create_user(username="nurse.test", password="correct horse battery staple")

    @pytest.fixture
    def token_for(db: Any) -> Callable[[Any], str]:
        from omnicare.access.services import token_create

        def make(u: Any) -> str:
            return token_create(user=u, name="test")

        return make

    @pytest.fixture
    def api(user: Any, token_for: Callable[[Any], str]) -> Any:
        """A Django test client authenticated with a bearer token, speaking FHIR JSON."""
        from django.test import Client

        return Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}", HTTP_ACCEPT="application/fhir+json")

    @pytest.fixture
    def anon() -> Any:
        from django.test import Client

        return Client()


def database_is_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


requires_postgres = pytest.mark.skipif(not database_is_postgres(), reason="needs DATABASE_URL=postgres://...")
requires_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL=redis://...")
