"""The browser app's nonce reservation (``pyclient.adapters.webcrypto``: ``WebCrypto.reserve`` over
``IdbKeyState``, the loop in ``pyclient.keys.lease_nonces``), on CPython with a fake IndexedDB (no browser needed).

``idb.metaCas`` is modelled exactly as pwa/app/idb.js implements it: compare and write with no await in
between (one readwrite transaction). Two "tabs" share the store; inside each tab many coroutines reserve at
once (saves and background audit writes). Every nonce handed out must be unique.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
from typing import Any

import pytest

from pyclient import keys as kh
from pyclient.adapters import webcrypto as wc

KEY = "keys.state.dk-test"


def _run(coro: Any) -> Any:
    """asyncio.run in a thread of its own: Playwright's sync API may own this thread's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class FakeIdb:
    def __init__(self, raw: str) -> None:
        self.meta = {KEY: raw}
        self.swaps = 0

    async def metaCas(self, k: str, expected: str | None, new: str) -> list[Any]:  # noqa: N802 - JS name
        await asyncio.sleep(0)  # the transaction starts later: other coroutines run meanwhile
        stored = self.meta.get(k)
        if stored != expected:
            return [False, stored]
        self.meta[k] = new
        self.swaps += 1
        await asyncio.sleep(0)  # ... and commits later
        return [True, None]


def _tab(idb: FakeIdb) -> wc.WebCrypto:
    """One tab's unlocked session as ``BrowserApp._install`` makes it, minus the CryptoKeys (no Pyodide here:
    reserving nonces needs none)."""
    raw = idb.meta[KEY]
    ring = kh.new_keyring(data_key_id="dk-test", data_key=bytes(32))
    lease = kh.NonceLease(kh.KeyState.from_dict(json.loads(raw)), block_size=8)
    return wc.WebCrypto(None, ring, None, lease, wc.IdbKeyState(idb, raw))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_concurrent_reservations_in_two_tabs_never_share_a_nonce(seed: int) -> None:
    rng = random.Random(seed)
    state = kh.KeyState(key_id="dk-test", nonce_prefix=b"\x01\x02\x03\x04")
    idb = FakeIdb(json.dumps(state.to_dict()))
    tabs = [_tab(idb), _tab(idb)]  # both loaded the same counter

    async def run() -> list[bytes]:
        jobs = [tabs[rng.randrange(2)].reserve(rng.randrange(1, 12)) for _ in range(60)]
        # Envelope v2: a reservation is (block salt, nonces); the counters alone must still never repeat.
        return [n for _salt, batch in await asyncio.gather(*jobs) for n in batch]

    nonces = _run(run())
    assert len(nonces) == len(set(nonces))
    stored = kh.KeyState.from_dict(json.loads(idb.meta[KEY]))
    used = max(int.from_bytes(n[4:], "big") for n in nonces)
    assert stored.next_counter > used  # the stored counter is past every nonce handed out


def test_a_lost_key_state_refuses_to_seal() -> None:
    state = kh.KeyState(key_id="dk-test", nonce_prefix=b"\x01\x02\x03\x04", next_counter=64)
    idb = FakeIdb(json.dumps(state.to_dict()))
    tab = _tab(idb)
    del idb.meta[KEY]  # e.g. cleared storage: reusing counters from 0 would reuse nonces
    with pytest.raises(ValueError, match="rotate"):
        _run(tab.reserve(1))
