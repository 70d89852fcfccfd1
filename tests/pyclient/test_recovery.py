"""Recovery file format (pyclient.recovery; PROTOCOL.md "Recovery files"): layout, AAD, parsing in plain words."""

from __future__ import annotations

import json

import pytest

from pyclient import recovery
from pyclient.protocol import Mutation
from pyclient.recovery import EscrowPayload, RecoveryFile, RecoveryFileError, SealedItem, file_of

ITEM = SealedItem("0123456789abcdef", "m-1", b"\x04" + bytes(range(64)), bytes(12), b"\x01" * 40)


def test_a_file_round_trips_and_keeps_the_order() -> None:
    second = SealedItem(ITEM.key_id, "m-2", ITEM.epk, ITEM.iv, b"\x02" * 17)
    f = RecoveryFile.parse(file_of("tab-1", "2026-12-01T10:00:00Z", [ITEM, second]))
    assert f.device_id == "tab-1" and [i.mutation_id for i in f.items] == ["m-1", "m-2"] and f.items[0] == ITEM


def test_the_aad_binds_format_key_device_and_mutation() -> None:
    assert recovery.item_aad(key_id="k", device_id="d", mutation_id="m") == b'["omnicare-recovery/1","k","d","m"]'
    assert recovery.hkdf_info(b"E", b"R") == b"omnicare-recovery/1\x00ER"
    assert recovery.key_id_of(b"\x04" * 65) == recovery.key_id_of(b"\x04" * 65) and len(recovery.key_id_of(b"x")) == 16


def test_a_payload_round_trips_canonically() -> None:
    m = Mutation("m-1", "put", "Observation", "o1", 3, {"resourceType": "Observation", "id": "o1", "status": "final"})
    p = EscrowPayload(user="dr.a", device_id="tab-1", token="t" * 32, queued=12.5, mutation=m)
    raw = recovery.payload_bytes(p)
    assert recovery.payload_parse(raw) == p
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def _file(**over: object) -> bytes:
    body = json.loads(file_of("tab-1", "t", [ITEM]))
    body.update(over)
    return json.dumps(body).encode()


@pytest.mark.parametrize(("data", "words"), [
    (b"\x89PNG", "not an OmniCare recovery file"),
    (_file(format="omnicare-recovery/2"), "not an OmniCare recovery file"),
    (_file(alg="RSA"), "unknown method"),
    (_file(count=3), "incomplete"),
    (_file(items=[]), "no changes"),
    (_file(items=[ITEM.to_json(), ITEM.to_json()], count=2), "appears twice"),
    (_file(items=[{**ITEM.to_json(), "epk": "AAAA"}]), "wrong length"),
    (_file(items=[{**ITEM.to_json(), "ct": "!!"}]), "not readable"),
    (_file(deviceId=""), "header is incomplete"),
])
def test_a_bad_file_says_why_in_plain_words(data: bytes, words: str) -> None:
    with pytest.raises(RecoveryFileError, match=words):
        RecoveryFile.parse(data)


def test_a_damaged_payload_is_refused() -> None:
    with pytest.raises(RecoveryFileError, match="damaged"):
        recovery.payload_parse(b'{"user": "x"}')
    with pytest.raises(RecoveryFileError, match="not valid"):
        recovery.payload_parse(json.dumps({"user": "u", "deviceId": "d", "token": "t", "queued": 1,
                                           "mutation": {"mutationId": "m", "op": "drop", "resourceType": "X",
                                                        "id": "1", "baseVersion": None}}).encode())
