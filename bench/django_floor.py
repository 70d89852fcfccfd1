"""A second floor for ``bench/scale_bench.py``: the least Django + django-ninja can do per request in this shape.

The fixed shape of OmniCare is a Django (ASGI) server with django-ninja. ``bench/floor_app.py`` measures what
uvicorn, the pool and PostgreSQL allow with no framework at all; this app measures what is left once the
framework is there and *nothing else*: the same uvicorn, Django's psycopg pool of the same size
(``OMNICARE_DB_POOL_MAX``, default 8), OmniCare's own ASGI handler (``omnicare.core.asgi_handler``: the
request's sync part in one thread hop), no middleware, no authentication, no access check, no audit, no
validation. ``GET /floor/read/<pk>`` is one primary-key SELECT of a stored FHIR resource body through a ninja
operation, ``POST /floor/create`` one JSONB INSERT of the request body. The app's figures between this and
the bare floor show how much of a request the framework itself takes before any of OmniCare's rules run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dj_database_url
import django
from django.conf import settings


def _configure() -> None:
    db = dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0)
    db["OPTIONS"] = {"pool": {"min_size": 2, "max_size": int(os.environ.get("OMNICARE_DB_POOL_MAX", "8"))}}
    settings.configure(
        DEBUG=False, SECRET_KEY="django-floor-not-a-secret",  # noqa: S106 - a bench app, no sessions
        ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
        INSTALLED_APPS=[], MIDDLEWARE=[], DATABASES={"default": db}, USE_TZ=True, LOGGING_CONFIG=None,
    )  # fmt: skip
    django.setup()


_configure()

from django.db import connection  # noqa: E402 - after settings.configure
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from ninja import NinjaAPI  # noqa: E402

from bench.floor_app import FLOOR_TABLE_DDL  # noqa: E402 - the bare floor's table, the same statement
from omnicare.core.asgi_handler import ReusedThreadASGIHandler  # noqa: E402

api = NinjaAPI(docs_url=None, openapi_url=None)
_table_ready = False


@api.get("/read/{pk}")
def read(request: HttpRequest, pk: int) -> HttpResponse:
    with connection.cursor() as cur:
        cur.execute("SELECT body::text FROM fhir_resource WHERE id = %s", [pk])
        row = cur.fetchone()
    return HttpResponse(row[0] if row else "{}", status=200 if row else 404, content_type="application/json")


@api.post("/create")
def create(request: HttpRequest) -> HttpResponse:
    global _table_ready  # noqa: PLW0603 - once per process
    body = json.loads(request.body)
    with connection.cursor() as cur:
        if not _table_ready:
            cur.execute(FLOOR_TABLE_DDL)
            _table_ready = True
        cur.execute("INSERT INTO scale_floor (body) VALUES (%s::jsonb) RETURNING id", [json.dumps(body)])
        row = cur.fetchone()
    return HttpResponse(json.dumps({"id": row[0] if row else None}), status=201, content_type="application/json")


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b'{"status":"ok"}', content_type="application/json")


urlpatterns: list[Any] = [path("health", health), path("floor/", api.urls)]
app = ReusedThreadASGIHandler()
