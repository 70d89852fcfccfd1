"""End to end with real processes: the MLLP listener, a real Celery worker on Redis, the ASGI server.

ADT registers a patient; the clinician joins the patient's care team; an ORU arrives over MLLP; the
clinician's device, connected to /ws/sync, gets the hint naming the new results and pulls them (with
their abnormal flags) through the sync API. A device outside the scope hears nothing about them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from omnicare.fhir.models import Resource
from omnicare.hl7.mapping import rid
from tests.conftest import requires_redis
from tests.live import REPO_ROOT, child_env, database_url_from_settings
from tests.omnicare.sync.conftest import care_team, practitioner, seed

from .conftest import ListenerProcess, Mllp, fixture, msa, start_listener, stop_listener

pytestmark = [requires_redis, pytest.mark.redis, pytest.mark.timeout(300)]


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Not eager here: tasks go through Redis to the real worker (overrides the package's autouse fixture)."""
    yield None


@pytest.fixture
def hl7_worker_stack(live_asgi: str, settings: Any, channel_prefix: str, tmp_path: Path
                     ) -> Iterator[tuple[ListenerProcess, str]]:
    """A listener that enqueues to a queue of its own and a real Celery worker consuming it."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL=redis://...")
    queue = f"hl7-test-{uuid.uuid4().hex[:10]}"
    extra = {"CELERY_TASK_ALWAYS_EAGER": "0", "OMNICARE_HL7_CELERY_QUEUE": queue,
             "OMNICARE_CHANNEL_PREFIX": channel_prefix}
    env = child_env(database_url=database_url_from_settings(dict(settings.DATABASES["default"])), extra=extra)
    worker = subprocess.Popen(  # noqa: S603 (fixed argv)
        [sys.executable, "-m", "celery", "-A", "omnicare", "worker", "--pool=solo", "-Q", queue,
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    listener = start_listener(settings, tmp_path, extra)
    settings.OMNICARE_HL7_CELERY_QUEUE = queue  # what this test process enqueues goes to that worker too
    try:
        yield listener, live_asgi
    finally:
        stop_listener(listener)
        worker.terminate()
        try:
            out, _ = worker.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        if out and out.strip():
            print(out.decode(errors="replace")[-4000:])
        print(listener.log()[-4000:])


def _post(base: str, path: str, tok: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 (127.0.0.1)
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _pull_all(base: str, tok: str) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    cursor = None
    _post(base, "/api/sync/devices", tok, {"deviceId": "hl7-tab"})  # pulls need a registered device
    while True:
        page = _post(base, "/api/sync/pull?deviceId=hl7-tab", tok, {"cursor": cursor, "limit": 500})
        changes += page["changes"]
        cursor = page["cursor"]
        if not page["hasMore"]:
            return changes


@database_sync_to_async
def _clinic(user: Any, other: Any, patient_id: str) -> tuple[str, str]:
    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.access.services import token_create

    role_assign(user=user, role=PHYSICIAN)
    role_assign(user=other, role=PHYSICIAN)
    seed(practitioner(user.username), practitioner(other.username), care_team(patient_id, [user.username]))
    return token_create(user=user, name="tablet"), token_create(user=other, name="tablet")


async def _hint_naming(ws: Any, ids: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no hint named the new results")
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
        if msg.get("type") == "sync.hint" and ids & {c["id"] for c in msg.get("changes", [])}:
            return msg


@pytest.mark.django_db(transaction=True)
async def test_adt_then_oru_reach_the_device_in_scope_through_the_worker(
    hl7_worker_stack: tuple[ListenerProcess, str], user: Any, other_user: Any
) -> None:
    from websockets.asyncio.client import connect

    listener, base = hl7_worker_stack
    patient_id = rid("Patient", "urn:omnicare:hl7:aa:northgate", "MRN7781")
    c = Mllp(listener.port)
    assert msa(await asyncio.to_thread(c.call, fixture("adt_a01_v251")))[0] == "AA"

    @database_sync_to_async
    def registered() -> bool:
        return Resource.objects.filter(resource_type="Patient", resource_id=patient_id).exists()

    deadline = time.monotonic() + 60
    while not await registered():
        assert time.monotonic() < deadline, "the worker did not register the patient"
        await asyncio.sleep(0.1)
    tok, other_tok = await _clinic(user, other_user, patient_id)
    ws_url = base.replace("http://", "ws://") + "/ws/sync"
    async with connect(ws_url, origin=base, open_timeout=10) as ws, \
            connect(ws_url, origin=base, open_timeout=10) as other_ws:  # type: ignore[arg-type]
        for sock, t in ((ws, tok), (other_ws, other_tok)):
            await sock.send(json.dumps({"type": "auth", "token": t}))
            assert json.loads(await asyncio.wait_for(sock.recv(), timeout=10))["type"] == "ready"
        glucose = rid("Observation", "NORTHGATE-LAB", "NGLAB|FL-88123", "2345-7|")
        potassium = rid("Observation", "NORTHGATE-LAB", "NGLAB|FL-88123", "2823-3|")
        t0 = time.monotonic()
        assert msa(await asyncio.to_thread(c.call, fixture("oru_r01_prelim")))[:2] == ["AA", "LAB-000917"]
        hint = await _hint_naming(ws, {glucose, potassium}, timeout=60)
        elapsed = time.monotonic() - t0
        assert {"Observation", "DiagnosticReport"} <= {ch["resourceType"] for ch in hint["changes"]}
        changes = await asyncio.to_thread(_pull_all, base, tok)
        got = {(ch["resourceType"], ch["id"]): ch for ch in changes}
        k = got[("Observation", potassium)]["resource"]
        assert k["interpretation"][0]["coding"][0]["code"] == "HH" and k["status"] == "preliminary"
        assert ("DiagnosticReport", rid("DiagnosticReport", "NORTHGATE-LAB", "NGLAB|FL-88123")) in got
        # The final result updates the same Observation on the device.
        assert msa(await asyncio.to_thread(c.call, fixture("oru_r01_final")))[0] == "AA"
        await _hint_naming(ws, {potassium}, timeout=60)
        changes = await asyncio.to_thread(_pull_all, base, tok)
        finals = [ch for ch in changes if ch["id"] == potassium]
        assert finals[-1]["resource"]["status"] == "final" and finals[-1]["resource"]["valueQuantity"]["value"] == 6.7
        # Nobody outside the care team hears of it or receives it.
        with pytest.raises(TimeoutError):
            await _hint_naming(other_ws, {glucose, potassium}, timeout=2)
        assert not {glucose, potassium} & {ch["id"] for ch in await asyncio.to_thread(_pull_all, base, other_tok)}
    c.close()
    print(f"ACK -> hint on the device: {elapsed * 1000:.0f} ms")


@pytest.mark.django_db(transaction=True)
def test_outbound_rde_goes_through_the_worker_retried_while_the_pharmacy_is_down(
    hl7_worker_stack: tuple[ListenerProcess, str], settings: Any
) -> None:
    from omnicare.fhir.repository import FhirStore
    from omnicare.fhir.services import Write
    from omnicare.hl7.models import OutboundMessage
    from omnicare.hl7.outbound import outbound_retry_due
    from tests.live import free_port

    from .test_pharmacy import Peer, order

    port = free_port()
    settings.OMNICARE_HL7_PHARMACY_ENDPOINT = f"127.0.0.1:{port}"
    seed({"resourceType": "Patient", "id": "pt-1", "name": [{"family": "Okafor"}]})
    FhirStore.system().apply([Write("MedicationRequest", "rx-1", order())])

    def state() -> OutboundMessage:
        return OutboundMessage.objects.get(source="MedicationRequest/rx-1/_history/1")

    deadline = time.monotonic() + 60
    while state().state != OutboundMessage.FAILED:  # the worker tried: nobody listening
        assert time.monotonic() < deadline, state().state
        time.sleep(0.1)
    assert state().attempts == 1 and state().next_attempt_at is not None
    peer = Peer(port=port, delay=2.0)  # the pharmacy is back, and slow to acknowledge
    try:
        assert outbound_retry_due(now=state().next_attempt_at) == 1  # what beat does every 15 s
        deadline = time.monotonic() + 60
        while state().state != OutboundMessage.PROCESSED:
            assert time.monotonic() < deadline, state().state
            time.sleep(0.1)
        row = state()
        assert row.attempts == 2 and row.ack_code == "AA"
        assert [m.split("\r")[0].split("|")[9] for m in peer.received] == [row.control_id]
    finally:
        peer.close()
