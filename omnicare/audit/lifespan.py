"""ASGI lifespan: on a graceful server shutdown, sequence and sign what this process stored.

uvicorn re-raises SIGTERM after its graceful shutdown, so ``atexit`` never runs in a server process; the
lifespan ``shutdown`` event is the place. (``atexit`` still covers management commands; Celery workers use
``worker_shutdown``.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from . import services


async def lifespan_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    from django.db import close_old_connections

    def shutdown() -> None:
        services.checkpoint_on_shutdown()
        close_old_connections()

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await sync_to_async(shutdown, thread_sensitive=True)()
            await send({"type": "lifespan.shutdown.complete"})
            return
