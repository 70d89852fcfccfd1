"""Fixtures for server tests: a file-based SQLite test DB, the live ASGI server, a per-run channel prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LIVE_SECRET_KEY, LiveServer, LiveServerUnavailable, live_server_start, live_server_stop

# One prefix per test run: other runs (other engineers, CI) may share the same Redis database.
LIVE_FIXTURES = frozenset({"live_asgi", "live_asgi_server", "hl7_listener", "chatty_server"})
CHANNEL_PREFIX = os.environ.get("OMNICARE_TEST_CHANNEL_PREFIX") or f"omnicare-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    """Give SQLite a *file* test database so the live server subprocess can open it.

    Django's default SQLite test DB is in-memory and private to this process. ``OMNICARE_TEST_DB_NAME``
    (a path) wins; otherwise, when any collected test uses the live server, a file in pytest's session
    temp dir (runs without live-server tests keep the faster in-memory DB). PostgreSQL is left alone
    (settings already apply OMNICARE_TEST_DB_NAME there).
    """
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.sqlite3":
        return
    test = db.setdefault("TEST", {})
    name = test.get("NAME")
    if name and name != ":memory:" and "mode=memory" not in str(name):
        test["NAME"] = str(Path(name).resolve())
        return
    if not any(LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) for item in request.session.items):
        return
    test["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test_omnicare.sqlite3")


@pytest.fixture(scope="session")
def channel_prefix() -> str:
    """The channel-layer prefix shared by this test process and the live server (Redis isolation)."""
    return CHANNEL_PREFIX


@pytest.fixture
def redis_channel_layer(settings: Any, channel_prefix: str) -> Any:
    """Switch this test to channels-redis on REDIS_URL with this run's prefix (skips without Redis)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs REDIS_URL=redis://...")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": channel_prefix},
        }
    }
    # Changing CHANNEL_LAYERS through the settings fixture resets channels' cached backends.
    from channels.layers import get_channel_layer

    return get_channel_layer()


@pytest.fixture(scope="session")
def live_asgi_server(django_db_setup: None, channel_prefix: str) -> Iterator[LiveServer]:
    """One uvicorn process for the session, on the test database (see tests/live.py)."""
    from django.conf import settings

    try:
        server = live_server_start(
            database=dict(settings.DATABASES["default"]),
            extra_env={"OMNICARE_CHANNEL_PREFIX": channel_prefix},
        )
    except LiveServerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        live_server_stop(server)  # before pytest-django drops the test database


@pytest.fixture
def live_asgi(transactional_db: None, live_asgi_server: LiveServer, settings: Any) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:<port>``) of the live ASGI server; the test's DB writes are committed.

    Use with ``@pytest.mark.django_db(transaction=True)``. The server's output during the test is
    printed at teardown, so pytest shows it for failing tests only. This process uses the server's
    SECRET_KEY during the test, so a session made by ``Client.force_login`` is valid on the server.
    """
    settings.SECRET_KEY = LIVE_SECRET_KEY
    server = live_asgi_server
    if not server.alive():
        pytest.fail("live server died earlier in the session; output:\n" + server.log())
    server.mark_log()
    yield server.url
    output = server.log_since_mark()
    if output.strip():
        print("---- live server output during this test ----\n" + output)
    if not server.alive():
        pytest.fail("live server died during the test; output:\n" + output)


@pytest.fixture(autouse=True)
def _server_epoch_cache_per_test() -> Iterator[None]:
    """The server epoch is cached per process for a few seconds (omnicare.sync.epoch.CACHE_SECONDS): every test
    has a database of its own, so a test must never see the previous test's epoch (to a device that is a
    restored server: it re-pulls and recovers in the middle of the test)."""
    from omnicare.sync.epoch import epoch_clear_cache

    epoch_clear_cache()
    yield
    epoch_clear_cache()

