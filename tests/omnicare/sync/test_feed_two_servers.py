"""The pull cursor never skips with two real server processes writing and serving pulls (PostgreSQL).

Writers PUT-as-create Observations through both uvicorn processes at once; readers pull through both
(cursor handed from one process to the other on every page) while the writes go on. Every acknowledged
write must reach every reader exactly once, in position order. Positions come from a sequence with no lock
(core.feed_horizon.feed_settled): commits interleave freely across the processes and only the snapshot horizon
keeps a reader from skipping one.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omnicare.fhir.services import resources_import
from tests.conftest import requires_postgres
from tests.live import LiveServer, live_server_start, live_server_stop
from tests.omnicare.sync.conftest import care_team, observation, patient, practitioner, wait_settled

WRITERS = 6
WRITES_EACH = 15
READERS = 2


@pytest.fixture
def two_servers(transactional_db: None, channel_prefix: str) -> Iterator[list[LiveServer]]:
    from django.conf import settings

    servers: list[LiveServer] = []
    try:
        for _ in range(2):
            servers.append(
                live_server_start(
                    database=dict(settings.DATABASES["default"]),
                    extra_env={"OMNICARE_CHANNEL_PREFIX": channel_prefix},
                )
            )
        yield servers
    finally:
        for s in servers:
            live_server_stop(s)


def _call(url: str, token: str, method: str, body: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        url, method=method, data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        return resp.status, json.loads(resp.read() or b"{}")


@requires_postgres
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_cursor_never_skips_with_two_server_processes(
    user: Any, token_for: Callable[[Any], str], two_servers: list[LiveServer]
) -> None:
    from omnicare.access.roles import PHYSICIAN, role_assign

    role_assign(user=user, role=PHYSICIAN)
    resources_import(resources=[practitioner(user.username), patient("tp"), care_team("tp", [user.username])])
    token = token_for(user)
    urls = [s.url for s in two_servers]

    # Pulls need a registered device; one token belongs to one device (issue 10, item 14).
    assert _call(f"{urls[0]}/api/sync/devices", token, "POST", {"deviceId": "two-servers"})[0] == 200

    def pull(i: int, cursor: str | None, limit: int) -> dict[str, Any]:
        url = f"{urls[i % 2]}/api/sync/pull?deviceId=two-servers"
        return _call(url, token, "POST", {"cursor": cursor, "limit": limit})[1]

    wait_settled()
    start: str | None = None
    while True:  # start every reader from the head
        page = pull(0, start, 1000)
        start = page["cursor"]
        if not page["hasMore"]:
            break

    acked: list[tuple[str, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            for n in range(WRITES_EACH):
                oid = f"tw{w}-{n}"
                status, body = _call(
                    f"{urls[rng.randrange(2)]}/fhir/R4/Observation/{oid}",
                    token,
                    "PUT",
                    observation(oid, "tp"),
                )
                assert status in (200, 201), (status, body)
                with lock:
                    acked.append((oid, int(body["meta"]["versionId"])))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    seen: dict[int, list[tuple[int, str, int]]] = {r: [] for r in range(READERS)}

    def reader(r: int) -> None:
        rng = random.Random(100 + r)
        cursor, k = start, r
        try:
            while True:
                last_round = done.is_set()
                page = pull(k, cursor, rng.choice([1, 2, 5, 50]))
                k += 1  # the next page from the other process
                seen[r].extend(
                    (c["seq"], c["id"], int(c["versionId"]))
                    for c in page["changes"]
                    if c["resourceType"] == "Observation"
                )
                cursor = page["cursor"]
                if last_round and not page["hasMore"]:
                    return
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(180)
    wait_settled()  # then a reader's page without hasMore means it has everything
    done.set()
    for t in readers:
        t.join(180)
    assert not errors, errors
    assert len(acked) == WRITERS * WRITES_EACH
    for r, got in seen.items():
        seqs = [s for s, _, _ in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"reader {r}: out of order or repeated"
        assert sorted((i, v) for _, i, v in got) == sorted(acked), f"reader {r} missed or repeated a write"
