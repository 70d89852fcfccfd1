"""API fuzzing with schemathesis against /api/openapi.json (sync, audit and access routes).

Bounded (``MAX_EXAMPLES`` per operation) so it runs in the normal suite. Properties: no 5xx, and a rejected
request (4xx) changes no data — clinical versions, conflicts, the mutation log, devices, grants and
revocations stay as they were (audit events may be added: denials are audited by design).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

MAX_EXAMPLES = 15


def _schema() -> Any:
    import django

    django.setup()
    from omnicare.api import api

    raw = api.get_openapi_schema()
    return schemathesis.openapi.from_dict(json.loads(json.dumps(raw, default=str))).include(
        path_regex=r"^/api/(sync|audit|access)/"
    )


schema = _schema()


def _counts() -> dict[str, int]:
    from omnicare.access.models import DeviceRevocation, EmergencyAccessGrant
    from omnicare.fhir.models import Resource, ResourceVersion
    from omnicare.sync.models import AppliedMutation, Conflict, Device

    return {m.__name__: m.objects.count() for m in (Resource, ResourceVersion, Conflict, AppliedMutation,
                                                   Device, EmergencyAccessGrant, DeviceRevocation)}


@pytest.fixture
def fuzz_client(clinic: Any, api: Any) -> Any:
    return api


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_5xx_and_rejections_change_nothing(case: Any, fuzz_client: Any) -> None:
    before = _counts()
    kwargs: dict[str, Any] = {}
    body = getattr(case, "body", None)
    if body is not None and type(body).__name__ != "NotSet":
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        kwargs = {"data": data, "content_type": "application/json"}
    path = case.formatted_path
    query = {k: v for k, v in (case.query or {}).items() if v is not None}
    method = case.method.lower()
    if method not in ("get", "post", "put", "delete", "patch"):
        return  # schemathesis also tries non-standard verbs: Django answers 405 before any view
    if method == "get":
        r = fuzz_client.get(path, query)
    else:
        if query:
            from urllib.parse import urlencode

            path = path + "?" + urlencode(query, doseq=True)
        r = getattr(fuzz_client, method)(path, **kwargs)
    assert r.status_code < 500, (case.method, path, kwargs, r.content[:500])
    if 400 <= r.status_code < 500:
        assert _counts() == before, (case.method, path, kwargs, r.status_code)
