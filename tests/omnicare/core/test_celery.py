"""Celery: eager mode (the embedded default) and a real worker on the Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnicare.celery import app
from omnicare.core.tasks import ping
from tests.conftest import requires_redis
from tests.live import REPO_ROOT


def test_eager_mode_runs_the_task_inline_and_returns_its_result() -> None:
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        result = ping.delay(41)
        assert result.get(timeout=1) == 42
        assert result.successful()
    finally:
        app.conf.task_always_eager = previous


def test_without_redis_the_settings_choose_eager_mode() -> None:
    from django.conf import settings

    if os.environ.get("REDIS_URL"):
        assert settings.CELERY_TASK_ALWAYS_EAGER is False
        assert settings.CELERY_BROKER_URL == os.environ["REDIS_URL"]
    else:
        assert settings.CELERY_TASK_ALWAYS_EAGER is True
        assert settings.CELERY_BROKER_URL == "memory://"


@pytest.fixture
def celery_worker_queue(tmp_path: Path) -> Iterator[str]:
    """A real ``celery worker`` subprocess consuming a queue no other worker listens on."""
    queue = f"omnicare-test-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "worker.log"
    env = dict(os.environ)
    env.update(
        {"OMNICARE_SECRET_KEY": "test", "OMNICARE_DEBUG": "0", "DJANGO_SETTINGS_MODULE": "omnicare.settings",
         "OMNICARE_MASTER_KEY": "dGVzdC1vbmx5LW1hc3Rlci1rZXktMzItYnl0ZXMtb2s="}
    )
    with log_path.open("w") as log:
        worker = subprocess.Popen(  # noqa: S603 (fixed argv)
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "omnicare",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "-Q",
                queue,
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{queue}@%h",
            ],  # fmt: skip
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while "ready." not in log_path.read_text(errors="replace"):
                if worker.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("celery worker did not start:\n" + log_path.read_text(errors="replace"))
                time.sleep(0.2)
            yield queue
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=15)
            print("---- celery worker output ----\n" + log_path.read_text(errors="replace"))


@requires_redis
@pytest.mark.redis
def test_a_real_worker_on_the_redis_broker_runs_the_task_and_returns_the_result(
    celery_worker_queue: str,
) -> None:
    assert app.conf.task_always_eager is False
    result = app.send_task("omnicare.core.ping", args=[41], queue=celery_worker_queue)
    assert result.get(timeout=30) == 42
    assert result.successful()
    # Several round trips: the worker keeps consuming, results don't get crossed.
    results = [app.send_task("omnicare.core.ping", args=[n], queue=celery_worker_queue) for n in range(5)]
    assert [r.get(timeout=30) for r in results] == [1, 2, 3, 4, 5]
