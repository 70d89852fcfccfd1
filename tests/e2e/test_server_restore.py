"""A server restored from a backup, seen from a real tablet (issue 13 item 6; PROTOCOL.md "Server epochs").

The server-side and state-machine halves are tested in tests/omnicare/sync/test_epoch.py and
tests/pyclient/test_sync_epoch.py; this is the browser runner's half, in Chromium, as an operator would do it
(docs/RUNBOOK.md §6): a tablet syncs vitals; the database is backed up (SQLite's online backup API: the bytes a
file copy would give); more vitals sync; the backup is restored over the live database and ``manage.py
new_epoch`` is run. The tablet's next sync must see the new epoch, re-pull, and give the restored server back
the vitals it lost, once, with nothing on screen but plain words.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, _ensure_assets, server_start, server_stop, shot
from .helpers import assert_no_junk, open_patient, sign_in_and_sync, wait_status, watch_junk


@pytest.fixture(scope="module")
def restorable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: this test rolls its database back in time."""
    _ensure_assets()
    srv = server_start(tmp_path_factory.mktemp("restore-server"))
    yield srv
    server_stop(srv)


def _copy(src: Path, dst: Path) -> None:
    """SQLite's online backup API, page by page under SQLite's own locks (safe while the server runs)."""
    with sqlite3.connect(src, timeout=30) as a, sqlite3.connect(dst, timeout=30) as b:
        a.backup(b)


def _vitals(page: Any, sbp: str, dbp: str) -> None:
    page.click(".head-actions >> text=Record vitals")
    page.wait_for_selector("#form-vitals")
    page.fill("#form-vitals input[name=sbp]", sbp)
    page.fill("#form-vitals input[name=dbp]", dbp)
    page.click("#form-vitals button[type=submit]")
    page.wait_for_selector("#patient-name")
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=60_000)


def _systolics(server: Server, pid: str) -> list[float]:
    obs = server.fhir(f"Observation?patient={pid}&_count=500")
    return [c["valueQuantity"]["value"] for e in obs.get("entry", []) for c in e["resource"].get("component", [])
            if "valueQuantity" in c and "8480-6" in str(c.get("code"))]


def test_a_tablet_gives_a_restored_server_back_the_vitals_it_lost(browser: Any, restorable: Server,
                                                                  tmp_path: Path) -> None:
    server = restorable
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768}, device_scale_factor=1,
                              service_workers="allow")
    ctx.set_default_timeout(60_000)
    junk: list[str] = []
    watch_junk(ctx, junk)
    try:
        page = sign_in_and_sync(ctx)
        open_patient(page, "MRN-000001")
        pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
        _vitals(page, "121", "79")
        assert 121 in _systolics(server, pid)  # (also makes the bearer token the checks below use: in the backup)
        epoch_before = page.evaluate("() => window.omnicare.py.call('status').then((s) => s.epoch ?? null)")

        backup = tmp_path / "backup.sqlite3"
        _copy(server.db_path, backup)
        _vitals(page, "143", "91")
        assert 143 in _systolics(server, pid)

        _copy(backup, server.db_path)  # the operator restores last night's backup over the live database ...
        server.manage("new_epoch", "--reason", "e2e: restored from the backup")  # ... and runs new_epoch (§6)
        assert 143 not in _systolics(server, pid)  # the restored server has lost the second set

        deadline = time.monotonic() + 90
        while 143 not in (found := _systolics(server, pid)) and time.monotonic() < deadline:
            page.click("#sync-now")  # the tablet syncs (by itself too; a click makes it sooner)
            time.sleep(3)
        assert 143 in found, found  # given back by the tablet ...
        assert found.count(143) == 1 and found.count(121) == 1, found  # ... once, and nothing doubled
        wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=60_000)
        # The tablet still holds its own reading (the chart's view model, as the screen draws it; both sets were
        # taken in the same minute, so which one "latest" shows is a tie).
        held = page.evaluate("""(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then((c) =>
            JSON.stringify(c).includes('143'))""", pid)
        assert held
        page.goto(f"/#/patient/{pid}")
        page.wait_for_selector("#vitals")
        if epoch_before is not None:
            assert page.evaluate("() => window.omnicare.py.call('status').then((s) => s.epoch ?? null)") != epoch_before
        shot(page, "restore-after-new-epoch-1024x768", full_page=False)
        assert_no_junk(page, "after the restore")
        assert not junk, junk
    finally:
        ctx.close()
