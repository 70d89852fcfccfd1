"""Admission control: API requests beyond the per-process limit wait in line, and get 503 + Retry-After only
after the queue timeout; static files and health probes are never held back."""

from __future__ import annotations

import asyncio
from typing import Any

from omnicare.core.admission import AdmissionLimit


async def _call(app: Any, path: str) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app({"type": "http", "path": path, "method": "GET"}, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"])



def _run(coro: Any) -> Any:
    """asyncio.run in a thread of its own: an earlier test (Playwright's sync API) may leave an event loop
    running in the main thread, where asyncio.run refuses to start."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()

def test_requests_beyond_the_limit_wait_then_get_503() -> None:
    release = asyncio.Event()
    running = 0
    peak = 0

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if scope["path"] == "/api/slow":
            await release.wait()
        running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = AdmissionLimit(inner, limit=2, queue_seconds=0.3)

    async def scenario() -> None:
        slow = [asyncio.create_task(_call(app, "/api/slow")) for _ in range(2)]
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(_call(app, "/fhir/R4/Patient"))  # in line behind the two slow ones
        status, headers = await _call(app, "/api/sync/pull")  # waits 0.3 s, then gives up
        assert status == 503 and headers[b"retry-after"] == b"2"
        assert (await _call(app, "/api/health/ready"))[0] == 200  # probes skip the line
        assert (await _call(app, "/vendor/pyodide/pyodide.mjs"))[0] == 200  # static files too
        release.set()
        assert [s for s, _ in await asyncio.gather(*slow)] == [200, 200]
        await waiting

    _run(scenario())
    assert peak <= 4  # 2 admitted API requests + the probe + the static file, never the queued ones


def test_a_request_in_line_is_admitted_when_a_slot_frees() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = AdmissionLimit(inner, limit=1, queue_seconds=5)

    async def scenario() -> list[int]:
        return [s for s, _ in await asyncio.gather(*(_call(app, "/api/x") for _ in range(5)))]

    assert _run(scenario()) == [200] * 5
