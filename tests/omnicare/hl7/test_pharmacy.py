"""Pharmacy: a MedicationRequest in OmniCare -> RDE^O11 to the pharmacy over MLLP (ACK wait, retry, dead
letter); an RDS^O13 from the pharmacy -> MedicationDispense linked to the order."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write
from omnicare.hl7 import outbound
from omnicare.hl7.message import parse
from omnicare.hl7.models import InboundMessage, OutboundMessage
from tests.live import free_port

from .test_mapping import ingest

pytestmark = pytest.mark.django_db


class Peer:
    """A pharmacy system's MLLP endpoint: reads a frame, waits ``delay``, answers ``code``."""

    def __init__(self, port: int = 0, delay: float = 0.0, code: str = "AA") -> None:
        self.delay, self.code = delay, code
        self.received: list[str] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while b"\x1c\x0d" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                if not buf:
                    continue
                text = buf[1:buf.index(b"\x1c")].decode()
                self.received.append(text)
                control = parse(text).control_id
                time.sleep(self.delay)
                ack = f"MSH|^~\\&|PHARMACY|PHARMACY|OMNICARE|OMNICARE|20261130||ACK^O11^ACK|A{control}|P|2.5.1\rMSA|{self.code}|{control}\r"
                try:
                    conn.sendall(b"\x0b" + ack.encode() + b"\x1c\x0d")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def order(status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": "rx-1", "status": status, "intent": "order",
        "subject": {"reference": "Patient/pt-1"}, "authoredOn": "2026-11-30",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "197361", "display": "Amlodipine 5 MG Oral Tablet"}]},
        "dosageInstruction": [{"text": "once daily", "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}],
        "requester": {"display": "Dr Ferreira"},
    }


def write(body: dict[str, Any], capture: Any) -> None:
    with capture(execute=True):
        FhirStore.system().apply([Write(body["resourceType"], body["id"], body)])


@pytest.fixture
def patient(db: Any) -> None:
    FhirStore.system().apply([Write("Patient", "pt-1", {
        "resourceType": "Patient", "id": "pt-1", "identifier": [{"system": "urn:omnicare:hl7:aa:northgate", "value": "MRN7781"}],
        "name": [{"family": "Okonkwo-Brandt", "given": ["Adaeze"]}], "gender": "female", "birthDate": "1972-03-14"})])


def test_a_new_order_is_sent_as_rde_and_acked_late(patient: None, settings: Any,
                                                  django_capture_on_commit_callbacks: Any) -> None:
    peer = Peer(delay=1.5)
    settings.OMNICARE_HL7_PHARMACY_ENDPOINT = f"127.0.0.1:{peer.port}"
    settings.OMNICARE_HL7_ACK_TIMEOUT_SECONDS = 10
    write(order(), django_capture_on_commit_callbacks)
    row = OutboundMessage.objects.get(source="MedicationRequest/rx-1/_history/1")
    assert row.state == OutboundMessage.PROCESSED and row.ack_code == "AA" and row.attempts == 1
    assert len(peer.received) == 1
    sent = parse(peer.received[0])
    assert sent.message_type == "RDE^O11" and sent.control_id == row.control_id
    assert sent.first("ORC").get(1) == "NW" and sent.first("ORC").get(2) == "rx-1"  # type: ignore[union-attr]
    assert sent.first("PID").get(3) == "MRN7781" and sent.first("PID").get(5, 2) == "Adaeze"  # type: ignore[union-attr]
    assert sent.first("RXE").get(2) == "197361" and sent.first("RXE").get(3) == "5"  # type: ignore[union-attr]
    write({**order("cancelled")}, django_capture_on_commit_callbacks)  # a change is sent too
    assert parse(peer.received[1]).first("ORC").get(1) == "CA"  # type: ignore[union-attr]
    peer.close()


def test_peer_down_then_up_is_retried_with_backoff_and_a_reject_is_dead(
    patient: None, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    port = free_port()
    settings.OMNICARE_HL7_PHARMACY_ENDPOINT = f"127.0.0.1:{port}"
    settings.OMNICARE_HL7_ACK_TIMEOUT_SECONDS = 1
    write(order(), django_capture_on_commit_callbacks)
    row = OutboundMessage.objects.get()
    assert row.state == OutboundMessage.FAILED and row.attempts == 1 and row.next_attempt_at is not None
    assert "no ACK" in row.last_error
    slow = Peer(port=port, delay=3.0)  # up, but answers after our 1 s ACK timeout
    assert outbound.outbound_send(message_id=row.pk) == OutboundMessage.FAILED
    slow.close()
    slow.thread.join(5)
    time.sleep(3.2)
    peer = Peer(port=port)
    row.refresh_from_db()
    assert outbound.outbound_retry_due(now=row.next_attempt_at) == 1  # the sweeper re-sends it (eager)
    row.refresh_from_db()
    assert row.state == OutboundMessage.PROCESSED and row.attempts == 3
    assert {parse(m).control_id for m in peer.received} == {row.control_id}  # same control id on every try
    peer.close()
    rejecting = Peer(code="AR")
    settings.OMNICARE_HL7_PHARMACY_ENDPOINT = f"127.0.0.1:{rejecting.port}"
    write({**order(), "id": "rx-2"}, django_capture_on_commit_callbacks)
    assert OutboundMessage.objects.get(source="MedicationRequest/rx-2/_history/1").state == OutboundMessage.DEAD
    rejecting.close()


def test_rds_dispense_is_linked_to_the_order(patient: None, settings: Any,
                                            django_capture_on_commit_callbacks: Any) -> None:
    settings.OMNICARE_HL7_PHARMACY_ENDPOINT = ""
    write(order(), django_capture_on_commit_callbacks)
    row = ingest("rds_o13_dispense", **{"{ORDER}": "rx-1"})
    assert row.state == InboundMessage.PROCESSED, row.last_error
    md = Resource.objects.get(resource_type="MedicationDispense").body
    assert md["authorizingPrescription"] == [{"reference": "MedicationRequest/rx-1"}]
    assert md["subject"] == {"reference": "Patient/pt-1"}  # found by MRN
    assert md["status"] == "completed" and md["quantity"] == {"value": 28, "unit": "tablet"}
    assert md["whenHandedOver"] == "2026-11-30T16:10:00+01:00"
    assert md["medicationCodeableConcept"]["coding"][0]["code"] == "197361"
    again = ingest("rds_o13_dispense", **{"{ORDER}": "rx-1", "PH-2201": "PH-2202"})
    assert again.state == InboundMessage.PROCESSED
    assert Resource.objects.filter(resource_type="MedicationDispense").count() == 1
