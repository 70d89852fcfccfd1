"""Device telemetry (PROTOCOL.md §6): the report is built from counts and ages only, and parses strictly."""

from __future__ import annotations

import json

import pytest

from pyclient import telemetry as tm
from pyclient.protocol import ProtocolError

NOW = 1_764_000_000.0


def _report(**kw: object) -> tm.TelemetryReport:
    args: dict[str, object] = {
        "device_id": "tablet-7", "report_id": "r-1", "reason": "sync", "app_version": "abc123", "now": NOW,
        "entry_states": ["pending", "in_flight", "conflicted", "rejected"],
        "pending_since": {"e1": NOW - 7200, "e2": NOW - 60, "e3": NOW - 30},
        "last_success": NOW - 90, "storage": tm.Storage(used=5_000_000, quota=2_000_000_000, persisted=True,
                                                        records=1200),
        "counters": tm.Counters(failed_unlocks=2, interval_seconds=600, offline_seconds=120,
                                offline_ready_seconds=600),
        "kb_versions": {"pyclient": "0.1.0"},
    }
    args.update(kw)
    return tm.build_report(**args)  # type: ignore[arg-type]


def test_report_carries_counts_ages_and_versions_and_round_trips() -> None:
    r = _report()
    wire = json.loads(r.dumps())
    assert wire["outbox"] == {"pending": 2, "conflicted": 1, "rejected": 1, "oldestPendingAge": 7200.0}
    assert wire["lastSyncAge"] == 90.0
    assert wire["failedUnlocks"] == 2 and wire["storage"]["records"] == 1200
    assert tm.TelemetryReport.from_json(wire) == r
    # Only the listed fields exist on the wire: no resource ids, no names.
    assert set(wire) == {"deviceId", "reportId", "reason", "appVersion", "outbox", "lastSyncAge", "storage",
                         "failedUnlocks", "intervalSeconds", "offlineSeconds", "offlineReadySeconds", "kbVersions"}


def test_nothing_unsynced_means_no_oldest_age() -> None:
    r = _report(entry_states=["rejected"], pending_since={})
    assert r.pending == 0 and r.oldest_pending_age is None and r.rejected == 1
    assert _report(last_success=None).last_sync_age is None


@pytest.mark.parametrize("mutate", [
    lambda w: w.update(patientName="Smith"),  # anything unlisted is refused (PHI cannot ride along)
    lambda w: w["outbox"].update(pending=-1),
    lambda w: w["outbox"].update(pending=True),
    lambda w: w.update(reason="whenever"),
    lambda w: w.update(deviceId="a b"),
    lambda w: w.update(offlineSeconds=10_000.0),  # more offline time than the interval
    lambda w: w["storage"].update(persisted="yes"),
    lambda w: w.update(kbVersions={f"k{i}": "1" for i in range(tm.MAX_KB_VERSIONS + 1)}),
    lambda w: w["outbox"].update(pending=0, conflicted=0),  # an age without anything unsynced
])
def test_malformed_reports_are_refused_with_the_field(mutate: object) -> None:
    wire = _report().to_json()
    wire["outbox"] = dict(wire["outbox"])
    wire["storage"] = dict(wire["storage"])
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(ProtocolError):
        tm.TelemetryReport.from_json(wire)


def test_pending_since_keeps_first_seen_time_and_forgets_sent_entries() -> None:
    s = tm.pending_since_update({}, ["a"], NOW)
    s = tm.pending_since_update(s, ["a", "b"], NOW + 100)
    assert s == {"a": NOW, "b": NOW + 100}
    assert tm.pending_since_update(s, ["b"], NOW + 200) == {"b": NOW + 100}


def test_counters_accumulate_and_keep_what_accrued_while_a_report_was_in_flight() -> None:
    c = tm.counters_tick(tm.Counters(), elapsed=60, online=True, offline_ready=True)
    c = tm.counters_tick(c, elapsed=30, online=False, offline_ready=True, failed_unlocks=1)
    c = tm.counters_tick(c, elapsed=10_000, online=False, offline_ready=False)  # a sleeping laptop: at most 1 h
    assert c == tm.Counters(failed_unlocks=1, interval_seconds=3690, offline_seconds=3630, offline_ready_seconds=90)
    sent = _report(counters=c)
    later = tm.counters_tick(c, elapsed=5, online=True, offline_ready=True, failed_unlocks=1)
    assert tm.counters_after_sent(later, sent) == tm.Counters(failed_unlocks=1, interval_seconds=5,
                                                              offline_seconds=0, offline_ready_seconds=5)
    assert tm.Counters.from_json("garbage") == tm.Counters()
