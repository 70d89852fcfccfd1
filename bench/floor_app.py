"""The floor for ``bench/scale_bench.py``: the least an ASGI app can do per request on the same stack.

Same uvicorn, same PostgreSQL database, a psycopg connection pool of the same size as the app's
(``OMNICARE_DB_POOL_MAX``, default 8): ``GET /floor/read/<pk>`` is one primary-key SELECT of a stored FHIR
resource body, ``POST /floor/create`` one JSONB INSERT of the request body. No framework, no auth, no audit,
no validation: what is left is uvicorn, the pool and PostgreSQL. The app's figures are compared with these.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

_pool: AsyncConnectionPool | None = None
_lock = asyncio.Lock()


def _conninfo() -> str:
    url = os.environ["DATABASE_URL"]
    return url.replace("postgres://", "postgresql://", 1)


# The one table both floors insert into (bench/django_floor.py imports this): the same DDL, so the two measure
# the same statement.
FLOOR_TABLE_DDL = "CREATE TABLE IF NOT EXISTS scale_floor (id bigserial PRIMARY KEY, body jsonb)"


async def _get_pool() -> AsyncConnectionPool:
    global _pool
    async with _lock:
        if _pool is None:
            pool = AsyncConnectionPool(
                _conninfo(), min_size=2, max_size=int(os.environ.get("OMNICARE_DB_POOL_MAX", "8")), open=False
            )
            await pool.open()
            async with pool.connection() as conn:
                await conn.execute(FLOOR_TABLE_DDL)
            _pool = pool
    return _pool


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    pool = await _get_pool()
    if path.startswith("/floor/read/"):
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT body FROM fhir_resource WHERE id = %s", (int(path.rsplit("/", 1)[1]),))
            row = await cur.fetchone()
        await _send(send, 200 if row else 404, json.dumps(row[0] if row else {}).encode())
    elif path == "/floor/create" and scope["method"] == "POST":
        body = json.loads(await _body(receive))
        async with pool.connection() as conn:
            cur = await conn.execute("INSERT INTO scale_floor (body) VALUES (%s) RETURNING id", (Jsonb(body),))
            row = await cur.fetchone()
        await _send(send, 201, json.dumps({"id": row[0] if row else None}).encode())
    elif path == "/health":
        await _send(send, 200, b'{"status":"ok"}')
    else:
        await _send(send, 404, b"{}")
