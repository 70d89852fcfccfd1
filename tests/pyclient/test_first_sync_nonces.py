"""A first sync reserves nonces in large blocks (issue 16 item 6).

Each reservation is a durable IndexedDB transaction on "meta" (the key state's compare-and-swap) that waits
behind the pull page being written; with 1,024-nonce blocks a first sync of ~10,000 records (1,000 a page plus
the page's patient manifests) made about two a page.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Coroutine
from typing import Any

import pytest

if sys.platform == "emscripten":  # the WebCrypto adapter's Pyodide side is covered by the browser tests
    pytest.skip("CPython only: the adapter's JS half is faked here", allow_module_level=True)

if "pyodide" not in sys.modules:  # CPython: webcrypto only needs to_js to import
    try:
        import pyodide.ffi  # noqa: F401
    except ImportError:
        ffi = types.ModuleType("pyodide.ffi")
        ffi.to_js = lambda value, **_kw: value  # type: ignore[attr-defined]
        sys.modules["pyodide"] = types.ModuleType("pyodide")
        sys.modules["pyodide.ffi"] = ffi

from pyclient import keys as kh  # noqa: E402
from pyclient.adapters.browser_sync import FIRST_SYNC_NONCE_BLOCK  # noqa: E402
from pyclient.adapters.webcrypto import WebCrypto  # noqa: E402


def _reservations(block: int | None) -> tuple[int, set[bytes]]:
    """Durable key-state writes, and the nonces handed out, for 10 pages of 1,000 records + 60 manifests."""
    writes: list[kh.KeyState] = []

    async def persist(expected: kh.KeyState, new: kh.KeyState) -> None:
        writes.append(new)

    wc = WebCrypto(None, None, None, kh.NonceLease(kh.KeyState("dk-1", bytes(4))), persist)  # type: ignore[arg-type]
    if block is not None:
        wc.nonce_block(block)
    seen: set[bytes] = set()

    async def sync() -> None:
        for _page in range(10):
            for n in (1000, 60):
                _salt, nonces = await wc.reserve(n)
                seen.update(nonces)

    _drive(sync())
    return len(writes), seen


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run the reservations to completion without an event loop: in the whole suite Playwright's loop is already
    running on this thread, so ``asyncio.run`` refuses. Nothing here really suspends (the persist fake returns at
    once); if something does, fail loudly."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("a reservation suspended")


def test_a_first_sync_writes_the_key_state_twice_not_twice_a_page() -> None:
    default, _ = _reservations(None)
    first, nonces = _reservations(FIRST_SYNC_NONCE_BLOCK)
    assert default >= 15  # 1,024 at a time: ~2 a page
    assert first <= 2
    assert len(nonces) == 10 * 1060  # every nonce distinct, none skipped within the sync's use
