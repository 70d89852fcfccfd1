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
    from pyclient import integrity as ig
    from pyclient import keys as kh
    from pyclient.integrity_cache import ManifestCache, SeenRows
    from pyclient.store import StoredRecord
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
        needs_login: bool
        revoked: bool
        _conflicts_checked: float

        # the core (browser_app)
        def _emit(self, event: Mapping[str, Any]) -> None: ...
        async def _seal(self, items: Sequence[tuple[str, str, int, Mapping[str, Any]]]) -> list[bytes]: ...
        async def _open(self, items: Sequence[tuple[str, str, int, bytes]]) -> list[dict[str, Any] | None]: ...
        async def _commit(self, effects: Sequence[Effect]) -> list[Effect]: ...
        async def _post(self, path: str, body: bytes) -> tuple[int, str, str | None]: ...
        def _require_unlocked(self) -> SyncMachine: ...
        def _require_writable(self) -> SyncMachine: ...
        async def _reload_machine(self) -> None: ...
        def status(self, signed_out: bool = False) -> dict[str, Any]: ...
        async def device_revoked(self) -> dict[str, Any]: ...
        async def first_sync_done(self) -> bool: ...
        # browser_integrity
        def _ref_token(self, patient_id: str) -> str: ...
        def _owner_refs(self, tokens: Sequence[str]) -> tuple[str, ...]: ...
        def _row_ok(self, r: StoredRecord) -> bool: ...
        async def _quarantine_records(self, patient_id: str | None, failures: Sequence[ig.Failure]) -> None: ...
        def _integrity_notice(self, patient_id: str) -> dict[str, Any] | None: ...
        async def _verified_rows(self, rows: Sequence[StoredRecord], patient_id: str | None = None
                                 ) -> list[dict[str, Any]]: ...
        # browser_audit
        async def _audit_quietly(self, *args: Any, **kwargs: Any) -> None: ...
        async def _audit_many(self, events: Sequence[tuple[str, str, str, Sequence[str]]], *,
                              outcome: str = "success", detail: Mapping[str, Any] | None = None) -> None: ...
        @staticmethod
        async def _quietly(write: Awaitable[None]) -> None: ...
        def _audit_later(self, *args: Any, **kwargs: Any) -> None: ...
        async def _audit_witness(self, offered_json: Any) -> None: ...
        # browser_telemetry
        async def _telemetry_note_edit(self, machine: SyncMachine) -> list[Effect]: ...
        # browser_chart, browser_register (issue 18 hooks)
        def _check_may(self, resource_type: str, action: str) -> None: ...
        def _chart_actions(self) -> dict[str, bool]: ...
        def rejected(self, patient_id: str | None = None) -> list[dict[str, Any]]: ...
        def _full_chart(self, patient: Mapping[str, Any], resources: list[dict[str, Any]], pending: Any,
                        ) -> dict[str, Any]: ...
        def _vitals_time(self, values: Mapping[str, Any], now: str) -> str: ...
        def _author_ref(self) -> dict[str, str]: ...
