"""No PHI in logs (issue 10, item 18): searching for a demo patient by name, birth date, MRN and id leaves no
trace of them in anything the server writes — uvicorn's own access log switched ON (as a plain
``uvicorn omnicare.asgi:application`` runs), our access log at INFO, Django's loggers — while the paths are
still logged. Real uvicorn process, real sockets, the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live import LiveServer, live_server_start, live_server_stop

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chatty_server(transactional_db: None, settings: Any, channel_prefix: str) -> Iterator[LiveServer]:
    server = live_server_start(database=dict(settings.DATABASES["default"]), access_log=True,
                               extra_env={"OMNICARE_CHANNEL_PREFIX": channel_prefix, "OMNICARE_LOG_LEVEL": "INFO"})
    try:
        yield server
    finally:
        live_server_stop(server)


def _get(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (http://127.0.0.1)
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_search_for_a_demo_patient_leaves_no_trace_in_any_log(chatty_server: LiveServer) -> None:
    from django.contrib.auth import get_user_model

    from omnicare.access.roles import FRONT_DESK, role_assign
    from omnicare.access.services import token_create
    from omnicare.fhir.demo import MRN_SYSTEM, demo_resources
    from omnicare.fhir.services import resources_import

    resources = list(demo_resources(patients=2, seed=7))
    resources_import(resources=resources)
    pat = next(r for r in resources if r["resourceType"] == "Patient")
    family, given = pat["name"][0]["family"], pat["name"][0]["given"][0]
    mrn = next(i["value"] for i in pat["identifier"] if i.get("system") == MRN_SYSTEM)
    clerk = get_user_model().objects.create_user(username="desk.log")
    role_assign(user=clerk, role=FRONT_DESK)
    token = token_create(user=clerk, name="log-test")

    base = chatty_server.url
    q = urllib.parse.urlencode
    statuses = [
        _get(f"{base}/fhir/R4/Patient?{q({'family': family, 'birthdate': pat['birthDate']})}", token),
        _get(f"{base}/fhir/R4/Patient?{q({'name': given})}", token),
        _get(f"{base}/fhir/R4/Patient?{q({'identifier': f'{MRN_SYSTEM}|{mrn}'})}", token),
        _get(f"{base}/fhir/R4/Encounter?{q({'patient': pat['id']})}", token),
        _get(f"{base}/fhir/R4/Patient?{q({'birthdate': family})}", token),  # a 400 that names the value
        _get(f"{base}/api/sync/pull?{q({'cursor': mrn + family})}", token),  # a 400 on a bad cursor
    ]
    assert statuses[:4] == [200, 200, 200, 200] and statuses[4] == 400 and statuses[5] == 400, statuses
    log = chatty_server.log()
    # The paths are logged (both uvicorn's line and ours), the searched values are not.
    assert '"GET /fhir/R4/Patient HTTP/1.1" 200' in log, log[-2000:]
    assert "omnicare.http GET /fhir/R4/Patient 200" in log, log[-2000:]
    for secret in (family, given, mrn, pat["id"], pat["birthDate"], urllib.parse.quote(family), "family=",
                   "identifier=", "cursor="):
        assert secret not in log, (secret, log[-3000:])
    assert json.dumps(family)[1:-1] not in log
