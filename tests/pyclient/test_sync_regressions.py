"""Lost-edit regressions found by the convergence simulation, each as the smallest story that shows it.

Every test here failed before its fix and names the seeds of ``test_convergence.py``
that found it. The devices are real :class:`SyncMachine` instances over a real
:class:`MemoryStore`; the server is the simulator, which decides pushes with the
same pyclient decision table the Django server uses.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pyclient.protocol import Mutation, PushRequest, PushResponse, dumps, loads
from pyclient.store import MemoryStore
from pyclient.sync import JsonCodec, SyncMachine, to_store_ops

from .netsim import step
from .simserver import SimServer

CODEC = JsonCodec()
PATIENT = ("Patient", "p1")


class Tablet:
    """One clinician's device: a machine and the store it persists to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.store = MemoryStore()
        self.machine = SyncMachine(device_id=name)
        self.n = 0

    def apply(self, effects: list[Any]) -> None:
        step(self.store.apply(to_store_ops(effects, CODEC)))

    def chart(self) -> tuple[int, dict[str, Any]]:
        rec = step(self.store.get_record(*PATIENT))
        assert rec is not None
        return rec.version, CODEC.open(rec.blob)

    def add_note(self, note: str) -> str:
        """The clinician adds one line to the patient's notes (an element with identity)."""
        version, current = self.chart()
        rec = step(self.store.get_record(*PATIENT))
        base = CODEC.open(rec.base) if rec.base is not None else current
        new = json.loads(json.dumps(current))
        new.setdefault("x_tags", {})[note] = True
        self.n += 1
        mid = f"{self.name}-{self.n}"
        self.apply(
            self.machine.record_local_edit(
                now=0.0,
                mutation_id=mid,
                resource_type=PATIENT[0],
                id=PATIENT[1],
                resource=new,
                base_version=version or None,
                base_resource=base if version else None,
            )
        )
        return mid

    def pull_all(self, server: SimServer) -> None:
        self.machine.caught_up = False
        while not self.machine.caught_up:
            req = self.machine.next_pull()
            self.apply(self.machine.on_pull_response(0.0, req, server.pull(req)))

    def send(self) -> PushRequest:
        req = self.machine.next_push(0.0, max_batch=1)
        assert req is not None
        return req

    def receive(self, req: PushRequest, resp: PushResponse) -> None:
        self.apply(self.machine.on_push_response(0.0, req, PushResponse.from_json(loads(dumps(resp)))))

    def restart(self) -> None:
        """The tab is closed and reopened: the machine is rebuilt from what the store holds."""
        outbox = [CODEC.open(blob) for _id, blob in step(self.store.outbox_list())]
        meta = {"sync.cursor": step(self.store.meta_get("sync.cursor"))}
        self.machine = SyncMachine.restore(device_id=self.name, meta=meta, outbox=outbox)

    def sync_until_quiet(self, server: SimServer) -> None:
        for _ in range(10):
            req = self.machine.next_push(0.0)
            if req is None:
                break
            self.receive(req, server.push(req))
        self.pull_all(server)


def test_an_edit_queued_behind_two_restored_edits_keeps_a_colleagues_change() -> None:
    """Seeds 3146, 4495, 4685, 5664, 6704, 6925, 7124, 7513, 8726 (all nine of the report).

    Tablet A adds a note line while its first push is on the wire, then the tab is
    closed and reopened, then A adds a third line. Meanwhile tablet B's line reaches
    the server first. A's first push is merged with B's line, A's second is rebased on
    that; A's third edit was still based on A's second edit *as it was before the
    rebase*, so its three-way merge read B's line as "removed on A" and deleted it.
    """
    server = SimServer()
    server.write(PATIENT, {"x_tags": {}})
    a, b = Tablet("tablet-a"), Tablet("tablet-b")
    a.pull_all(server)
    b.pull_all(server)

    a.add_note("a1")
    a_first = a.send()  # on the wire ...
    a.add_note("a2")  # ... so this one queues behind it
    b.add_note("b1")
    b_push = b.send()
    b.receive(b_push, server.push(b_push))  # B's line reaches the server first

    a.restart()  # A's tab closes and reopens: both entries restored, counted as sent
    a.add_note("a3")  # cannot squash into a restored entry: a third one queues
    assert len(a.machine.entries) == 3

    a.receive(a_first, server.push(a_first))  # merged with B's line on the server
    a.sync_until_quiet(server)
    b.sync_until_quiet(server)

    _v, final = server.current(PATIENT)
    assert final is not None
    assert set(final["x_tags"]) == {"a1", "a2", "a3", "b1"}, "B's line was lost"
    assert a.chart()[1]["x_tags"] == final["x_tags"]
    assert b.chart()[1]["x_tags"] == final["x_tags"]
    assert a.machine.status().synced and b.machine.status().synced


def test_a_long_restored_chain_rebased_by_a_pull_keeps_every_line() -> None:
    """The same shape, reached through a pull instead of a push answer: three queued
    edits of A, B's change pulled while A's head is pending — all four lines survive."""
    server = SimServer()
    server.write(PATIENT, {"x_tags": {}})
    a, b = Tablet("tablet-a"), Tablet("tablet-b")
    a.pull_all(server)
    b.pull_all(server)
    a.add_note("a1")
    lost = a.send()  # sent, the answer never arrives (network drop before the server)
    a.add_note("a2")
    a.restart()
    a.add_note("a3")
    a.add_note("a4")  # squashes into a3 (never sent)
    del lost
    b.add_note("b1")
    b.sync_until_quiet(server)
    a.pull_all(server)  # B's line arrives while all three of A's entries are queued
    a.sync_until_quiet(server)
    b.sync_until_quiet(server)
    _v, final = server.current(PATIENT)
    assert final is not None
    assert set(final["x_tags"]) == {"a1", "a2", "a3", "a4", "b1"}
    assert a.chart()[1]["x_tags"] == final["x_tags"] == b.chart()[1]["x_tags"]


def test_a_retried_push_is_never_refused_as_a_reused_id() -> None:
    """Found when the simulator took over the server's replay rule (451 times in seeds 0–1,999).

    Tablet A's push reaches the server and is applied, but the answer is lost. Before A
    retries, a pull brings A's own write and a colleague's change on top. The machine used
    to rebase the already-sent edit in place and retry it under the same mutation id with a
    new base and content; the server refuses that ("mutationId already used for a different
    change"), so the clinician saw their saved change marked *rejected*.
    """
    server = SimServer()
    server.write(PATIENT, {"x_tags": {}})
    a, b = Tablet("tablet-a"), Tablet("tablet-b")
    a.pull_all(server)
    b.pull_all(server)
    a.add_note("a1")
    sent = a.send()
    server.push(sent)  # applied on the server; the answer never reaches A
    b.add_note("b1")
    b.sync_until_quiet(server)
    a.pull_all(server)  # A sees its own write and B's
    a.apply(a.machine.on_push_failed(1.0, sent, rng_value=0.5))  # the request timed out
    retry = a.machine.next_push(1000.0)
    assert retry is not None
    assert retry.mutations == sent.mutations, "a sent mutation must be retried unchanged"
    a.receive(retry, server.push(retry))
    assert not server.reused_ids
    assert a.machine.status().rejected == 0
    a.sync_until_quiet(server)
    _v, final = server.current(PATIENT)
    assert final is not None and set(final["x_tags"]) == {"a1", "b1"}
    assert a.chart()[1]["x_tags"] == final["x_tags"]


def test_a_tablet_restored_from_backup_finds_the_conflict_it_lost() -> None:
    """Seed 9608 of the 10,000-seed run, once tablets could be restored from a backup.

    Tablet A changes the patient's status; the push reaches the server, which parks it as a
    conflict with B's change made meanwhile — and the answer is lost. A is then restored from a
    backup taken before the edit, so its outbox no longer holds it. The conflict sat open on the
    server where nobody would ever see it; now A adopts it from ``GET /api/sync/conflicts``, the
    clinician decides, and the server closes it.
    """
    server = SimServer()
    server.write(PATIENT, {"x_tags": {}, "x_status": "s0"})
    a, b = Tablet("tablet-a"), Tablet("tablet-b")
    a.pull_all(server)
    b.pull_all(server)
    backup = copy.deepcopy(a.store)

    version, current = b.chart()
    b.apply(
        b.machine.record_local_edit(
            now=0.0,
            mutation_id="b-1",
            resource_type=PATIENT[0],
            id=PATIENT[1],
            resource={**current, "x_status": "inpatient"},
            base_version=version,
            base_resource=current,
        )
    )
    b.sync_until_quiet(server)
    version, current = a.chart()
    a.apply(
        a.machine.record_local_edit(
            now=0.0,
            mutation_id="a-1",
            resource_type=PATIENT[0],
            id=PATIENT[1],
            resource={**current, "x_status": "discharged"},
            base_version=version,
            base_resource=current,
        )
    )
    lost = server.push(a.send())  # stored as a conflict on the server; the answer never arrives
    assert lost.results[0].status == "conflict"
    # Another device of the clinic never adopts a conflict that is not its own.
    assert b.machine.adopt_server_conflicts(server.conflicts_of("tablet-a")) == []

    a.store = backup  # the tablet is restored from its backup
    a.restart()
    assert not a.machine.entries
    a.apply(a.machine.adopt_server_conflicts(server.conflicts_of("tablet-a")))
    [view] = a.machine.conflicts()
    assert (view.local or {})["x_status"] == "discharged" and (view.server or {})["x_status"] == "inpatient"
    # Adopting again (the next sync) changes nothing.
    assert a.machine.adopt_server_conflicts(server.conflicts_of("tablet-a")) == []
    a.apply(
        a.machine.resolve_conflict(now=0.0, entry_id=view.entry_id, resource=view.local, mutation_id="a-2")
    )
    a.sync_until_quiet(server)
    assert not server.open_conflicts()
    assert server.current(PATIENT)[1]["x_status"] == "discharged"  # type: ignore[index]


def test_a_pull_page_older_than_an_acknowledged_save_never_hides_it() -> None:
    """Seen in the trace of seed 3146: a clinician's save was acknowledged at v3, then a pull page
    still carrying v2 (written before, further back in the feed) replaced the chart with v2 until
    the next page arrived — offline in between, the saved change was gone from the screen."""
    server = SimServer()
    server.write(PATIENT, {"x_tags": {}})
    a, b = Tablet("tablet-a"), Tablet("tablet-b")
    a.pull_all(server)
    b.pull_all(server)
    b.add_note("b1")
    b.sync_until_quiet(server)  # v2 on the server; A has not pulled it yet
    a.add_note("a1")
    push = a.send()
    a.receive(push, server.push(push))  # merged: v3 holds both lines
    assert a.chart()[0] == 3
    a.machine.pull_limit = 1  # the next page carries only v2 ...
    req = a.machine.next_pull()
    a.apply(a.machine.on_pull_response(0.0, req, server.pull(req)))
    version, shown = a.chart()
    assert version == 3 and set(shown["x_tags"]) == {"a1", "b1"}, "the saved change vanished"
    a.pull_all(server)  # ... and the rest of the feed leaves the newest version
    assert a.chart()[0] == 3 and a.machine.status().synced


def test_a_refused_create_the_server_holds_is_never_dropped_from_the_device() -> None:
    """Seed 77,364 of the 100,000-seed soak.

    A tablet registers a new observation and changes it before sending; it is restored from a backup
    taken in between, so it holds the *first* copy of that create while the server applied the
    changed one under the same mutation id. The clinician then deletes the record. The re-sent create is
    refused (same id, other content); the delete queued behind it had no base, so the machine took it
    for "never reached the server" and dropped the record locally — the device lost a record the server
    kept, for good (the pull cursor was already past it). Now the delete becomes a decision for a person.
    """
    server = SimServer()
    a = Tablet("tablet-a")
    key = ("Observation", "obs-1")
    created = {"resourceType": "Observation", "id": "obs-1", "x_tags": {"a1": True}, "x_status": "new"}
    a.apply(
        a.machine.record_local_edit(
            now=0.0,
            mutation_id="a-1",
            resource_type=key[0],
            id=key[1],
            resource=created,
            base_version=None,
            base_resource=None,
        )
    )
    changed = {**created, "x_status": "amended"}
    server.push(PushRequest("tablet-a", (Mutation("a-1", "put", key[0], key[1], None, changed),)))
    first = a.send()  # the restored tablet re-sends its older copy of a-1
    a.pull_all(server)  # the server's v1 is known to the entry
    a.apply(
        a.machine.record_local_edit(
            now=0.0,
            mutation_id="a-2",
            resource_type=key[0],
            id=key[1],
            resource=None,
            base_version=None,
            base_resource=None,
        )
    )
    refused = server.push(first)
    assert refused.results[0].status == "rejected"
    a.receive(first, refused)
    [view] = a.machine.conflicts()  # the delete waits for a person, with the server's copy beside it
    assert view.local is None and (view.server or {})["x_status"] == "amended"
    a.apply(
        a.machine.resolve_conflict(now=0.0, entry_id=view.entry_id, resource=view.server, mutation_id="a-3")
    )
    a.apply(a.machine.dismiss_rejected(entry_id="a-1"))
    a.sync_until_quiet(server)
    rec = step(a.store.get_record(*key))
    assert rec is not None and CODEC.open(rec.blob)["x_status"] == "amended"
    assert a.machine.status().synced
