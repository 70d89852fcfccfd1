"""The MLLP listener: asyncio, many connections, ACK only after the durable write.

Framing is MLLP (``<VT> message <FS><CR>``) read with python-hl7's ``hl7.mllp`` stream classes
(``start_hl7_server``; the reader's ``limit`` bounds one message). Each connection has a reader task
that reads frames as they come (pipelining: a sender may send several before the first ACK) and a writer
that sends the ACKs in order. Accepted messages from all connections go to ONE store task that writes
them in batches (one transaction per batch: a group commit) in a dedicated database thread; each ACK is
released when its batch committed. Then the stored ids are handed to Celery.

Bad input never stops the listener: a frame that is not HL7 (or not acceptable) gets AR/AE with ERR and
the connection goes on; bytes that are not MLLP framing at all, an oversized frame or a silent connection
close that connection only. A storage failure answers AE (the sender retries later), never AA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hl7.mllp import start_hl7_server

from .message import MessageError, ack_bytes
from .services import inbound_accept, inbound_enqueue, inbound_store
from .tasks import retry_due

log = logging.getLogger("omnicare.hl7.listener")

START, END = b"\x0b", b"\x1c\x0d"


@dataclass
class Stats:
    connections: int = 0
    open_connections: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    closed_for_garbage: int = 0
    batches: int = 0


@dataclass
class _Pending:
    accepted: Any
    future: asyncio.Future[Any]


@dataclass
class Listener:
    host: str = "127.0.0.1"
    port: int = 2575
    max_bytes: int = 16 * 1024 * 1024
    idle_timeout: float = 300.0
    batch_max: int = 256
    #: when messages keep coming, the hand-off waits this long to gather stored ids into one task: a Celery
    #: send cost ~1 ms of CPU, more than storing a message, and the worker's batch picks up rows stored
    #: after its task was queued anyway. A message after a quiet spell is handed off at once.
    hand_off_gather: float = 0.02
    #: called (in the DB thread) with the ids of newly stored messages after their ACKs were queued
    on_stored: Callable[[list[int]], None] | None = None
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Pending] | None = None
        self._server: asyncio.Server | None = None
        self._store_task: asyncio.Task[None] | None = None
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-db")
        self._hand_off = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-enqueue")
        # Stored ids waiting for the hand-off thread: while one enqueue is in flight the next ones gather,
        # so a busy listener sends one task per group instead of a broker round trip per message.
        self._handoff_ids: list[int] = []
        self._handoff_busy = False
        self._handoff_lock = threading.Lock()
        self._handoff_last = 0.0

    async def start(self) -> int:
        self._queue = asyncio.Queue()
        self._store_task = asyncio.create_task(self._store_loop())
        self._server = await start_hl7_server(self._connection, self.host, self.port, limit=self.max_bytes)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self._store_task is not None:
            self._store_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_task
        self._db.shutdown(wait=True)
        self._hand_off.shutdown(wait=True)

    # --- the store: one task, batches across all connections --------------------------------------------

    async def _store_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                stored = await loop.run_in_executor(self._db, _store_batch, [p.accepted for p in batch])
            except Exception:
                log.exception("hl7: storing %d message(s) failed; answering AE", len(batch))
                for p in batch:
                    err = MessageError("Temporarily unable to store the message; send it again", code="207")
                    if not p.future.done():
                        p.future.set_result((ack_bytes(p.accepted.parsed, "AE", error=err), None))
                continue
            self.stats.batches += 1
            new_ids: list[int] = []
            for p, s in zip(batch, stored, strict=True):
                if s.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.accepted += 1
                    new_ids.append(s.id)
                if not p.future.done():
                    p.future.set_result((s.ack, s.id))
            if new_ids and self.on_stored is not None:
                with self._handoff_lock:
                    self._handoff_ids += new_ids
                    start = not self._handoff_busy
                    self._handoff_busy = True
                if start:
                    loop.run_in_executor(self._hand_off, self._hand_off_pending)

    def _hand_off_pending(self) -> None:
        """(hand-off thread) Give every id stored so far to ``on_stored``, until none is left."""
        assert self.on_stored is not None
        while True:
            if time.monotonic() - self._handoff_last < 2 * self.hand_off_gather:
                time.sleep(self.hand_off_gather)  # after the ACKs: this delays the mapping, never an ACK
            with self._handoff_lock:
                ids, self._handoff_ids = self._handoff_ids, []
                if not ids:
                    self._handoff_busy = False
                    return
            self._handoff_last = time.monotonic()
            try:
                self.on_stored(ids)
            except Exception:  # never lost: stored rows the sweeper finds still received are re-sent
                log.warning("hl7: hand-off of %d stored message(s) failed", len(ids), exc_info=True)

    # --- one connection ---------------------------------------------------------------------------------

    async def _connection(self, reader: Any, writer: Any) -> None:
        self.stats.connections += 1
        self.stats.open_connections += 1
        acks: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue(maxsize=64)
        sender = asyncio.create_task(self._send_acks(writer, acks))
        try:
            await self._read_frames(reader, acks)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                acks.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 30)
            sender.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            self.stats.open_connections -= 1

    async def _read_frames(self, reader: Any, acks: asyncio.Queue[asyncio.Future[Any] | None]) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            try:
                block = await asyncio.wait_for(reader.readuntil(END), self.idle_timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    log.info("hl7: connection closed in the middle of a frame")
                return
            except asyncio.LimitOverrunError:
                log.warning("hl7: frame larger than %d bytes; closing the connection", self.max_bytes)
                self.stats.closed_for_garbage += 1
                return
            except (TimeoutError, ConnectionError):
                return
            start = block.rfind(START)
            if start < 0 or block[:start].strip(b"\r\n\t \x00"):
                # Not MLLP: we cannot know where the next message starts; close rather than guess.
                log.warning("hl7: bytes outside MLLP framing; closing the connection")
                self.stats.closed_for_garbage += 1
                return
            raw = block[start + 1 : -len(END)]
            # Parsing is CPU only: inline for ordinary messages, off the loop for big ones.
            result = _accept(raw) if len(raw) < 65536 else await loop.run_in_executor(None, _accept, raw)
            fut: asyncio.Future[Any] = loop.create_future()
            if isinstance(result, tuple):
                self.stats.rejected += 1
                fut.set_result((result[0], None))
            else:
                await self._queue.put(_Pending(result, fut))
            await acks.put(fut)

    async def _send_acks(self, writer: Any, acks: asyncio.Queue[asyncio.Future[Any] | None]) -> None:
        while True:
            fut = await acks.get()
            if fut is None:
                return
            ack, _ = await fut
            try:
                writer.writeblock(ack)
                await writer.drain()
            except (ConnectionError, RuntimeError):
                return  # the sender went away before its ACK: it will resend, and the repeat is re-ACKed


def _accept(raw: bytes) -> Any:
    return inbound_accept(raw=raw)


def _store_batch(items: list[Any]) -> list[Any]:
    """(DB thread) Store one batch. The thread keeps its connection between batches: opening one (or
    taking one from the pool) per batch cost more than the INSERT itself; a failed batch drops it, and
    the next batch opens a fresh one (so a restarted PostgreSQL costs one AE, not a stuck listener)."""
    from django.db import connection

    try:
        return inbound_store(items=items)
    except Exception:
        connection.close()
        raise


def run(*, host: str, port: int, ready: Callable[[int], None] | None = None, **options: Any) -> None:
    """Run the listener until interrupted (the management command)."""
    async def main() -> None:
        listener = Listener(host=host, port=port, on_stored=lambda ids: inbound_enqueue(message_ids=ids),
                            **options)
        bound = await listener.start()
        if ready is not None:
            ready(bound)
        sweeper = asyncio.create_task(_sweep(listener)) if _eager() else None
        try:
            await listener.serve_forever()
        finally:
            if sweeper is not None:
                sweeper.cancel()
            await listener.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _eager() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False))


async def _sweep(listener: Listener, every: float = 15.0) -> None:
    """Without a broker there is no Celery beat: the listener itself retries what is due (embedded default)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        try:
            await loop.run_in_executor(listener._hand_off, retry_due)
        except Exception:
            log.warning("hl7: retry sweep failed", exc_info=True)
