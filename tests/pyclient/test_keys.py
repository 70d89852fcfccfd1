"""Key hierarchy: keyring blob, PIN unlock, nonce budget, rotation planning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyclient import keys
from pyclient.keys import KeyKind, KeyState, KeyStatus

KV: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "keyring_v1.json").read_text(encoding="utf-8")
)


def vector_ring() -> keys.Keyring:
    return keys.Keyring(
        tuple(
            keys.KeyEntry(KeyKind(e["kind"]), e["key_id"], KeyStatus(e["status"]), bytes.fromhex(e["key"]))
            for e in KV["entries"]
        )
    )


# -- keyring blob format (pure) ---------------------------------------------------------------


def test_vector_blob_parses_to_the_recorded_parameters() -> None:
    parsed = keys.parse_keyring(bytes.fromhex(KV["blob"]))
    assert parsed.params.iterations == KV["iterations"] >= 600_000
    assert parsed.params.salt.hex() == KV["salt"]
    assert [(int(w.kind), w.key_id, int(w.status)) for w in parsed.entries] == [
        (e["kind"], e["key_id"], e["status"]) for e in KV["entries"]
    ]
    assert [w.nonce.hex() for w in parsed.entries] == KV["nonces"]


def test_weak_kdf_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="600000"):
        keys.KdfParams(salt=bytes(16), iterations=100_000)
    with pytest.raises(ValueError):
        keys.KdfParams(salt=bytes(8))
    blob = bytearray.fromhex(KV["blob"])
    blob[4:8] = (1000).to_bytes(4, "big")  # an attacker lowering the iteration count
    with pytest.raises(keys.MalformedKeyring):
        keys.parse_keyring(bytes(blob))


@pytest.mark.parametrize("cut", [0, 3, 10, 30, -1])
def test_truncated_blobs_are_malformed(cut: int) -> None:
    with pytest.raises(keys.MalformedKeyring):
        keys.parse_keyring(bytes.fromhex(KV["blob"])[:cut])


def test_all_entries_failing_is_a_wrong_pin_and_some_failing_is_tampering() -> None:
    parsed = keys.parse_keyring(bytes.fromhex(KV["blob"]))
    with pytest.raises(keys.WrongPin):
        keys.keyring_from_unwrapped(parsed, [None, None])
    with pytest.raises(keys.MalformedKeyring, match="tampered"):
        keys.keyring_from_unwrapped(parsed, [bytes(32), None])


def test_pin_is_normalised_so_composed_and_decomposed_input_unlock_alike() -> None:
    assert keys.pin_bytes("Stra\u00dfe-\u00e9") == keys.pin_bytes("Stra\u00dfe-e\u0301")
    with pytest.raises(ValueError):
        keys.pin_bytes("")


def test_keyring_has_exactly_one_active_data_key_and_rotation_retires_the_old_one() -> None:
    ring = keys.new_keyring(
        data_key_id="dk-1", data_key=bytes(32), index_key_id="bi-1", index_root_key=bytes(32)
    )
    rotated = ring.rotated(new_key_id="dk-2", new_key=bytes(range(32)))
    assert rotated.active_data.key_id == "dk-2"
    assert rotated.data_key_ids() == ["dk-2", "dk-1"]
    assert rotated.data_key("dk-1") == bytes(32)
    assert rotated.index_root == bytes(32)
    with pytest.raises(ValueError, match="active"):
        rotated.without(["dk-2"])
    with pytest.raises(ValueError, match="duplicate"):
        ring.rotated(new_key_id="dk-1", new_key=bytes(32))
    assert "key=" not in repr(ring.entries[0])  # key bytes never end up in logs


# -- nonces -------------------------------------------------------------------------------


def test_reserved_blocks_never_overlap_and_nonces_are_prefix_plus_counter() -> None:
    state = KeyState("dk-1", b"\xaa\xbb\xcc\xdd")
    seen: set[bytes] = set()
    for n in (1, 5, 1024, 3):
        state, block = keys.reserve_nonces(state, n)
        nonces = list(block.nonces())
        assert len(nonces) == n
        assert all(x[:4] == b"\xaa\xbb\xcc\xdd" and len(x) == 12 for x in nonces)
        assert not seen & set(nonces)
        seen.update(nonces)
    assert state.next_counter == 1033


def test_budget_is_enforced_and_rotate_soon_fires_first() -> None:
    state = KeyState("dk-1", bytes(4))
    assert state.budget == 2**32 and state.rotate_after == 2**31
    near = KeyState("dk-1", bytes(4), next_counter=2**31 - 1)
    assert not near.rotate_soon
    after, _ = keys.reserve_nonces(near, 1)
    assert after.rotate_soon
    full = KeyState("dk-1", bytes(4), next_counter=2**32 - 2)
    full, _ = keys.reserve_nonces(full, 2)
    with pytest.raises(keys.NonceBudgetExhausted):
        keys.reserve_nonces(full, 1)


def test_lease_hands_out_at_most_what_was_reserved() -> None:
    lease = keys.NonceLease(KeyState("dk-1", bytes(4)), block_size=10)
    with pytest.raises(RuntimeError, match="reserved"):
        lease.take(1)
    pending = lease.prepare(3)
    assert pending is not None and pending[0].next_counter == 10
    lease.install(*pending)
    assert lease.prepare(7) is None
    assert len(set(lease.take(3) + lease.take(7))) == 10
    big = lease.prepare(25)
    assert big is not None and big[0].next_counter == 35


def test_lease_near_the_budget_reserves_only_what_is_left() -> None:
    lease = keys.NonceLease(
        KeyState("dk-1", bytes(4), next_counter=95, budget=100, rotate_after=50), block_size=10
    )
    pending = lease.prepare(2)
    assert pending is not None and pending[0].next_counter == 100


def test_compare_and_swap_detects_a_concurrent_reservation() -> None:
    start = KeyState("dk-1", bytes(4))
    mine, _ = keys.reserve_nonces(start, 10)
    theirs, _ = keys.reserve_nonces(start, 10)
    stored = keys.compare_and_swap(start, expected=start, new=theirs)
    with pytest.raises(keys.StaleKeyState) as exc:
        keys.compare_and_swap(stored, expected=start, new=mine)
    assert exc.value.current == theirs
    lease = keys.NonceLease(start, block_size=10)
    lease.adopt(exc.value.current)
    pending = lease.prepare(1)
    assert pending is not None and pending[1].start == 10  # continues after the other tab's block
    with pytest.raises(ValueError, match="backwards"):
        lease.adopt(start)


def test_a_holder_that_keeps_losing_the_compare_and_swap_gives_up_and_hands_out_nothing() -> None:
    stored = [KeyState("dk-1", bytes(4))]

    async def always_beaten(expected: KeyState, new: KeyState) -> None:
        stored[0], _ = keys.reserve_nonces(stored[0], 10)  # another tab reserved a block just before us
        raise keys.StaleKeyState(stored[0])

    lease = keys.NonceLease(stored[0], block_size=10)
    with pytest.raises(keys.NonceReservationFailed):
        keys.run_sync(keys.lease_nonces(lease, 1, persist=always_beaten, new_salt=None))
    assert stored[0].next_counter == 10 * keys.MAX_CAS_RETRIES
    with pytest.raises(RuntimeError, match="reserved"):
        lease.take(1)  # no block was installed: nothing can be sealed with a nonce another tab owns

    async def cas(expected: KeyState, new: KeyState) -> None:  # the other tab stopped: the next try wins
        stored[0] = keys.compare_and_swap(stored[0], expected=expected, new=new)

    salt, nonces = keys.run_sync(keys.lease_nonces(lease, 3, persist=cas, new_salt=lambda: bytes(16)))
    assert salt == bytes(16) and [int.from_bytes(n[4:], "big") for n in nonces] == [80, 81, 82]


def test_key_state_survives_a_json_roundtrip() -> None:
    state = KeyState("dk-1", b"\x01\x02\x03\x04", next_counter=77, budget=1000, rotate_after=500)
    assert KeyState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# -- rotation --------------------------------------------------------------------------------


def test_rotation_due_by_age_or_by_usage() -> None:
    fresh = KeyState("dk-1", bytes(4))
    day = 86_400.0
    assert keys.rotation_due(key_created_at=0, now=89 * day, state=fresh) is None
    assert "90 days" in (keys.rotation_due(key_created_at=0, now=90 * day, state=fresh) or "")
    used = KeyState("dk-1", bytes(4), next_counter=2**31)
    assert "invocations" in (keys.rotation_due(key_created_at=0, now=1, state=used) or "")


def _walk(records: list[tuple[str, str]], batch: int, target: str) -> tuple[list[list[str]], int]:
    cursor: str | None = None
    batches: list[list[str]] = []
    steps = 0
    while True:
        steps += 1
        plan = keys.plan_reencryption_batch(
            (r for r in records if cursor is None or r[0] > cursor),
            cursor=cursor,
            batch_size=batch,
            target_key_id=target,
        )
        if plan.to_reencrypt:
            batches.append(plan.to_reencrypt)
        cursor = plan.next_cursor
        if plan.done:
            return batches, steps


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.sampled_from(["old", "new"])), unique_by=lambda r: r[0]
    ),
    st.integers(min_value=1, max_value=7),
)
def test_reencryption_planner_visits_every_old_record_exactly_once(
    records: list[tuple[str, str]], batch: int
) -> None:
    records.sort()
    batches, _ = _walk(records, batch, "new")
    planned = [k for b in batches for k in b]
    assert planned == [k for k, kid in records if kid == "old"]
    assert all(len(b) <= batch for b in batches)


def test_reencryption_resumes_from_the_cursor_after_a_crash() -> None:
    records = [(f"Patient/{i:03d}", "old") for i in range(10)]
    first = keys.plan_reencryption_batch(iter(records), cursor=None, batch_size=4, target_key_id="new")
    assert first.to_reencrypt == [f"Patient/{i:03d}" for i in range(4)] and not first.done
    # the app crashed after persisting first.next_cursor; it resumes with the full store iterator
    second = keys.plan_reencryption_batch(
        iter(records), cursor=first.next_cursor, batch_size=4, target_key_id="new"
    )
    assert second.to_reencrypt == [f"Patient/{i:03d}" for i in range(4, 8)]
    third = keys.plan_reencryption_batch(
        iter(records), cursor=second.next_cursor, batch_size=4, target_key_id="new"
    )
    assert third.to_reencrypt == ["Patient/008", "Patient/009"] and third.done


# -- CPython backend: real PBKDF2 (600,000 iterations) -------------------------------------


@pytest.fixture
def cc() -> Any:
    pytest.importorskip("cryptography")
    from pyclient.adapters import cpython_crypto

    return cpython_crypto


def test_cpython_backend_reproduces_the_keyring_vector_and_unlocks_it(cc: Any) -> None:
    params = keys.KdfParams(salt=bytes.fromhex(KV["salt"]), iterations=KV["iterations"])
    assert cc.derive_kek(KV["pin"], params).hex() == KV["kek"]
    blob = cc.wrap_keyring(
        pin=KV["pin"],
        keyring=vector_ring(),
        salt=params.salt,
        nonces=[bytes.fromhex(n) for n in KV["nonces"]],
    )
    assert blob.hex() == KV["blob"]
    unlocked = cc.unlock_keyring(pin=KV["pin"], blob=blob)
    assert unlocked == vector_ring()
    assert unlocked.index_root is not None


def test_wrong_pin_raises_wrong_pin_never_garbage(cc: Any) -> None:
    with pytest.raises(keys.WrongPin):
        cc.unlock_keyring(pin=KV["wrong_pin"], blob=bytes.fromhex(KV["blob"]))


def test_a_tampered_entry_is_detected(cc: Any) -> None:
    blob = bytearray.fromhex(KV["blob"])
    blob[-1] ^= 0x01  # last byte of the second entry's tag
    with pytest.raises(keys.MalformedKeyring, match="tampered"):
        cc.unlock_keyring(pin=KV["pin"], blob=bytes(blob))


def test_an_empty_pin_is_a_wrong_pin(cc: Any) -> None:
    with pytest.raises(keys.WrongPin):
        cc.unlock_keyring(pin="", blob=bytes.fromhex(KV["blob"]))


def test_fresh_random_keyring_roundtrip(cc: Any) -> None:
    key, state = cc.new_data_key(key_id="dk-x")
    ring = keys.new_keyring(data_key_id="dk-x", data_key=key, index_root_key=cc.system_random(32))
    blob = cc.wrap_keyring_random(pin="2468", keyring=ring)
    assert cc.unlock_keyring(pin="2468", blob=blob) == ring
    assert state.next_counter == 0 and len(state.nonce_prefix) == 4
