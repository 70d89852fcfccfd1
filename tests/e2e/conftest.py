"""End-to-end fixtures: one seeded OmniCare server (uvicorn on a temp SQLite file) and Debian Chromium.

The server is shared by the whole session (seeding and Pyodide are the slow parts); every test gets
fresh browser contexts (their own IndexedDB, cache storage and service worker), so tests do not see
each other's devices. Screenshots go to tests/e2e/screenshots/ (gitignored).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = os.environ.get("OMNICARE_CHROMIUM", "/usr/bin/chromium")
PATIENTS = int(os.environ.get("OMNICARE_E2E_PATIENTS", "12"))
USERS = {"dr.adams": "stethoscope-maple-42", "nurse.baker": "vitals-harbor-1729", "dr.chen": "cardio-lantern-314"}
PIN = "482916"

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_assets() -> None:
    """The runtime must be in pwa/vendor and the wheel must be built from the current pyclient sources."""
    vendor = REPO / "pwa" / "vendor" / "pyodide" / "pyodide.asm.wasm"
    if not vendor.exists():
        pytest.skip("Pyodide runtime missing: run `make deps` (copies it to pwa/vendor/pyodide)")
    wheels = REPO / "pwa" / "wheels"
    sources = [p for p in (REPO / "pyclient").rglob("*") if p.is_file() and "build" not in p.parts
               and ".egg-info" not in str(p) and "__pycache__" not in p.parts]
    newest = max(p.stat().st_mtime for p in sources)
    built = list(wheels.glob("*.whl"))
    if built and (wheels / "wheels.json").exists() and min(p.stat().st_mtime for p in built) >= newest:
        return
    tmp = REPO / ".cache" / "e2e-wheel"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subprocess.run([PY, "-m", "pip", "wheel", "--quiet", "--no-deps", str(REPO / "pyclient"), "-w", str(tmp)],
                   check=True, cwd=REPO)
    shutil.rmtree(REPO / "pyclient" / "build", ignore_errors=True)
    for egg in (REPO / "pyclient").glob("*.egg-info"):
        shutil.rmtree(egg, ignore_errors=True)
    wheels.mkdir(parents=True, exist_ok=True)
    whl = next(tmp.glob("*.whl"))
    shutil.copy2(whl, wheels / whl.name)
    (wheels / "wheels.json").write_text(json.dumps({"pyclient": whl.name}) + "\n")


@dataclass
class Server:
    url: str
    db_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def fhir(self, path: str, *, user: str = "dr.adams") -> Any:
        """GET a FHIR resource/search as ``user`` (HTTP Basic is not offered: use a bearer token)."""
        token = self.token(user)
        req = urllib.request.Request(self.url + "/fhir/R4/" + path.lstrip("/"),
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())

    def api(self, method: str, path: str, data: Any = None, *, user: str = "dr.adams",
            device: str = "") -> tuple[int, Any]:
        """Call /api/... as ``user`` with a bearer token; returns (status, JSON body) without raising.

        A token belongs to one device once it syncs: ``device`` picks a token of its own for each tablet."""
        import urllib.error  # noqa: PLC0415

        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={
            "Authorization": f"Bearer {self.token(user, device)}", "Accept": "application/json",
            "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def manage(self, *args: str) -> str:
        """Run a management command against the e2e database; returns its stdout."""
        return subprocess.run([PY, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              check=True).stdout

    _tokens: dict[str, str] | None = None

    def token(self, user: str, device: str = "") -> str:
        if self._tokens is None:
            self._tokens = {}
        key = f"{user}\0{device}"
        if key not in self._tokens:
            out = subprocess.run([PY, "manage.py", "create_api_token", user], cwd=REPO, env=self.env,
                                 capture_output=True, text=True, check=True).stdout
            tok = next(w for w in out.split() if w.startswith("oc_"))
            self._tokens[key] = tok
        return self._tokens[key]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_start(tmp: Path, extra_env: dict[str, str] | None = None) -> Server:
    """Migrate and seed a fresh SQLite database in ``tmp`` and start uvicorn on it (``extra_env`` on top)."""
    db = tmp / "omnicare.sqlite3"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    drop = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({
        "DATABASE_URL": f"sqlite:///{db}",
        "OMNICARE_DEBUG": "1",
        "OMNICARE_SECRET_KEY": "e2e-" + base64.b16encode(os.urandom(8)).decode(),
        "OMNICARE_CSRF_TRUSTED_ORIGINS": url,
        "OMNICARE_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "OMNICARE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    })
    for cmd in (["migrate", "--noinput"], ["seed_demo", "--patients", str(PATIENTS), "--seed", "7"],
                ["create_demo_users"]):
        subprocess.run([PY, "manage.py", *cmd], cwd=REPO, env=env, check=True, capture_output=True)
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([PY, "-m", "uvicorn", "omnicare.asgi:application", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-access-log"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("server did not start:\n" + log_path.read_text(errors="replace")) from None
            time.sleep(0.2)
    return Server(url=url, db_path=db, env=env, process=proc, log_path=log_path)


def server_stop(srv: Server) -> None:
    srv.process.terminate()
    try:
        srv.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _ensure_assets()
    srv = server_start(tmp_path_factory.mktemp("e2e-server"))
    yield srv
    server_stop(srv)


def own_server_fixture() -> Any:
    """A module-scoped ``server`` fixture: a server of the test module's own, for modules whose state (grants,
    roles, a tampered device, a full disk, orders on the shared patients) must not leak into other files' tests
    or be met from them. Bind it in the module as ``server = own_server_fixture()``."""

    @pytest.fixture(scope="module", name="server")
    def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        _ensure_assets()
        srv = server_start(tmp_path_factory.mktemp("own-server"))
        yield srv
        server_stop(srv)

    return _server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def new_context(browser: Any, server: Server) -> Iterator[Any]:
    """Factory for isolated browser contexts (one per simulated tablet).

    Every screen any test shows is watched for junk text ("null", JSON, stack text: issue 18 item 8); the test
    fails at teardown if one appeared, even for a moment."""
    from .helpers import JUNK, watch_junk  # noqa: PLC0415 (helpers imports this module)

    made: list[Any] = []
    junk: list[str] = []

    def make() -> Any:
        ctx = browser.new_context(base_url=server.url, viewport={"width": 1180, "height": 820},
                                  device_scale_factor=1, service_workers="allow")
        ctx.set_default_timeout(60_000)
        watch_junk(ctx, junk)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        for page in ctx.pages:  # the screen on display at the end, and any finding still on its way
            try:
                page.evaluate("() => window.__omnicareJunkCheck?.()")
                page.wait_for_timeout(50)
            except Exception:  # noqa: BLE001 (a page the test left crashed or closing: nothing more to read)
                pass
        ctx.close()
    assert not junk, f"text that is not plain words appeared on screen ({JUNK}):\n" + "\n".join(dict.fromkeys(junk))


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
