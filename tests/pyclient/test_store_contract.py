"""Run the store contract against every backend available here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from pyclient.store import MemoryStore, Store

from .store_contract import CHECKS


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a store coroutine to completion without an event loop (asyncio.run does
    not work inside Pyodide). CPython stores never suspend; if one does, fail loudly."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("store coroutine suspended")


def memory_store() -> Store:
    return MemoryStore()


def sqlite_store() -> Store:
    pytest.importorskip("sqlite3")
    from pyclient.adapters.sqlite_store import SqliteStore  # noqa: PLC0415 - only when sqlite3 exists

    return SqliteStore(":memory:")


@pytest.mark.parametrize("make", [memory_store, sqlite_store], ids=["memory", "sqlite"])
@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_store_contract(make: Callable[[], Store], check: Callable[[Any], Awaitable[None]]) -> None:
    store = make()
    assert isinstance(store, Store)
    drive(check(store))  # type: ignore[arg-type]


def test_sqlite_store_survives_reopen(tmp_path: Any) -> None:
    pytest.importorskip("sqlite3")
    from pyclient.adapters.sqlite_store import SqliteStore  # noqa: PLC0415
    from pyclient.store import PutMeta, PutOutbox

    path = str(tmp_path / "local.db")
    first = SqliteStore(path)
    drive(first.apply([PutOutbox("m1", b"entry"), PutMeta("sync.cursor", "c3")]))
    first.close()
    again = SqliteStore(path)
    assert drive(again.outbox_list()) == [("m1", b"entry")]
    assert drive(again.meta_get("sync.cursor")) == "c3"
    again.close()


def test_drive_refuses_a_coroutine_that_really_suspends() -> None:
    class Later:
        def __await__(self) -> Any:
            yield "suspend"

    async def waits() -> None:
        await Later()

    with pytest.raises(RuntimeError):
        drive(waits())
