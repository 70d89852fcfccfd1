"""Device telemetry: the health report a device sends with its syncs and every few minutes (sans-IO).

The report says how the *device* is doing — app version, outbox depth and the age of its oldest
unsynced change, rejected and conflicted counts, storage, last successful sync, time offline, failed
PIN unlocks, the knowledge-base versions it holds — and nothing about patients: no resource ids, no
names, no clinical values. PROTOCOL.md §6 describes the wire shape; this module is the only code that
builds or parses it, on the device (through the browser adapter) and on the server.

Nothing here reads a clock, storage or the network: the adapter hands in ``now`` (Unix seconds), the
outbox entries, the storage estimate, the counters it persisted, and sends what :func:`build_report`
returns. :class:`Counters` are accumulated between reports and reset only after the server accepted
the report (``reportId`` makes a re-sent report harmless).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from pyclient.protocol import DEVICE_ID_RE, ProtocolError

__all__ = [
    "MAX_KB_VERSIONS",
    "REASONS",
    "REPORT_EVERY_SECONDS",
    "Counters",
    "Storage",
    "TelemetryReport",
    "build_report",
    "counters_after_sent",
    "counters_tick",
    "pending_since_update",
]

#: While online, a device reports at least this often (and after every sync round).
REPORT_EVERY_SECONDS: Final = 300.0
#: At most this many knowledge-base entries (name -> version) per report.
MAX_KB_VERSIONS: Final = 32
#: Why the report was sent.
REASONS: Final = ("sync", "timer", "start")
#: Upper bounds that keep a report small and reject nonsense (100 years of seconds, 1 PB, 1e9 entries).
MAX_SECONDS: Final = 100 * 365 * 86400.0
MAX_BYTES: Final = 10**15
MAX_COUNT: Final = 10**9

_ID_RE = DEVICE_ID_RE  # device and report ids: the protocol's one rule
#: A knowledge-base or app version name: the id characters and '/' (the ops API's schema uses it too).
NAME_CHARSET: Final = "A-Za-z0-9._:/-"
NAME_CHARS: Final = rf"[{NAME_CHARSET}]{{1,64}}"
_NAME_RE = re.compile(rf"^{NAME_CHARS}\Z")

Reason = Literal["sync", "timer", "start"]


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where}: expected a JSON object")
    return cast(Mapping[str, Any], value)


def _ident(value: Any, where: str, pattern: re.Pattern[str] = _ID_RE) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ProtocolError(f"{where}: expected 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def _count(value: Any, where: str, maximum: int = MAX_COUNT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ProtocolError(f"{where}: expected an integer 0..{maximum}")
    return value


def _seconds(value: Any, where: str, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_SECONDS:
        raise ProtocolError(f"{where}: expected seconds 0..{MAX_SECONDS:.0f}" + (" or null" if nullable else ""))
    return float(value)


@dataclass(frozen=True)
class Storage:
    """``navigator.storage.estimate()`` and ``persisted()``; ``None`` where the browser does not say."""

    used: int | None = None
    quota: int | None = None
    persisted: bool | None = None
    records: int | None = None  # encrypted records held (count only)
    indexed_db: int | None = None  # bytes in IndexedDB (the encrypted records, outbox, indexes), if known

    def to_json(self) -> dict[str, Any]:
        return {"used": self.used, "quota": self.quota, "persisted": self.persisted, "records": self.records,
                "indexedDb": self.indexed_db}

    @classmethod
    def from_json(cls, raw: Any, where: str = "storage") -> Storage:
        obj = _obj(raw, where)
        unknown = set(obj) - {"used", "quota", "persisted", "records", "indexedDb"}
        if unknown:
            raise ProtocolError(f"{where}.{sorted(unknown)[0]}: unknown field")

        def opt(key: str, maximum: int) -> int | None:
            v = obj.get(key)
            return None if v is None else _count(v, f"{where}.{key}", maximum)

        persisted = obj.get("persisted")
        if persisted is not None and not isinstance(persisted, bool):
            raise ProtocolError(f"{where}.persisted: expected true, false or null")
        return cls(used=opt("used", MAX_BYTES), quota=opt("quota", MAX_BYTES), persisted=persisted,
                   records=opt("records", MAX_COUNT), indexed_db=opt("indexedDb", MAX_BYTES))


@dataclass(frozen=True)
class Counters:
    """What accumulates on the device between two accepted reports (persisted by the adapter)."""

    failed_unlocks: int = 0
    interval_seconds: float = 0.0  # device time covered since the last accepted report (app open)
    offline_seconds: float = 0.0  # of which the network was down
    offline_ready_seconds: float = 0.0  # of which the app would work offline (shell cached, data synced once)

    def to_json(self) -> dict[str, Any]:
        return {"failedUnlocks": self.failed_unlocks, "intervalSeconds": self.interval_seconds,
                "offlineSeconds": self.offline_seconds, "offlineReadySeconds": self.offline_ready_seconds}

    @classmethod
    def from_json(cls, raw: Any) -> Counters:
        """Lenient: a damaged stored value starts the counters again rather than blocking reports."""
        try:
            obj = _obj(raw, "counters")
            return cls(failed_unlocks=_count(obj.get("failedUnlocks", 0), "failedUnlocks"),
                       interval_seconds=_seconds(obj.get("intervalSeconds", 0.0), "intervalSeconds") or 0.0,
                       offline_seconds=_seconds(obj.get("offlineSeconds", 0.0), "offlineSeconds") or 0.0,
                       offline_ready_seconds=_seconds(obj.get("offlineReadySeconds", 0.0),
                                                      "offlineReadySeconds") or 0.0)
        except ProtocolError:
            return cls()


def counters_tick(c: Counters, *, elapsed: float, online: bool, offline_ready: bool,
                  failed_unlocks: int = 0) -> Counters:
    """Add ``elapsed`` seconds of app time (clamped to 0..1 h: a sleeping laptop is not app time)."""
    e = min(max(float(elapsed), 0.0), 3600.0)
    return Counters(
        failed_unlocks=min(MAX_COUNT, c.failed_unlocks + max(0, failed_unlocks)),
        interval_seconds=min(MAX_SECONDS, c.interval_seconds + e),
        offline_seconds=min(MAX_SECONDS, c.offline_seconds + (0.0 if online else e)),
        offline_ready_seconds=min(MAX_SECONDS, c.offline_ready_seconds + (e if offline_ready else 0.0)),
    )


def counters_after_sent(current: Counters, sent: TelemetryReport) -> Counters:
    """The counters once ``sent`` was accepted: what accrued while it was in flight is kept."""
    return Counters(
        failed_unlocks=max(0, current.failed_unlocks - sent.failed_unlocks),
        interval_seconds=max(0.0, current.interval_seconds - sent.interval_seconds),
        offline_seconds=max(0.0, current.offline_seconds - sent.offline_seconds),
        offline_ready_seconds=max(0.0, current.offline_ready_seconds - sent.offline_ready_seconds),
    )


def pending_since_update(previous: Mapping[str, float], entry_ids: Iterable[str], now: float) -> dict[str, float]:
    """When each unsynced (pending or conflicted) outbox entry was first seen: new ids get ``now``, sent ids are forgotten.

    The map holds outbox entry ids (random UUIDs, never resource ids) and stays on the device; only the
    age of the oldest entry is reported.
    """
    return {eid: float(previous.get(eid, now)) for eid in entry_ids}


@dataclass(frozen=True)
class TelemetryReport:
    """One report, exactly the wire object of PROTOCOL.md §6 (camelCase in ``to_json``)."""

    device_id: str
    report_id: str
    reason: Reason
    app_version: str
    pending: int
    conflicted: int
    rejected: int
    oldest_pending_age: float | None
    last_sync_age: float | None
    storage: Storage = field(default_factory=Storage)
    failed_unlocks: int = 0
    interval_seconds: float = 0.0
    offline_seconds: float = 0.0
    offline_ready_seconds: float = 0.0
    kb_versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id, "reportId": self.report_id, "reason": self.reason,
            "appVersion": self.app_version,
            "outbox": {"pending": self.pending, "conflicted": self.conflicted, "rejected": self.rejected,
                       "oldestPendingAge": self.oldest_pending_age},
            "lastSyncAge": self.last_sync_age,
            "storage": self.storage.to_json(),
            "failedUnlocks": self.failed_unlocks,
            "intervalSeconds": self.interval_seconds,
            "offlineSeconds": self.offline_seconds,
            "offlineReadySeconds": self.offline_ready_seconds,
            "kbVersions": dict(self.kb_versions),
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: Any) -> TelemetryReport:
        obj = _obj(raw, "report")
        allowed = {"deviceId", "reportId", "reason", "appVersion", "outbox", "lastSyncAge", "storage",
                   "failedUnlocks", "intervalSeconds", "offlineSeconds", "offlineReadySeconds", "kbVersions"}
        unknown = set(obj) - allowed
        if unknown:  # a report carries only what is listed: nothing else (PHI included) can ride along
            raise ProtocolError(f"report.{sorted(unknown)[0]}: unknown field")
        reason = obj.get("reason")
        if reason not in REASONS:
            raise ProtocolError(f"report.reason: one of {', '.join(REASONS)}")
        outbox = _obj(obj.get("outbox"), "report.outbox")
        if set(outbox) - {"pending", "conflicted", "rejected", "oldestPendingAge"}:
            raise ProtocolError("report.outbox: unknown field")
        kb = _obj(obj.get("kbVersions", {}), "report.kbVersions")
        if len(kb) > MAX_KB_VERSIONS:
            raise ProtocolError(f"report.kbVersions: at most {MAX_KB_VERSIONS} entries")
        kb_versions = {_ident(k, "report.kbVersions", _NAME_RE): _ident(v, f"report.kbVersions.{k}", _NAME_RE)
                       for k, v in kb.items()}
        pending = _count(outbox.get("pending"), "report.outbox.pending")
        interval = _seconds(obj.get("intervalSeconds", 0.0), "report.intervalSeconds") or 0.0
        offline = _seconds(obj.get("offlineSeconds", 0.0), "report.offlineSeconds") or 0.0
        ready = _seconds(obj.get("offlineReadySeconds", 0.0), "report.offlineReadySeconds") or 0.0
        if offline > interval or ready > interval:
            raise ProtocolError("report.intervalSeconds: offlineSeconds and offlineReadySeconds cannot exceed it")
        report = cls(
            device_id=_ident(obj.get("deviceId"), "report.deviceId"),
            report_id=_ident(obj.get("reportId"), "report.reportId"),
            reason=cast(Reason, reason),
            app_version=_ident(obj.get("appVersion"), "report.appVersion", _NAME_RE),
            pending=pending,
            conflicted=_count(outbox.get("conflicted"), "report.outbox.conflicted"),
            rejected=_count(outbox.get("rejected"), "report.outbox.rejected"),
            oldest_pending_age=_seconds(outbox.get("oldestPendingAge"), "report.outbox.oldestPendingAge",
                                        nullable=True),
            last_sync_age=_seconds(obj.get("lastSyncAge"), "report.lastSyncAge", nullable=True),
            storage=Storage.from_json(obj.get("storage", {}), "report.storage"),
            failed_unlocks=_count(obj.get("failedUnlocks", 0), "report.failedUnlocks"),
            interval_seconds=interval, offline_seconds=offline, offline_ready_seconds=ready,
            kb_versions=kb_versions,
        )
        if pending + report.conflicted == 0 and report.oldest_pending_age is not None:
            raise ProtocolError("report.outbox.oldestPendingAge: must be null when nothing is unsynced")
        return report


def build_report(
    *,
    device_id: str,
    report_id: str,
    reason: Reason,
    app_version: str,
    now: float,
    entry_states: Iterable[str],
    pending_since: Mapping[str, float],
    last_success: float | None,
    storage: Storage,
    counters: Counters,
    kb_versions: Mapping[str, str] | None = None,
) -> TelemetryReport:
    """The report for this moment. ``entry_states`` are the outbox entries' states
    (pending / in_flight / conflicted / rejected); ``pending_since`` comes from :func:`pending_since_update`
    over the unsynced (pending, in flight or conflicted) entries.

    Ages are computed here, on the device's clock, so a device whose clock is wrong still reports
    correct durations (the server never compares device timestamps with its own).
    """
    states = list(entry_states)
    pending = sum(s in ("pending", "in_flight") for s in states)
    unsynced = pending + states.count("conflicted")
    oldest = min(pending_since.values(), default=None) if unsynced else None
    kb = {str(k)[:64]: str(v)[:64] for k, v in sorted((kb_versions or {}).items())[:MAX_KB_VERSIONS]}
    report = TelemetryReport(
        device_id=device_id, report_id=report_id, reason=reason, app_version=app_version[:64] or "unknown",
        pending=pending, conflicted=states.count("conflicted"), rejected=states.count("rejected"),
        oldest_pending_age=None if oldest is None else max(0.0, round(now - oldest, 3)),
        last_sync_age=None if last_success is None else max(0.0, round(now - last_success, 3)),
        storage=storage, failed_unlocks=counters.failed_unlocks,
        interval_seconds=round(counters.interval_seconds, 3), offline_seconds=round(counters.offline_seconds, 3),
        offline_ready_seconds=round(counters.offline_ready_seconds, 3), kb_versions=kb,
    )
    return TelemetryReport.from_json(report.to_json())  # what we send always parses on the other side
