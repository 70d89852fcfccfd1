"""The lossy-network simulator both randomised sync tests drive: pyclient ``SyncMachine`` devices, requests and
answers dropped, duplicated and reordered, timeouts, restarts, a server restart that drops every open connection,
pushes committed whose answer is lost, skewed and jumping tablet clocks, a tablet restored from an older backup,
then the network heals and a person resolves every conflict (keeping both sides' tags).

One simulator, two servers: ``tests/pyclient/test_convergence.py`` runs it against the in-memory ``SimServer``
(thousands of seeds, also under Pyodide), ``tests/omnicare/sync/test_reliability.py`` against the real Django
app. A subclass says how a request reaches its server (:meth:`NetSim.serve`), what the server's position in its
feed is, whether it saw a tag, which conflicts it holds for a device, and what a device edits. Pure Python: no
Django here (the convergence test also runs in the browser).
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from pyclient.protocol import PullRequest, PullResponse, PushRequest, PushResponse, dumps, loads
from pyclient.store import MemoryStore
from pyclient.sync import ConflictParked, Effect, EpochChanged, JsonCodec, SyncMachine, to_store_ops

CODEC = JsonCodec()
Key = tuple[str, str]


def step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never really suspends (works in Pyodide too)."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


@dataclass
class Device:
    name: str
    machine: SyncMachine
    types: tuple[str, ...]  # the resource types it may hold (what records() lists)
    store: MemoryStore = field(default_factory=MemoryStore)
    push_out: PushRequest | None = None
    pull_out: PullRequest | None = None
    ids: int = 0
    parked: set[str] = field(default_factory=set)  # server conflict ids this device was told about
    skew: float = 0.0  # this tablet's clock minus the true time (clocks are never in step)
    backup: MemoryStore | None = None  # a copy of the store, as a device backup would hold it
    backup_clock: int = 0  # the server's feed position when the backup was taken
    restored: bool = False

    def apply(self, effects: list[Effect]) -> None:
        step(self.store.apply(to_store_ops(effects, CODEC)))
        for e in effects:
            if isinstance(e, EpochChanged):
                # The server went back in time: hand every held record to the machine, as the browser
                # adapter does (BrowserApp._epoch_recover); until then the machine waits in "collect".
                held = [(t, i, v, body) for (t, i), (v, body) in self.records().items()]
                self.apply(self.machine.recover_held(held))
            if isinstance(e, ConflictParked):
                entry = self.machine.entry(e.entry_id)
                if entry is not None and entry.conflict_id:
                    self.parked.add(entry.conflict_id)

    def new_id(self) -> str:
        self.ids += 1
        return f"{self.name}-m{self.ids}"

    def records(self) -> dict[Key, tuple[int, dict[str, Any]]]:
        out = {}
        for rtype in self.types:
            for rec in step(self.store.list_records(rtype)):
                out[(rtype, rec.id)] = (rec.version, CODEC.open(rec.blob))
        return out


class NetSim:
    """The network, the devices' clocks and the faults; the server and the edits are the subclass's."""

    #: How often a timed-out push came with a Retry-After (None: never, and no draw from the seed's stream).
    p_retry_after: float | None = None
    #: Rounds of healing before the run is declared stuck.
    quiesce_rounds = 100

    def __init__(self, seed: int, devices: list[Device]) -> None:
        self.rng = random.Random(seed)
        self.devices = devices
        self.transit: list[tuple[str, Device, Any, bytes]] = []  # kind, device, request, payload
        self.now = 0.0
        self.tags: list[tuple[Key, str, int, str]] = []  # every tag ever written: key, tag, feed position, writer
        self.local_deletes: list[tuple[Key, str, int]] = []  # key, writer, feed position
        self.p_drop = self.rng.choice((0.0, 0.1, 0.3))
        self.p_dup = self.rng.choice((0.0, 0.1, 0.3))
        self.p_lost_after_commit = self.rng.choice((0.0, 0.1, 0.3))  # server commits, answer lost
        self.draw_rates()
        self.lost_with_restore: set[tuple[Key, str]] = set()  # (key, tag) gone with a restored backup
        self.faults: Counter[str] = Counter()
        for d in self.devices:
            d.skew = self.rng.choice((0.0, 0.0, -3600.0, 5400.0)) + self.rng.uniform(-30, 30)

    # -- what a subclass says about its server
    def draw_rates(self) -> None:
        """Draw further per-seed rates from the seed's stream (before the clocks are drawn)."""

    def serve(self, kind: str, d: Device, payload: bytes) -> bytes:
        """The server's answer to a push or pull request."""
        raise NotImplementedError

    def feed_position(self) -> int:
        """The server's clock for bookkeeping: when a tag was written, a delete made, a backup taken."""
        raise NotImplementedError

    def quiesce_mark(self) -> int:
        """What changes while the server still takes writes (healing ends when a round leaves it as it was)."""
        return self.feed_position()

    def server_saw(self, key: Key, tag: str) -> bool:
        raise NotImplementedError

    def server_conflicts(self, d: Device) -> list[dict[str, Any]]:
        """``GET /api/sync/conflicts`` for the device: the conflicts the server holds for it."""
        raise NotImplementedError

    def edit(self, d: Device) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """One step of simulated time passed (before the step's action)."""

    # -- edits
    def clock_of(self, d: Device) -> float:
        return self.now + d.skew

    def create(self, d: Device, key: Key, resource: dict[str, Any], mutation_id: str) -> None:
        d.apply(d.machine.record_local_edit(now=self.clock_of(d), mutation_id=mutation_id, resource_type=key[0],
                                            id=key[1], resource=resource, base_version=None, base_resource=None))

    def edit_held(self, d: Device, key: Key, *, delete: bool) -> None:
        """Delete a held record, or add a tag (60 %) or change the shared status field of it."""
        rec = step(d.store.get_record(*key))
        version, res = rec.version, CODEC.open(rec.blob)
        base = CODEC.open(rec.base) if rec.base is not None else res
        mid = d.new_id()
        new: dict[str, Any] | None
        if delete:
            new = None
            self.local_deletes.append((key, d.name, self.feed_position()))
        else:
            new = json.loads(json.dumps(res))
            if self.rng.random() < 0.6:
                new.setdefault("x_tags", {})[mid] = True
                self.tags.append((key, mid, self.feed_position(), d.name))
            else:
                new["x_status"] = self.rng.choice(("a", "b", "c"))
        d.apply(d.machine.record_local_edit(now=self.clock_of(d), mutation_id=mid, resource_type=key[0], id=key[1],
                                            resource=new, base_version=version or None,
                                            base_resource=base if version else None))

    # -- network
    def send(self, d: Device, final: bool = False) -> None:
        if d.push_out is None:
            req = d.machine.next_push(self.clock_of(d), max_batch=3)
            if req is not None:
                d.push_out = req
                self._transmit("push", d, req, dumps(req), final)
        if d.pull_out is None:
            preq = d.machine.next_pull()
            d.pull_out = preq
            self._transmit("pull", d, preq, dumps(preq), final)

    def _transmit(self, kind: str, d: Device, req: Any, payload: bytes, final: bool) -> None:
        if not final and self.rng.random() < self.p_drop:
            return
        self.transit.append((kind, d, req, payload))
        if not final and self.rng.random() < self.p_dup:
            self.transit.append((kind, d, req, payload))

    def deliver(self, final: bool = False) -> None:
        kind, d, req, payload = self.transit.pop(0 if final else self.rng.randrange(len(self.transit)))
        if kind in ("push", "pull"):
            answer = self.serve(kind, d, payload)
            if kind == "push" and not final and self.rng.random() < self.p_lost_after_commit:
                self.faults["lost-after-commit"] += 1
                return  # committed on the server; the connection broke before the answer
            self._transmit(kind + "-resp", d, req, answer, final)
        elif kind == "push-resp":
            d.apply(d.machine.on_push_response(self.clock_of(d), req, PushResponse.from_json(loads(payload))))
            if d.push_out is req:
                d.push_out = None
        else:
            d.apply(d.machine.on_pull_response(self.clock_of(d), req, PullResponse.from_json(loads(payload))))
            if d.pull_out is req:
                d.pull_out = None

    def timeout(self, d: Device) -> None:
        if d.push_out is not None:
            retry_after = None
            if self.p_retry_after is not None and self.rng.random() < self.p_retry_after:
                retry_after = 2.0
            d.apply(d.machine.on_push_failed(self.clock_of(d), d.push_out, rng_value=self.rng.random(),
                                             retry_after=retry_after))
            d.push_out = None
        d.pull_out = None

    # -- faults
    def restart(self, d: Device) -> None:
        """The tab is closed and reopened: only what reached the store survives."""
        outbox = [CODEC.open(blob) for _id, blob in step(d.store.outbox_list())]
        meta = {"sync.cursor": step(d.store.meta_get("sync.cursor"))}
        d.machine = SyncMachine.restore(device_id=d.name, meta=meta, outbox=outbox, pull_limit=4)
        d.push_out = d.pull_out = None  # answers still in transit reach the new instance

    def server_restart(self) -> None:
        """The server process dies and comes back: every open connection is gone (requests not yet
        handled and answers not yet delivered); what it committed stays."""
        self.faults["server-restart"] += 1
        self.transit.clear()

    def clock_jump(self, d: Device) -> None:
        """The tablet's clock is corrected (NTP) — possibly backwards."""
        self.faults["clock-jump"] += 1
        d.skew += self.rng.choice((-600.0, -60.0, 45.0, 900.0))

    def take_backup(self, d: Device) -> None:
        self.faults["backup"] += 1
        d.backup, d.backup_clock = copy.deepcopy(d.store), self.feed_position()

    def restore_backup(self, d: Device) -> None:
        """The tablet is restored from an older backup of its storage, then the app starts.

        Whatever the device changed after the backup and the server never received is gone with
        it (no system can keep it); everything the server acknowledged must survive."""
        assert d.backup is not None
        self.faults["restore"] += 1
        for key, tag, clock, writer in self.tags:
            if writer == d.name and clock >= d.backup_clock and not self.server_saw(key, tag):
                self.lost_with_restore.add((key, tag))
        d.store = copy.deepcopy(d.backup)
        d.restored = True
        self.restart(d)

    # -- the run
    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.now += self.rng.random() * 3
            self.tick()
            d = self.rng.choice(self.devices)
            r = self.rng.random()
            if r < 0.35:
                self.edit(d)
            elif r < 0.6:
                self.send(d)
            elif r < 0.9 and self.transit:
                self.deliver()
            elif r < 0.94:
                self.timeout(d)
            elif r < 0.96:
                self.restart(d)
            elif r < 0.97:
                self.server_restart()
            elif r < 0.98:
                self.clock_jump(d)
            elif d.backup is None or self.rng.random() < 0.5:
                self.take_backup(d)
            else:
                self.restore_backup(d)
        self.heal()

    def human(self, d: Device) -> None:
        # The device first learns of conflicts the server holds for it but it lost (a restore).
        d.apply(d.machine.adopt_server_conflicts(self.server_conflicts(d)))
        for view in d.machine.conflicts():
            if view.local is None:
                chosen = view.server  # keep the record; a person decided
            else:
                chosen = json.loads(json.dumps(view.local))
                tags = dict((view.server or {}).get("x_tags", {}))
                tags.update(chosen.get("x_tags", {}))
                chosen["x_tags"] = tags
            d.apply(d.machine.resolve_conflict(now=self.clock_of(d), entry_id=view.entry_id, resource=chosen,
                                               mutation_id=d.new_id()))
        for e in d.machine.entries:
            if e.state == "rejected":
                d.apply(d.machine.dismiss_rejected(entry_id=e.entry_id))

    def heal(self) -> None:
        for d in self.devices:
            self.timeout(d)  # whatever is outstanding is lost
        self.transit.clear()
        for _round in range(self.quiesce_rounds):
            self.now += 1000.0  # beyond any backoff / Retry-After
            before = self.quiesce_mark()
            for d in self.devices:
                self.human(d)
                self.send(d, final=True)
                while self.transit:
                    self.deliver(final=True)
            for d in self.devices:
                d.machine.caught_up = False  # pull until the server says there is no more
                while not d.machine.caught_up:
                    self.send(d, final=True)
                    while self.transit:
                        self.deliver(final=True)
            if self.quiesce_mark() == before and all(not d.machine.entries for d in self.devices):
                return
        raise AssertionError(f"did not quiesce in {self.quiesce_rounds} rounds")
