"""A real ASGI server (uvicorn, in a subprocess) on the test database, for tests that need real sockets.

How the subprocess sees the test's data
---------------------------------------
The server is a separate process, so it can only see rows the test has *committed*: use it from
``@pytest.mark.django_db(transaction=True)`` tests (the ``live_asgi`` fixture requests
``transactional_db`` itself). The child gets ``DATABASE_URL`` rebuilt from
``settings.DATABASES["default"]`` *after* pytest-django created the test database:

* PostgreSQL: the ``test_...`` database (``OMNICARE_TEST_DB_NAME`` chooses its name so parallel
  runs on one server don't collide).
* SQLite: Django's default test database is in-memory (``file:memorydb_default?mode=memory``) and
  cannot be shared with another process. ``tests/omnicare/conftest.py`` therefore overrides
  pytest-django's ``django_db_modify_db_settings`` to give SQLite a file-based test database
  (``OMNICARE_TEST_DB_NAME`` if set, else a file in pytest's session temp dir). Both processes open
  the same file in WAL mode (see settings). If the test database is still in-memory (the override
  was not in effect for the first DB test of the session), ``live_server_start`` raises
  :class:`LiveServerUnavailable` and the fixture skips with that explanation.

Teardown order matters: the server stops before pytest-django flushes (transactional tests) or
drops (end of session) the database, so no connection of the child blocks TRUNCATE/DROP.

Logging: uvicorn runs with ``--no-access-log`` (access lines carry query strings such as
``Patient?name=...``, i.e. PHI) and Django's own logging config (no bodies, no query strings).
The captured output is printed by the fixture at teardown: pytest shows it only for failing tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parent.parent
# The server's SECRET_KEY. Sessions are signed with it, so the test process must use the same key while it
# logs users in for the server (the ``live_asgi`` fixture sets ``settings.SECRET_KEY`` to this value).
LIVE_SECRET_KEY = "test"
HEALTH_PATH = "/api/health"


class LiveServerUnavailable(RuntimeError):
    """The live server cannot run in this configuration (e.g. an in-memory SQLite test DB)."""


@dataclass
class LiveServer:
    """A running uvicorn child process. ``url`` is ``http://127.0.0.1:<port>`` (no trailing slash)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)
    _log_file: TextIO | None = field(default=None, repr=False)
    _log_mark: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """An ``Origin`` header value the server's AllowedHostsOriginValidator accepts."""
        return self.url

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark_log(self) -> None:
        """Remember the current end of the log; :meth:`log_since_mark` returns what came after."""
        self._log_mark = len(self.log())

    def log_since_mark(self) -> str:
        return self.log()[self._log_mark :]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it does not exit in ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def free_port() -> int:
    """A port that was free a moment ago (the caller retries if another process takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_from_settings(db: dict[str, Any]) -> str:
    """``DATABASE_URL`` for the database Django is connected to right now (the test DB in a test run)."""
    engine = db["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(db["NAME"])
        if name == ":memory:" or "mode=memory" in name or name.startswith("file:"):
            raise LiveServerUnavailable(
                "the SQLite test database is in-memory and cannot be shared with the live server process; "
                "set OMNICARE_TEST_DB_NAME=/abs/path/test.sqlite3 or let tests/omnicare/conftest.py "
                "(django_db_modify_db_settings) choose a file"
            )
        return "sqlite:///" + str(Path(name).resolve())
    if engine in ("django.db.backends.postgresql", "omnicare.core.postgresql"):
        user = quote(str(db.get("USER") or ""), safe="")
        password = quote(str(db.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(db.get("HOST") or "127.0.0.1")
        port = str(db.get("PORT") or "5432")
        return f"postgres://{auth}{host}:{port}/{quote(str(db['NAME']), safe='')}"
    raise LiveServerUnavailable(f"unsupported database engine for the live server: {engine}")


def child_env(*, database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: the test's DB and Redis, production-like flags, a fixed test key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OMNICARE_TEST_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "omnicare.settings",
            "DATABASE_URL": database_url,
            "OMNICARE_DEBUG": "0",
            "OMNICARE_SECRET_KEY": LIVE_SECRET_KEY,
            # DEBUG off refuses a master key derived from SECRET_KEY: a fixed test-only one (32 bytes).
            "OMNICARE_MASTER_KEY": "bGl2ZS10ZXN0LW9ubHktbWFzdGVyLWtleS0zMmJ5dGU=",
            "OMNICARE_AUDIT_CHECKPOINT_LOG": env.get("OMNICARE_AUDIT_CHECKPOINT_LOG", ""),
            "OMNICARE_SECURE": "0",  # plain http on 127.0.0.1: secure cookies would never be sent back
            "OMNICARE_LOG_LEVEL": env.get("OMNICARE_LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    # REDIS_URL and OMNICARE_CHANNEL_PREFIX pass through unchanged from os.environ (or ``extra``).
    env.update(extra or {})
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as response:  # noqa: S310 (http://127.0.0.1)
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def live_server_start(
    *,
    database: dict[str, Any],
    extra_env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    attempts: int = 3,
    workers: int = 1,
    access_log: bool = False,
) -> LiveServer:
    """Start ``uvicorn omnicare.asgi:application`` on a free 127.0.0.1 port and wait for ``/api/health``.

    ``database`` is ``settings.DATABASES["default"]`` of the calling process (after test DB setup).
    A port taken between probing and binding is retried on a new port up to ``attempts`` times;
    any other startup failure raises with the server's output. ``access_log=True`` runs uvicorn as a plain
    ``uvicorn omnicare.asgi:application`` would (its access log on, level info), for the PHI-in-logs tests.
    """
    env = child_env(database_url=database_url_from_settings(database), extra=extra_env)
    last_log = ""
    for _ in range(attempts):
        port = free_port()
        log_fd, log_name = tempfile.mkstemp(prefix="omnicare-live-", suffix=".log")
        os.close(log_fd)
        log_path = Path(log_name)
        log_file = log_path.open("w")
        cmd = [
            sys.executable, "-m", "uvicorn", "omnicare.asgi:application",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers),
            *(["--log-level", "info"] if access_log else ["--no-access-log", "--log-level", "warning"]),
            "--lifespan", "off",
        ]  # fmt: skip
        process = subprocess.Popen(  # noqa: S603 (fixed argv)
            cmd, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        server = LiveServer(process=process, port=port, log_path=log_path, env=env, _log_file=log_file)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if not server.alive():
                break
            if _healthy(server.url):
                return server
            time.sleep(0.1)
        server.stop()
        last_log = server.log()
        log_path.unlink(missing_ok=True)
        if "address already in use" in last_log.lower():
            continue  # lost the race for the port: try another one
        raise RuntimeError(f"live server did not become healthy on port {port}; output:\n{last_log}")
    raise RuntimeError(
        f"live server could not bind a port after {attempts} attempts; last output:\n{last_log}"
    )


def live_server_stop(server: LiveServer) -> None:
    """Stop the server and delete its log file."""
    server.stop()
    server.log_path.unlink(missing_ok=True)
