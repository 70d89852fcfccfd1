"""HL7 test helpers: fixture messages, an MLLP client over real sockets, the listener as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import REPO_ROOT, LiveServerUnavailable, child_env, database_url_from_settings, free_port

FIXTURES = Path(__file__).parent / "fixtures"
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def fixture(name: str, **replace: str) -> str:
    """A message from fixtures/ with segments joined by CR (the files use newlines for readability)."""
    text = (FIXTURES / f"{name}.hl7").read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    return "\r".join(line for line in text.splitlines() if line) + "\r"


def frame(message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return VT + data + FS + CR


class Mllp:
    """A blocking MLLP client (what a lab system or an interface engine does)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: str | bytes) -> None:
        self.sock.sendall(frame(message))

    def read_ack(self) -> str:
        while FS + CR not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the listener")
            self.buf += chunk
        block, _, self.buf = self.buf.partition(FS + CR)
        assert block.startswith(VT), block[:20]
        return block[1:].decode("utf-8")

    def call(self, message: str | bytes) -> str:
        self.send(message)
        return self.read_ack()

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def msa(ack: str) -> list[str]:
    """MSA fields of an ACK: [MSA-1 code, MSA-2 control id, MSA-3 text]."""
    seg = next(s for s in ack.split("\r") if s.startswith("MSA"))
    parts = seg.split("|")
    return (parts[1:] + ["", "", ""])[:3]


def err(ack: str) -> str:
    return next((s for s in ack.split("\r") if s.startswith("ERR")), "")


def wait_for(pred: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class ListenerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_listener(settings: Any, tmp: Path, extra: dict[str, str] | None = None) -> ListenerProcess:
    try:
        url = database_url_from_settings(dict(settings.DATABASES["default"]))
    except LiveServerUnavailable as exc:
        pytest.skip(str(exc))
    env = child_env(database_url=url, extra={"CELERY_TASK_ALWAYS_EAGER": "1", **(extra or {})})
    port = free_port()
    log = tmp / f"hl7-listener-{port}.log"
    out = log.open("wb")
    proc = subprocess.Popen(  # noqa: S603 (fixed argv)
        [sys.executable, "manage.py", "hl7_listen", "--host", "127.0.0.1", "--port", str(port),
         "--idle-timeout", "20"],
        cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("listener exited:\n" + log.read_text(errors="replace"))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return ListenerProcess(proc, port, log)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("listener did not start:\n" + log.read_text(errors="replace"))


def stop_listener(lp: ListenerProcess) -> None:
    lp.proc.terminate()
    try:
        lp.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        lp.proc.kill()
        lp.proc.wait()


@pytest.fixture(scope="session")
def hl7_listener_proc(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    """One listener process for the session (eager Celery inside it: it also maps what it stores)."""
    from django.conf import settings

    lp = start_listener(settings, tmp_path_factory.mktemp("hl7"))
    try:
        yield lp
    finally:
        stop_listener(lp)


@pytest.fixture
def hl7_listener(transactional_db: None, hl7_listener_proc: ListenerProcess) -> Iterator[ListenerProcess]:
    if hl7_listener_proc.proc.poll() is not None:
        pytest.fail("listener died earlier:\n" + hl7_listener_proc.log())
    yield hl7_listener_proc
    # Let the listener finish mapping what it stored before pytest-django truncates the tables under it.
    from omnicare.hl7.models import InboundMessage

    wait_for(lambda: not InboundMessage.objects.filter(state=InboundMessage.RECEIVED).exists(), 120,
             "the listener to finish mapping")
    time.sleep(0.2)
    # A batch task can still be finishing (its commit, its hint) or a later task for rows the batch
    # already took be looking: wait until no other session of this database is inside a statement or a
    # transaction, or the TRUNCATE of the teardown deadlocks with it.
    from django.db import connection

    if connection.vendor == "postgresql":
        def idle_now() -> bool:
            with connection.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND state <> 'idle'")
                row = cur.fetchone()
            return row is not None and row[0] == 0

        def idle() -> bool:  # twice, 0.1 s apart: a queued task may start in between
            if not idle_now():
                return False
            time.sleep(0.1)
            return idle_now()

        wait_for(idle, 30, "the listener's database sessions to go idle")
    if hl7_listener_proc.proc.poll() is not None:
        pytest.fail("listener died during the test:\n" + hl7_listener_proc.log())


@pytest.fixture(autouse=True)
def eager_celery(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Celery tasks run inline in these tests (the listener and e2e tests use real processes instead)."""
    from omnicare.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = old
