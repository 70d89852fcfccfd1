"""Envelope v1: format, AAD binding, test vectors on CPython and (via the prelude) WebCrypto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyclient import envelope, keys
from pyclient.envelope import (
    AuthenticationFailed,
    EnvelopeError,
    MalformedEnvelope,
    RecordRef,
    UnknownKeyId,
)

VECTORS = Path(__file__).parent / "vectors"
EV: dict[str, Any] = json.loads((VECTORS / "envelope_v1.json").read_text(encoding="utf-8"))
KV: dict[str, Any] = json.loads((VECTORS / "keyring_v1.json").read_text(encoding="utf-8"))


def vector_keyring() -> keys.Keyring:
    ids = list(EV["keys"])
    return keys.Keyring(
        tuple(
            keys.KeyEntry(
                keys.KeyKind.DATA,
                kid,
                keys.KeyStatus.ACTIVE if i == 0 else keys.KeyStatus.RETIRED,
                bytes.fromhex(EV["keys"][kid]),
            )
            for i, kid in enumerate(ids)
        )
    )


def case_ref(c: dict[str, Any]) -> RecordRef:
    return RecordRef(c["resource_type"], c["resource_id"], int(c["version"]))


# -- backend-independent: format, AAD, parsing (run on CPython and in Pyodide) ------------


@pytest.mark.parametrize("case", EV["cases"], ids=lambda c: c["name"])
def test_vector_aad_and_header_are_reproduced_by_the_planner(case: dict[str, Any]) -> None:
    job = envelope.seal_plan(
        key_id=case["key_id"],
        nonce=bytes.fromhex(case["nonce"]),
        resource_type=case["resource_type"],
        resource_id=case["resource_id"],
        version=int(case["version"]),
        plaintext=bytes.fromhex(case["plaintext"]),
    )
    assert job.aad.hex() == case["aad"]
    blob = bytes.fromhex(case["envelope"])
    parsed = envelope.parse(blob)
    assert parsed.key_id == case["key_id"]
    assert parsed.nonce.hex() == case["nonce"]
    assert parsed.header == job.header
    assert parsed.aad_for(case_ref(case)) == job.aad
    assert len(parsed.ciphertext) == len(job.plaintext) + envelope.TAG_LEN
    assert envelope.key_id_of(blob) == case["key_id"]


def test_aad_differs_for_every_bound_field() -> None:
    header = envelope.header_for(key_id="k1", nonce=bytes(12))
    base = RecordRef("Patient", "p1", 3)
    aads = {
        envelope.aad_for(header=header, ref=r)
        for r in (
            base,
            RecordRef("Observation", "p1", 3),
            RecordRef("Patient", "p2", 3),
            RecordRef("Patient", "p1", 4),
        )
    }
    assert len(aads) == 4
    # length prefixes: ("Pat", "ient1") must not collide with ("Patient", "1")
    a = envelope.aad_for(header=header, ref=RecordRef("Pat", "ient1", 0))
    b = envelope.aad_for(header=header, ref=RecordRef("Patient", "1", 0))
    assert a != b


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"OE",
        b"XX\x01\x02k1" + bytes(40),
        b"OE\x02\x02k1" + bytes(40),
        b"OE\x01\x00" + bytes(40),
        b"OE\x01\x02k1" + bytes(20),
    ],
)
def test_malformed_envelopes_are_rejected_with_a_clear_error(blob: bytes) -> None:
    with pytest.raises(MalformedEnvelope):
        envelope.parse(blob)


@pytest.mark.parametrize("bad", ["", "with space", "x" * 65, "clé"])
def test_key_ids_must_be_short_printable_ascii(bad: str) -> None:
    with pytest.raises(EnvelopeError):
        envelope.header_for(key_id=bad, nonce=bytes(12))


def test_record_ref_of_a_resource_uses_meta_version_and_drafts_are_version_zero() -> None:
    assert RecordRef.of({"resourceType": "Patient", "id": "a", "meta": {"versionId": "7"}}) == RecordRef(
        "Patient", "a", 7
    )
    assert RecordRef.of({"resourceType": "Patient", "id": "a"}).version == 0
    with pytest.raises(EnvelopeError):
        RecordRef.of({"resourceType": "Patient", "id": "a", "meta": {"versionId": "v7"}})


@given(
    kid=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64),
    nonce=st.binary(min_size=12, max_size=12),
    rtype=st.text(max_size=40),
    rid=st.text(max_size=80),
    version=st.integers(min_value=0, max_value=2**64 - 1),
    ct=st.binary(min_size=16, max_size=200),
)
def test_pack_then_parse_roundtrips(
    kid: str, nonce: bytes, rtype: str, rid: str, version: int, ct: bytes
) -> None:
    job = envelope.seal_plan(
        key_id=kid, nonce=nonce, resource_type=rtype, resource_id=rid, version=version, plaintext=ct[16:]
    )
    parsed = envelope.parse(envelope.pack(job, ct))
    assert (parsed.key_id, parsed.nonce, parsed.ciphertext) == (kid, nonce, ct)
    assert parsed.aad_for(RecordRef(rtype, rid, version)) == job.aad


# -- CPython backend (cryptography) --------------------------------------------------------


@pytest.fixture
def cc() -> Any:
    pytest.importorskip("cryptography")
    from pyclient.adapters import cpython_crypto

    return cpython_crypto


def test_cpython_backend_produces_the_vector_bytes_exactly(cc: Any) -> None:
    ring = vector_keyring()
    jobs = [
        envelope.seal_plan(
            key_id=c["key_id"],
            nonce=bytes.fromhex(c["nonce"]),
            resource_type=c["resource_type"],
            resource_id=c["resource_id"],
            version=int(c["version"]),
            plaintext=bytes.fromhex(c["plaintext"]),
        )
        for c in EV["cases"]
    ]
    assert [b.hex() for b in cc.seal_jobs(ring, jobs)] == [c["envelope"] for c in EV["cases"]]


def test_cpython_backend_opens_the_vectors_with_active_and_retired_keys(cc: Any) -> None:
    opened = cc.open_blobs(
        vector_keyring(), [(case_ref(c), bytes.fromhex(c["envelope"])) for c in EV["cases"]]
    )
    assert [o.hex() for o in opened] == [c["plaintext"] for c in EV["cases"]]


def test_cpython_backend_refuses_moved_replayed_and_unknown_key_envelopes(cc: Any) -> None:
    items = [
        (RecordRef(n["resource_type"], n["resource_id"], int(n["version"])), bytes.fromhex(n["envelope"]))
        for n in EV["negative"]
    ]
    assert [type(o).__name__ for o in cc.open_blobs(vector_keyring(), items)] == [
        n["error"] for n in EV["negative"]
    ]


def test_a_flipped_ciphertext_bit_fails_authentication(cc: Any) -> None:
    c = EV["cases"][3]
    blob = bytearray.fromhex(c["envelope"])
    blob[-20] ^= 1
    (res,) = cc.open_blobs(vector_keyring(), [(case_ref(c), bytes(blob))])
    assert isinstance(res, AuthenticationFailed)


class StateStore:
    """What an IndexedDB/SQLite key-state store does: compare-and-swap in one transaction."""

    def __init__(self, state: keys.KeyState | None = None) -> None:
        self.stored = state
        self.writes: list[keys.KeyState] = []

    def persist(self, expected: keys.KeyState, new: keys.KeyState) -> None:
        self.stored = keys.compare_and_swap(self.stored, expected=expected, new=new)
        self.writes.append(new)


def _pipeline(cc: Any, persisted: list[keys.KeyState], block: int = 4) -> Any:
    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(range(32)))
    store = StateStore()

    def persist(expected: keys.KeyState, new: keys.KeyState) -> None:
        store.persist(expected, new)
        persisted.append(new)

    return cc.CpythonCrypto(
        keyring=ring,
        state=keys.KeyState("dk-1", b"\x00\x00\x00\x01"),
        persist_state=persist,
        block_size=block,
    )


def test_sealed_records_open_only_as_the_record_they_were_sealed_for(cc: Any) -> None:
    persisted: list[keys.KeyState] = []
    crypto = _pipeline(cc, persisted)
    obs = EV["records"]["observation"]
    pat = EV["records"]["patient"]
    blobs = crypto.seal_records([obs, pat])
    assert crypto.open_records([(RecordRef.of(obs), blobs[0]), (RecordRef.of(pat), blobs[1])]) == [obs, pat]
    # swap the two ciphertexts between the records: both must fail, not decrypt as the other
    swapped = crypto.try_open_records([(RecordRef.of(obs), blobs[1]), (RecordRef.of(pat), blobs[0])])
    assert all(isinstance(r, AuthenticationFailed) for r in swapped)
    with pytest.raises(AuthenticationFailed):
        crypto.open_records([(RecordRef.of(pat), blobs[0])])


def test_nonces_never_repeat_and_the_counter_is_persisted_before_use(cc: Any) -> None:
    persisted: list[keys.KeyState] = []
    crypto = _pipeline(cc, persisted, block=4)
    obs = EV["records"]["observation"]
    nonces = []
    for n in (1, 3, 5, 2):
        blobs = crypto.seal_records([dict(obs, id=f"o{i}") for i in range(n)])
        nonces += [envelope.parse(b).nonce for b in blobs]
        # every nonce used so far is below the persisted counter
        assert max(int.from_bytes(x[4:], "big") for x in nonces) < persisted[-1].next_counter
    assert len(set(nonces)) == len(nonces) == 11
    assert crypto.key_state == persisted[-1]


def test_two_tabs_sharing_one_key_never_reuse_a_nonce(cc: Any) -> None:
    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(range(32)))
    start = keys.KeyState("dk-1", b"\x00\x00\x00\x01")
    store = StateStore(start)
    # both tabs loaded the same stored state before either reserved a block
    tabs = [
        cc.CpythonCrypto(keyring=ring, state=start, persist_state=store.persist, block_size=3)
        for _ in range(2)
    ]
    obs = EV["records"]["observation"]
    nonces = []
    for i in range(12):
        blobs = tabs[i % 2].seal_records([dict(obs, id=f"o{i}-{j}") for j in range(i % 4 + 1)])
        nonces += [envelope.parse(b).nonce for b in blobs]
    assert len(set(nonces)) == len(nonces)
    assert store.stored is not None
    assert max(int.from_bytes(x[4:], "big") for x in nonces) < store.stored.next_counter


def test_a_lost_key_state_is_never_silently_restarted() -> None:
    used = keys.KeyState("dk-1", bytes(4), next_counter=2048)
    with pytest.raises(ValueError, match="rotate"):
        keys.compare_and_swap(None, expected=used, new=keys.reserve_nonces(used, 1)[0])


def test_a_failing_persist_seals_nothing(cc: Any) -> None:
    def broken(expected: keys.KeyState, state: keys.KeyState) -> None:
        raise OSError("disk full")

    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(32))
    crypto = cc.CpythonCrypto(keyring=ring, state=keys.KeyState("dk-1", bytes(4)), persist_state=broken)
    with pytest.raises(OSError):
        crypto.seal_records([EV["records"]["observation"]])
    assert crypto.key_state.next_counter == 0


def test_sealing_past_the_budget_raises_and_rotation_is_signalled_before(cc: Any) -> None:
    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(32))
    state = keys.KeyState("dk-1", bytes(4), next_counter=0, budget=10, rotate_after=8)
    store = StateStore(state)
    crypto = cc.CpythonCrypto(keyring=ring, state=state, persist_state=store.persist, block_size=1)
    obs = EV["records"]["observation"]
    crypto.seal_records([obs] * 8)
    assert crypto.key_state.rotate_soon
    crypto.seal_records([obs] * 2)
    with pytest.raises(keys.NonceBudgetExhausted, match="rotate"):
        crypto.seal_records([obs])


def test_rotation_keeps_old_envelopes_readable(cc: Any) -> None:
    old = keys.new_keyring(data_key_id="dk-1", data_key=bytes(range(32)))
    c1 = cc.CpythonCrypto(keyring=old, state=keys.KeyState("dk-1", bytes(4)), persist_state=lambda e, n: None)
    obs = EV["records"]["observation"]
    old_blob = c1.seal_records([obs])[0]
    new = old.rotated(new_key_id="dk-2", new_key=bytes(range(1, 33)))
    c2 = cc.CpythonCrypto(keyring=new, state=keys.KeyState("dk-2", bytes(4)), persist_state=lambda e, n: None)
    new_blob = c2.seal_records([obs])[0]
    assert envelope.key_id_of(new_blob) == "dk-2"
    assert c2.open_records([(RecordRef.of(obs), old_blob), (RecordRef.of(obs), new_blob)]) == [obs, obs]
    dropped = cc.CpythonCrypto(
        keyring=new.without(["dk-1"]), state=keys.KeyState("dk-2", bytes(4)), persist_state=lambda e, n: None
    )
    with pytest.raises(UnknownKeyId):
        dropped.open_records([(RecordRef.of(obs), old_blob)])


# -- WebCrypto backend: results gathered by tests/pyclient/_pyodide_prelude.py in Pyodide ------


def test_webcrypto_backend_matches_the_vectors_byte_for_byte() -> None:
    mod = pytest.importorskip("_webcrypto_results", reason="only inside Pyodide (prelude runs first)")
    res = mod.results
    assert "error" not in res, res.get("error")
    assert res["sealed"] == [c["envelope"] for c in EV["cases"]]
    assert res["opened"] == [c["plaintext"] for c in EV["cases"]]
    assert res["negative"] == [n["error"] for n in EV["negative"]]
    assert res["pipeline_roundtrip"] is True
    assert res["pipeline_nonces_unique"] is True
    assert res["pipeline_persisted_before_use"] == [1024]
    assert res["pipeline_moved"] == "AuthenticationFailed"
    assert res["kek_extractable"] is False  # the PIN's KEK stays inside WebCrypto (KV["kek"]: checked on CPython)
    assert res["keyring_blob"] == KV["blob"]
    assert res["keyring_keys"] == [e["key"] for e in KV["entries"]]
    assert res["wrong_pin"] == "WrongPin"
    assert res["random_len"] == 16
    # Pyodide's zlib build emits the same DEFLATE bytes as CPython's for the shipped dictionary
    assert res["compressed_patient"] == EV["cases"][3]["plaintext"]
