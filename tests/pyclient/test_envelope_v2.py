"""Envelope v2 (per-block HKDF keys): vectors, v1 still readable, and no (key, nonce) repeat under rollback.

Runs on CPython and in Pyodide (the AES parts need ``cryptography`` on CPython; the WebCrypto
results come from tests/pyclient/_pyodide_prelude.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient import envelope, keys
from pyclient.envelope import RecordRef

VECTORS = Path(__file__).parent / "vectors"
EV2: dict[str, Any] = json.loads((VECTORS / "envelope_v2.json").read_text(encoding="utf-8"))
EV1: dict[str, Any] = json.loads((VECTORS / "envelope_v1.json").read_text(encoding="utf-8"))


def _ring() -> keys.Keyring:
    ids = list(EV2["keys"])
    return keys.Keyring(tuple(
        keys.KeyEntry(keys.KeyKind.DATA, kid, keys.KeyStatus.ACTIVE if i == 0 else keys.KeyStatus.RETIRED,
                      bytes.fromhex(EV2["keys"][kid]))
        for i, kid in enumerate(ids)))


def _ref(c: dict[str, Any]) -> RecordRef:
    return RecordRef(c["resource_type"], c["resource_id"], int(c["version"]))


@pytest.mark.parametrize("case", EV2["cases"], ids=lambda c: c["name"])
def test_v2_vectors_header_aad_and_subkey_are_reproduced(case: dict[str, Any]) -> None:
    salt = bytes.fromhex(case["salt"])
    job = envelope.seal_plan(key_id=case["key_id"], nonce=bytes.fromhex(case["nonce"]),
                             resource_type=case["resource_type"], resource_id=case["resource_id"],
                             version=int(case["version"]), plaintext=bytes.fromhex(case["plaintext"]), salt=salt)
    assert job.aad.hex() == case["aad"]
    parsed = envelope.parse(bytes.fromhex(case["envelope"]))
    assert parsed.format_version == envelope.FORMAT_V2
    assert (parsed.salt, parsed.nonce.hex(), parsed.key_id) == (salt, case["nonce"], case["key_id"])
    assert parsed.aad_for(_ref(case)) == job.aad
    assert envelope.subkey(_ring().data_key(case["key_id"]), salt).hex() == case["subkey"]


def test_v2_subkey_is_rfc5869_hkdf_sha256() -> None:
    from pyclient.blindindex import hkdf_sha256

    dk, salt = bytes(range(32)), bytes(range(16))
    assert envelope.subkey(dk, salt) == hkdf_sha256(dk, salt=salt, info=envelope.SUBKEY_INFO)
    assert envelope.subkey(dk, None) == dk  # v1: the data key itself


def test_same_counter_under_two_salts_gives_two_different_ciphertexts() -> None:
    a, b = (c for c in EV2["cases"] if c["name"] in ("v2-short", "v2-same-counter-other-salt"))
    assert a["nonce"] == b["nonce"] and a["plaintext"] == b["plaintext"]
    assert a["subkey"] != b["subkey"]
    assert a["envelope"][-64:] != b["envelope"][-64:]  # keystream and tag differ: no reuse


def test_truncated_v2_envelope_is_malformed() -> None:
    blob = bytes.fromhex(EV2["cases"][0]["envelope"])
    with pytest.raises(envelope.MalformedEnvelope):
        envelope.parse(blob[: 4 + 12 + 16 + 12 + 15])


@pytest.fixture
def cc() -> Any:
    pytest.importorskip("cryptography")
    from pyclient.adapters import cpython_crypto

    return cpython_crypto


def test_cpython_seals_v2_vectors_exactly_and_still_opens_v1(cc: Any) -> None:
    ring = _ring()
    jobs = [envelope.seal_plan(key_id=c["key_id"], nonce=bytes.fromhex(c["nonce"]), resource_type=c["resource_type"],
                               resource_id=c["resource_id"], version=int(c["version"]),
                               plaintext=bytes.fromhex(c["plaintext"]), salt=bytes.fromhex(c["salt"]))
            for c in EV2["cases"]]
    assert [b.hex() for b in cc.seal_jobs(ring, jobs)] == [c["envelope"] for c in EV2["cases"]]
    both = [*EV2["cases"], *EV1["cases"]]
    opened = cc.open_blobs(ring, [(_ref(c), bytes.fromhex(c["envelope"])) for c in both])
    assert [o.hex() if isinstance(o, bytes) else type(o).__name__ for o in opened] == [c["plaintext"] for c in both]


def test_cpython_pipeline_writes_v2_and_a_new_block_gets_a_new_salt(cc: Any) -> None:
    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(range(32)))
    stored: list[keys.KeyState | None] = [None]

    def persist(expected: keys.KeyState, new: keys.KeyState) -> None:
        stored[0] = keys.compare_and_swap(stored[0], expected=expected, new=new)

    crypto = cc.CpythonCrypto(keyring=ring, state=keys.KeyState("dk-1", bytes(4)), persist_state=persist,
                              block_size=2)
    obs = EV1["records"]["observation"]
    blobs = crypto.seal_records([obs]) + crypto.seal_records([obs]) + crypto.seal_records([obs])
    parsed = [envelope.parse(b) for b in blobs]
    assert {p.format_version for p in parsed} == {envelope.FORMAT_V2}
    assert parsed[0].salt == parsed[1].salt != parsed[2].salt  # one block = one salt
    assert crypto.open_records([(RecordRef.of(obs), b) for b in blobs]) == [obs] * 3


# -- the rollback property ------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("seal"), st.integers(1, 40)),
    st.tuples(st.just("snapshot"), st.just(0)),
    st.tuples(st.just("rollback"), st.integers(0, 50)),  # restore an earlier snapshot of the whole store
    st.tuples(st.just("reload"), st.just(0)),  # tab closed and reopened: a new lease from the stored state
)


def _run(ops: list[tuple[str, int]], *, seed: int, use_salt: bool) -> list[tuple[bytes, bytes]]:
    """Simulate one device: the stored key state can be rolled back to any earlier snapshot at will."""
    rng = random.Random(seed)
    data_key = bytes(range(32))
    stored = keys.KeyState("dk-1", b"\x00\x00\x00\x07")
    snapshots = [stored]
    lease = keys.NonceLease(stored, block_size=16)
    used: list[tuple[bytes, bytes]] = []
    for name, arg in ops:
        if name == "seal":
            prepared = lease.prepare(arg)
            if prepared is not None:
                stored = keys.compare_and_swap(stored, expected=lease.state, new=prepared[0])
                lease.install(*prepared, salt=rng.randbytes(envelope.SALT_LEN) if use_salt else None)
            key = envelope.subkey(data_key, lease.salt)
            used += [(key, n) for n in lease.take(arg)]
        elif name == "snapshot":
            snapshots.append(stored)
        elif name == "rollback":
            stored = snapshots[arg % len(snapshots)]
            lease = keys.NonceLease(stored, block_size=16)  # the app re-reads the (rolled back) state
        else:
            lease = keys.NonceLease(stored, block_size=16)
    return used


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=40), seed=st.integers(0, 2**32))
def test_no_sequence_of_store_rollbacks_repeats_a_key_nonce_pair(ops: list[tuple[str, int]], seed: int) -> None:
    used = _run(ops, seed=seed, use_salt=True)
    assert len(set(used)) == len(used)


def test_the_rollback_model_does_reuse_nonces_without_block_salts() -> None:
    # The same attack against envelope v1 (key = data key): the property above is not vacuous.
    ops = [("snapshot", 0), ("seal", 16), ("rollback", 0), ("seal", 16)]
    v1 = _run(ops, seed=1, use_salt=False)
    assert len(set(v1)) == 16 < len(v1)
    v2 = _run(ops, seed=1, use_salt=True)
    assert len(set(v2)) == len(v2) == 32


def test_webcrypto_backend_matches_the_v2_vectors_byte_for_byte() -> None:
    mod = pytest.importorskip("_webcrypto_results", reason="only inside Pyodide (prelude runs first)")
    res = mod.results
    assert "error" not in res, res.get("error")
    assert res["v2_sealed"] == [c["envelope"] for c in EV2["cases"]]
    assert res["v2_opened"] == [c["plaintext"] for c in EV2["cases"]]
    assert res["v2_pipeline"] == [envelope.FORMAT_V2]
