"""What the parts of :class:`pyclient.adapters.browser_app.BrowserApp` share, kept below all of them.

``browser_app`` combines the area mixins (``browser_integrity``, ``browser_read``, ``browser_edits``,
``browser_sync``, ``browser_audit``, ``browser_telemetry``, ...); each of them and the app's core need the
revoked-device signal, the meta keys more than one area reads, and a few small helpers (base64, the clock,
a yield to the browser). They live here so no mixin imports ``browser_app`` at run time (an import circle).
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pyclient.sync import OUTBOX_SEAL_TYPE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from pyclient import blindindex as bi
    from pyclient import keys as kh
    from pyclient.integrity_cache import ManifestCache, SeenRows
    from pyclient.sync import Effect, SyncMachine

    from .browser_integrity import _BrowserRows
    from .indexeddb_store import IndexedDBStore
    from .webcrypto import WebCrypto

OUTBOX_TYPE = OUTBOX_SEAL_TYPE  # how outbox entries are sealed (pyclient.sync, the one commit path)
M_DEVICE = "device.id"
M_FIRST_SYNC_DONE = "sync.firstDone"
# Records encoded or row-coded between two yields to the browser: a 1,000-record pull page done in one go is a
# ~100 ms main-thread task on a slow tablet (a tap waits that long); 250 keep each slice to a fraction of it.
UI_SLICE = 250


class DeviceRevoked(Exception):  # noqa: N818 - a signal, not a failure of ours
    """The server said this device is revoked: wipe now (never retried, never swallowed as 'offline')."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _now() -> float:
    return time.time()


def _iso_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _yield_to_ui() -> None:
    """Let the browser run a task (a tap, a frame) between slices of a long batch: Pyodide's event loop runs
    ``sleep(0)``'s continuation as a new browser task, not a microtask."""
    import asyncio  # noqa: PLC0415

    await asyncio.sleep(0)


class AppParts:
    """The members of :class:`~pyclient.adapters.browser_app.BrowserApp` its area mixins use across files.

    Declarations for the type checker only (nothing at run time): each is defined once, by the core or by one
    mixin, and mypy checks that definition against the signature here.
    """

    if TYPE_CHECKING:
        store: IndexedDBStore
        machine: SyncMachine | None
        _idb: Any
        _http: Callable[..., Awaitable[Any]]
        _keyring: kh.Keyring | None
        _wc: WebCrypto | None
        _index: bi.IndexKeys | None
        _ref_key: bytes | None
        _owner_key: bytes | None
        _store_key: bytes | None
        _rows: _BrowserRows
        _checks: bool
        integrity_s: float
        _held_verified: bool
        _quarantine: dict[tuple[str, str], dict[str, Any]]
        _owner_made: dict[str, str]
        _ref_memo: dict[str, str]
        _mcache: ManifestCache
        _seen: SeenRows | None

        def _emit(self, event: Mapping[str, Any]) -> None: ...
        async def _seal(self, items: Sequence[tuple[str, str, int, Mapping[str, Any]]]) -> list[bytes]: ...
        async def _open(self, items: Sequence[tuple[str, str, int, bytes]]) -> list[dict[str, Any] | None]: ...
        async def _commit(self, effects: Sequence[Effect]) -> list[Effect]: ...
        async def _post(self, path: str, body: bytes) -> tuple[int, str, str | None]: ...
        async def _audit_quietly(self, *args: Any, **kwargs: Any) -> None: ...
