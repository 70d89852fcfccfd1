"""Store v1 -> v2 (issue 11 item 5): a device that synced with the previous client keeps working after the update.

Store v1 put the same plaintext patient token (``p:…``) on every row of a patient; v2 rows carry only sealed,
unlinkable owner tokens and a chart is read through the patient's sealed manifest (PROTOCOL.md 4.4/4.5). The
first device here is written by the previous client itself (its wheel built from git), then opened by this one:
the first unlock rewrites the store in one transaction, and every chart shows what it showed before.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import PY, REPO, Server, own_server_fixture
from .helpers import sign_in_and_sync, unlock, wait_status

#: The last commit whose client writes store v1 (plaintext ``p:`` tokens on every row).
STORE_V1_COMMIT = "16387d3"

# The database is rewritten under this module's eyes; a server of its own keeps other files' state out.
server = own_server_fixture()


def _v1_wheel(tmp: Path) -> Path:
    """The previous client's wheel, built from git (the same way ``make wheel`` builds the current one)."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", STORE_V1_COMMIT, "pyclient"],
                                 check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history without {STORE_V1_COMMIT}: cannot build the store-v1 client")
    src = tmp / "src"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    out = tmp / "wheel"
    subprocess.run([PY, "-m", "pip", "wheel", "--quiet", "--no-deps", str(src / "pyclient"), "-w", str(out)],
                   check=True, cwd=src)
    return next(out.glob("*.whl"))


def _v1_app(tmp: Path) -> Path:
    """The previous client's JS (``pwa/app``) from the same commit: the page and its Python come as one release,
    and the JS-to-Python interface changes between releases (the first-sync packing of 2026-12-02 did)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", STORE_V1_COMMIT, "pwa/app"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp / "app-src", filter="data")
    return tmp / "app-src" / "pwa" / "app"


def _serve_old_app(app: Path) -> Any:
    """A route handler serving ``/app/<file>`` from ``app`` where the previous release had that file."""
    types = {".js": "text/javascript", ".css": "text/css"}

    def handle(route: Any) -> None:
        name = route.request.url.split("/app/", 1)[1].split("?", 1)[0]
        f = (app / name).resolve()
        if not f.is_relative_to(app.resolve()) or not f.is_file():
            route.continue_()
            return
        route.fulfill(status=200, body=f.read_bytes(), headers={
            "Content-Type": types.get(f.suffix, "application/octet-stream"), "Cache-Control": "no-store"})
    return handle


def call(page: Any, name: str, **args: Any) -> Any:
    return page.evaluate("([n, a]) => window.omnicare.py.call(n, a)", [name, args])


def _dump(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => window.omnicare.makeIdb().rawDump()"))


def _charts(page: Any) -> dict[str, list[str]]:
    """What each chart shows, as the sorted ids of everything in it."""
    out = {}
    for p in call(page, "patients"):
        c = call(page, "chart", patient_id=p["id"])
        assert c["integrity"] is None
        out[p["id"]] = sorted(x["id"] for k in ("allergies", "vitals", "notes", "problems", "medications")
                              for x in c.get(k) or [] if isinstance(x, dict) and "id" in x)
    return out


def test_a_store_written_by_the_previous_client_is_upgraded_at_unlock(new_context: Any, server: Server,
                                                                     tmp_path: Path) -> None:
    old = _v1_wheel(tmp_path)
    current = json.loads((REPO / "pwa" / "wheels" / "wheels.json").read_text())["pyclient"]
    assert old.name == current, "the route below serves the v1 wheel under the current wheel's name"
    ctx = new_context()
    ctx.route(f"**/wheels/{current}", lambda route: route.fulfill(
        status=200, body=old.read_bytes(), headers={"Content-Type": "application/zip", "Cache-Control": "no-store"}))
    ctx.route("**/app/**", _serve_old_app(_v1_app(tmp_path)))
    # No service worker for the previous client: the server's is this release's (it precaches this release's
    # file list, not the old one's), and its install never finished under the routes above, so Chromium held the
    # unregister below for its five-minute event timeout (the test took 307 s, 295 of them there). The store is
    # what this test is about; the new client registers its worker as usual after the update.
    ctx.route("**/sw.js", lambda route: route.fulfill(status=404, body="", headers={"Cache-Control": "no-store"}))
    page = sign_in_and_sync(ctx, "dr.adams", cache=False)
    wait_status(page, "d.synced === 'true'")
    before = _charts(page)
    v1 = _dump(page)
    patient_rows = [r for r in v1["records"] if r["t"] != "StoreManifest"]
    assert patient_rows and all(any(t.startswith("p:") for t in r["tok"]) for r in patient_rows if r["t"] == "Patient")
    assert next(m["v"] for m in v1["meta"] if m["k"] == "integrity.v") == "1"

    # The update: the new client (and a service worker that no longer holds the old one), same IndexedDB.
    ctx.unroute(f"**/wheels/{current}")
    ctx.unroute("**/app/**")
    ctx.unroute("**/sw.js")
    page.evaluate("""async () => {
        for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
        for (const k of await caches.keys()) await caches.delete(k); }""")
    page.goto("/")
    unlock(page)
    page.wait_for_selector("#patients li", timeout=120_000)

    v2 = _dump(page)
    assert next(m["v"] for m in v2["meta"] if m["k"] == "integrity.v") == "2"
    tokens = [t for r in v2["records"] for t in r["tok"]]
    assert not [t for t in tokens if t.startswith("p:")]  # no row carries a patient token any more
    had_ref = {(r["t"], r["i"]) for r in v1["records"] if any(t.startswith("p:") for t in r["tok"])}
    moved = [r for r in v2["records"] if (r["t"], r["i"]) in had_ref and r["t"] != "StoreManifest"]
    assert moved and all(sum(t.startswith("o:") for t in r["tok"]) == 1 for r in moved)
    owners = [t for t in tokens if t.startswith("o:")]
    assert len(owners) == len(set(owners))  # one patient's rows carry unrelated owner tokens
    manifests = [r for r in v2["records"] if r["t"] == "StoreManifest" and r["i"].startswith("p:")]
    assert manifests and all(r["tok"] == [] and r["v"] == 0 for r in manifests)
    # sealed manifest plaintexts are padded to powers of two (>= 512 bytes): header 32 + key id, GCM tag 16
    sizes = page.evaluate("""async () => (await window.omnicare.makeIdb().rawDump()).records
        .filter((r) => r.t === 'StoreManifest' && r.i.startsWith('p:')).map((r) => r.blob.length - 48 - r.blob[3])""")
    assert sizes and all(n >= 512 and n & (n - 1) == 0 for n in sizes), sizes
    # every chart shows exactly what it showed before, verified
    assert _charts(page) == before
    assert call(page, "status")["unverified"] == 0
    # and the device keeps syncing and writing
    pid = next(iter(before))
    call(page, "add_note", patient_id=pid, title="After the update", text="Still here.")
    call(page, "sync_once")
    wait_status(page, "d.synced === 'true' && d.pending === '0'")
    assert len(_charts(page)[pid]) == len(before[pid]) + 1
    shutil.rmtree(tmp_path / "src", ignore_errors=True)
