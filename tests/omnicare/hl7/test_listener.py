"""The MLLP listener over real sockets, as a real process: framing, pipelining, garbage, ACK semantics."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from omnicare.fhir.models import Resource
from omnicare.hl7.models import InboundMessage

from .conftest import Mllp, err, fixture, frame, msa, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def a28(control: str, mrn: str = "MRN9001", family: str = "Tester") -> str:
    return fixture("adt_a28_person", **{"NG-A28-0005": control, "MRN7790": mrn, "O'Neill": family})


def processed(control: str) -> InboundMessage | None:
    row = InboundMessage.objects.filter(control_id=control).first()
    return row if row is not None and row.state == InboundMessage.PROCESSED else None


def test_aa_carries_the_control_id_and_comes_after_the_row_is_stored(hl7_listener: Any) -> None:
    c = Mllp(hl7_listener.port)
    ack = c.call(fixture("adt_a01_v251"))
    code, control, _ = msa(ack)
    assert (code, control) == ("AA", "NG-A01-0001")
    assert ack.startswith("MSH|^~\\&|OMNICARE|OMNICARE|REGADT|NORTHGATE|")
    row = InboundMessage.objects.get(sender="NORTHGATE", control_id="NG-A01-0001")  # committed before the AA
    assert row.ack_code == "AA" and row.message_type == "ADT^A01" and row.version == "2.5.1"
    row = wait_for(lambda: processed("NG-A01-0001"), what="mapping")
    assert any(k.startswith("Patient/") for k in row.resources)
    c.close()


def test_a_frame_split_across_packets_and_two_messages_in_one_packet(hl7_listener: Any) -> None:
    c = Mllp(hl7_listener.port)
    data = frame(a28("SPLIT-1", "MRN-S1"))
    for part in (data[:1], data[1:7], data[7:40], data[40:-1], data[-1:]):
        c.send_raw(part)
        time.sleep(0.05)
    assert msa(c.read_ack())[:2] == ["AA", "SPLIT-1"]
    c.send_raw(frame(a28("PAIR-1", "MRN-P1")) + frame(a28("PAIR-2", "MRN-P2")))
    assert [msa(c.read_ack())[1], msa(c.read_ack())[1]] == ["PAIR-1", "PAIR-2"]
    c.close()


def test_pipelined_messages_are_acked_in_order(hl7_listener: Any) -> None:
    c = Mllp(hl7_listener.port)
    controls = [f"PIPE-{i:03d}" for i in range(40)]
    c.send_raw(b"".join(frame(a28(ctl, f"MRN-PIPE-{i}")) for i, ctl in enumerate(controls)))
    acks = [msa(c.read_ack()) for _ in controls]
    assert [a[0] for a in acks] == ["AA"] * 40 and [a[1] for a in acks] == controls
    assert InboundMessage.objects.filter(control_id__in=controls).count() == 40
    c.close()


def test_a_1mb_message_is_stored_whole(hl7_listener: Any) -> None:
    text = "Long narrative " * (1024 * 1024 // 15 + 1)
    msg = fixture("oru_r01_v23_local", **{"EC-POCT-55": "BIG-1"}) + f"OBX|2|TX|NARR^Narrative^L||{text}||||||F\r"
    assert len(msg) > 1024 * 1024
    c = Mllp(hl7_listener.port)
    assert msa(c.call(msg))[:2] == ["AA", "BIG-1"]
    row = InboundMessage.objects.get(control_id="BIG-1")
    assert len(row.raw) >= 1024 * 1024
    c.close()


def test_bad_messages_get_ar_or_ae_with_err_and_nothing_is_written(hl7_listener: Any) -> None:
    c = Mllp(hl7_listener.port)
    before_rows = InboundMessage.objects.count()
    ack = c.call("this is not an HL7 message")
    assert msa(ack)[0] == "AR" and "ERR" in ack
    ack = c.call(a28("BADTYPE-1").replace("ADT^A28^ADT_A05", "ZZZ^Z01"))
    assert msa(ack)[:2] == ["AR", "BADTYPE-1"] and "200^" in err(ack)
    no_pid = "\r".join(s for s in a28("NOPID-1").split("\r") if not s.startswith("PID"))
    ack = c.call(no_pid)
    assert msa(ack)[:2] == ["AE", "NOPID-1"] and "100^" in err(ack) and "PID" in err(ack)
    ack = c.call(a28("OLDVER-1").replace("|2.5.1", "|2.1"))
    assert msa(ack)[:2] == ["AR", "OLDVER-1"] and "203^" in err(ack)
    ack = c.call(a28("V23-ERR").replace("|2.5.1", "|2.3").replace("ADT^A28^ADT_A05", "ADT^A99"))
    assert msa(ack)[0] == "AR" and err(ack).startswith("ERR|")
    # The connection is still served after all that.
    assert msa(c.call(a28("AFTER-BAD-1", "MRN-AB1")))[:2] == ["AA", "AFTER-BAD-1"]
    assert InboundMessage.objects.count() == before_rows + 1
    assert not InboundMessage.objects.filter(control_id__in=["BADTYPE-1", "NOPID-1", "OLDVER-1", "V23-ERR"]).exists()
    c.close()


def test_garbage_outside_framing_closes_only_that_connection(hl7_listener: Any) -> None:
    good = Mllp(hl7_listener.port)
    bad = Mllp(hl7_listener.port)
    bad.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x1c\x0d")
    assert bad.closed_by_peer(), "a connection speaking something else is closed"
    assert msa(good.call(a28("GOOD-1", "MRN-G1")))[:2] == ["AA", "GOOD-1"]
    again = Mllp(hl7_listener.port)  # the listener still accepts new connections
    assert msa(again.call(a28("GOOD-2", "MRN-G2")))[:2] == ["AA", "GOOD-2"]
    for c in (good, bad, again):
        c.close()


def test_a_slow_client_does_not_hold_up_the_others(hl7_listener: Any) -> None:
    slow = Mllp(hl7_listener.port)
    data = frame(a28("SLOW-1", "MRN-SL1"))
    slow.send_raw(data[: len(data) // 2])
    fast_done: list[float] = []

    def fast() -> None:
        c = Mllp(hl7_listener.port)
        t0 = time.monotonic()
        for i in range(10):
            assert msa(c.call(a28(f"FAST-{i}", f"MRN-F{i}")))[0] == "AA"
        fast_done.append(time.monotonic() - t0)
        c.close()

    t = threading.Thread(target=fast)
    t.start()
    t.join(60)
    assert fast_done and fast_done[0] < 30, "ten messages on another connection while one sender dawdles"
    slow.send_raw(data[len(data) // 2 :])
    assert msa(slow.read_ack())[:2] == ["AA", "SLOW-1"]
    slow.close()


def test_a_connection_dropped_before_the_ack_is_resent_and_processed_once(hl7_listener: Any) -> None:
    msg = fixture("adt_a01_v251", **{"NG-A01-0001": "DROP-1", "MRN7781": "MRN-DROP"})
    c = Mllp(hl7_listener.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.send(msg)
    c.close()  # gone before the ACK (RST)
    wait_for(lambda: InboundMessage.objects.filter(control_id="DROP-1").exists(), what="the stored message")
    again = Mllp(hl7_listener.port)
    assert msa(again.call(msg))[:2] == ["AA", "DROP-1"]  # the sender retries: acknowledged again
    row = wait_for(lambda: processed("DROP-1"), what="mapping")
    time.sleep(1.0)
    assert InboundMessage.objects.filter(control_id="DROP-1").count() == 1
    row.refresh_from_db()
    assert row.repeats == 1 and row.attempts == 1
    patient = next(k for k in row.resources if k.startswith("Patient/"))
    assert Resource.objects.get(resource_type="Patient", resource_id=patient.split("/")[1]).version_id == 1
    again.close()
