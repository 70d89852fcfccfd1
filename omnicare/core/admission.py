"""Admission control for API requests: at most ``OMNICARE_MAX_CONCURRENT`` at once per process, the rest wait
in line (asyncio, no thread held) for up to ``OMNICARE_QUEUE_SECONDS``, then get 503 + ``Retry-After``.

Why: every API request runs in its own thread and needs one of the process's ``OMNICARE_DB_POOL_MAX`` pooled
connections. Without a line, 100 devices pushing at once make 100 threads fight for 8 connections, and the
pool's short checkout timeout (which is what makes a dead database a quick 503) would shed healthy load.
With the line, a request that is admitted finds a connection at once; the pool timeout only fires when the
database is really unreachable. Static files (the PWA, Pyodide) and WebSockets are not limited.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

LIMITED = ("/api/", "/fhir/", "/admin/")
HEALTH = "/api/health"  # probes answer at once, also when the line is long


class AdmissionLimit:
    def __init__(self, app: Any, *, limit: int, queue_seconds: float) -> None:
        self.app, self.limit, self.queue_seconds = app, limit, queue_seconds
        self._sem: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or self.limit <= 0 or not path.startswith(LIMITED) or path.startswith(HEALTH):
            await self.app(scope, receive, send)
            return
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._sem.acquire(), self.queue_seconds)
        except TimeoutError:
            await _busy(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._sem.release()


async def _busy(send: Any) -> None:
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "transient", "diagnostics": "The server is busy; retry later"}]}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/fhir+json"), (b"retry-after", b"2"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
