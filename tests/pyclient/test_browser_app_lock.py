"""A call cut short by the lock says so, not "Something went wrong" (issue 13: the 9,090-patient list).

A first sync of 200,000 resources outlasts the 5-minute idle lock. The lock waits at most 15 s for running
calls (``py.js`` ``settled``), then clears the keys; the sync and a patient list still running then failed on
the missing keys, and the list answered with the generic "Something went wrong" message.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import types
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

# These tests need a call that really suspends while the lock runs, so an event loop of their own: each runs
# in a fresh loop on its own thread (the suite's other tests may leave a loop running on the main thread, e.g.
# Playwright's). Pyodide's test runner drives coroutines without a loop and has no threads: CPython only there.
if sys.platform == "emscripten":
    pytest.skip("needs an event loop that suspends and a thread to run it", allow_module_level=True)


def _in_fresh_loop[T](make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(make())`` on a new thread, whatever loop the calling thread has running."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            out["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the call did not finish in 60 s"
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]

if "pyodide" not in sys.modules:  # CPython: BrowserApp only needs to_js to build; the fakes below are Python
    try:
        import pyodide.ffi  # noqa: F401
    except ImportError:
        ffi = types.ModuleType("pyodide.ffi")
        ffi.to_js = lambda value, **_kw: value  # type: ignore[attr-defined]
        sys.modules["pyodide"] = types.ModuleType("pyodide")
        sys.modules["pyodide.ffi"] = ffi

from pyclient.adapters.browser_app import UNEXPECTED, BrowserApp  # noqa: E402
from pyclient.sync import SyncMachine  # noqa: E402


class SlowIdb:
    """IndexedDB that answers the patient list only when ``gate`` opens (a large list, a loaded device)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()

    async def listIds(self, resource_type: str) -> list[str]:  # noqa: N802 - idb.js's name
        self.asked.set()
        await self.gate.wait()
        return ["p1"]

    async def getRecords(self, keys: list[list[str]]) -> list[list[Any]]:  # noqa: N802 - idb.js's name
        return [["Patient", "p1", 1, b"\x01" * 48, None, [], "mac"]]


def _unlocked(idb: SlowIdb) -> BrowserApp:
    app = BrowserApp(idb=idb, crypto=None, http=None)
    app.machine = SyncMachine.restore(device_id="d1", meta={}, outbox=[])
    app._keyring = object()  # type: ignore[assignment]  # unlocked: the list itself never gets to the keys here
    return app


async def _list_while(lock: bool) -> dict[str, Any]:
    idb = SlowIdb()
    app = _unlocked(idb)
    call = asyncio.ensure_future(app.call("patients"))
    await idb.asked.wait()  # the list is reading IndexedDB
    if lock:
        app.lock()  # the idle lock fired meanwhile: the keys leave memory
    idb.gate.set()
    return dict(json.loads(await call)["error"])


def test_a_patient_list_cut_short_by_the_idle_lock_says_the_app_locked() -> None:
    err = _in_fresh_loop(lambda: _list_while(lock=True))
    assert err["kind"] == "locked"
    assert "locked before this finished" in err["message"] and "PIN" in err["message"]
    assert err["message"] != UNEXPECTED


def test_a_real_fault_without_a_lock_still_gets_the_generic_words() -> None:
    err = _in_fresh_loop(lambda: _list_while(lock=False))  # no crypto here: a genuine failure of the call
    assert err == {"kind": "bug", "message": UNEXPECTED}
