"""Server epochs in the sync state machine (PROTOCOL.md "Server epochs"): a server restored from a backup.

The device held versions the restored server lost (its own acknowledged edits and colleagues' changes it
pulled) and has edits still queued; on seeing the new epoch it must re-pull from scratch and re-send exactly
what the restored server does not have — as recover mutations, never dropping anything.
"""

from __future__ import annotations

from typing import Any

from pyclient.protocol import Change, MutationResult, PullRequest, PullResponse, PushResponse
from pyclient.store import MemoryStore
from pyclient.sync import (
    META_CURSOR,
    META_EPOCH,
    META_RECOVERY,
    EpochChanged,
    JsonCodec,
    MetaPut,
    SyncMachine,
    recovery_mutation_id,
    same_content,
    to_store_ops,
)

from .test_sync import edit, res

CODEC = JsonCodec()


def run(coro: Any) -> Any:
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


class Tablet:
    """The machine plus a MemoryStore, applying effects the way the browser runner does."""

    def __init__(self) -> None:
        self.m = SyncMachine(device_id="tab-1")
        self.store = MemoryStore()

    def apply(self, effects: list[Any]) -> list[Any]:
        run(self.store.apply(to_store_ops(effects, CODEC)))
        return effects

    def pull(self, resp: PullResponse) -> list[Any]:
        return self.apply(self.m.on_pull_response(1.0, self.m.next_pull(), resp))

    def held(self) -> list[tuple[str, str, int, dict[str, Any]]]:
        out = []
        for rtype in ("Patient", "Observation"):
            for r in run(self.store.list_records(rtype)):
                out.append((r.resource_type, r.id, r.version, CODEC.open(r.blob)))
        return out

    def restart(self) -> None:
        meta = {k: run(self.store.meta_get(k)) for k in (META_CURSOR, META_EPOCH, META_RECOVERY)}
        outbox = [CODEC.open(b) for _i, b in run(self.store.outbox_list())]
        self.m = SyncMachine.restore(device_id="tab-1", meta=meta, outbox=outbox)


def page(*changes: Change, cursor: str, epoch: str, reset: bool = False) -> PullResponse:
    return PullResponse(changes=changes, cursor=cursor, has_more=False, reset=reset, epoch=epoch)


def ch(seq: int, rid: str, version: int, **fields: Any) -> Change:
    return Change(seq, "Observation", rid, version, False, res("Observation", rid, version, **fields))


def test_the_first_epoch_is_adopted_and_kept_across_a_restart() -> None:
    t = Tablet()
    effects = t.pull(page(ch(1, "o1", 1, v=1), cursor="c1", epoch="E1", reset=True))
    assert MetaPut(META_EPOCH, "E1") in effects
    assert not any(isinstance(e, EpochChanged) for e in effects)
    t.restart()
    assert t.m.epoch == "E1" and t.m.cursor == "c1" and t.m.recovery is None


def test_a_restored_server_gets_back_everything_the_tablet_held_and_nothing_it_already_has() -> None:
    t = Tablet()
    # Synced under E1: o1 v1 (unchanged since the backup), o2 v2 (a colleague's change after the backup),
    # o3 v1 (created after the backup); o4 has an edit acknowledged after the backup; o5 a queued edit.
    t.pull(page(ch(1, "o1", 1, v=1), ch(2, "o2", 2, v=2), ch(3, "o3", 1, v=3), ch(4, "o4", 1, v=4),
                ch(5, "o5", 1, v=5), cursor="c5", epoch="E1", reset=True))
    t.apply(edit(t.m, "m4", "Observation", "o4", res("Observation", "o4", v=44), 1, res("Observation", "o4", 1, v=4)))
    req = t.m.next_push(1.0)
    assert req is not None and req.epoch == "E1"
    t.apply(t.m.on_push_response(1.0, req, PushResponse((
        MutationResult("m4", "applied", version_id=2, resource=res("Observation", "o4", 2, v=44)),), epoch="E1")))
    t.apply(edit(t.m, "m5", "Observation", "o5", res("Observation", "o5", v=55), 1, res("Observation", "o5", 1, v=5)))

    # The server is restored to before o2's change, o3's creation and m4; an old cursor page comes back
    # under the new epoch: nothing on it is applied, the cursor starts over, nothing is sent yet.
    stale = t.pull(PullResponse(changes=(ch(9, "o9", 1, v=9),), cursor="c9", has_more=False, epoch="E2"))
    assert [e for e in stale if isinstance(e, EpochChanged)] == [EpochChanged("E1", "E2")]
    assert t.m.cursor is None and t.m.recovery == "collect" and t.m.next_push(2.0) is None
    assert run(t.store.get_record("Observation", "o9")) is None
    # A pull before the held records are handed over changes nothing (the reset would wipe them).
    assert t.pull(page(ch(1, "o1", 1, v=1), cursor="r1", epoch="E2", reset=True)) == []

    t.restart()  # a crash here is harmless: the step is durable
    assert t.m.recovery == "collect" and t.m.epoch == "E2"
    t.apply(t.m.recover_held(t.held()))
    assert t.m.recovery == "pull"
    t.apply(t.m.recover_held(t.held()))  # again: nothing new
    # The re-pull: the restored server has o1 v1, o2 v1, o4 v1, o5 v1 and (new since) a colleague's o2 v2'.
    t.pull(page(ch(1, "o1", 1, v=1), ch(2, "o2", 1, v=0), ch(3, "o4", 1, v=4), ch(4, "o5", 1, v=5),
                cursor="r4", epoch="E2", reset=True))
    assert t.m.recovery is None
    req = t.m.next_push(3.0)
    assert req is not None and req.epoch == "E2"
    sent = {m.id: m for m in req.mutations}
    assert set(sent) == {"o2", "o3", "o4", "o5"}  # o1 is on the server unchanged: not re-sent
    assert all(m.recover for m in req.mutations)
    assert sent["o2"].resource is not None and sent["o2"].resource["v"] == 2
    assert sent["o3"].resource is not None and sent["o3"].resource["v"] == 3
    assert sent["o4"].resource is not None and sent["o4"].resource["v"] == 44
    assert sent["o5"].resource is not None and sent["o5"].resource["v"] == 55
    assert sent["o5"].mutation_id == "m5"  # its own queued edit keeps its id (idempotent by id)
    assert sent["o3"].mutation_id == recovery_mutation_id("E2", "Observation", "o3")
    # The server merges and answers; the outbox empties and the chart shows the server's versions.
    t.apply(t.m.on_push_response(3.0, req, PushResponse(tuple(
        MutationResult(m.mutation_id, "applied", version_id=2, resource=m.resource) for m in req.mutations
    ), epoch="E2")))
    assert t.m.entries == [] and t.m.status().synced
    assert CODEC.open(run(t.store.get_record("Observation", "o4")).blob)["v"] == 44


def test_a_push_answered_under_a_new_epoch_starts_the_recovery_after_its_results() -> None:
    t = Tablet()
    t.pull(page(ch(1, "o1", 1, v=1), cursor="c1", epoch="E1", reset=True))
    t.apply(edit(t.m, "m1", "Observation", "o1", res("Observation", "o1", v=2), 1, res("Observation", "o1", 1, v=1)))
    req = t.m.next_push(1.0)
    assert req is not None
    # A server in another epoch applies nothing and says so: the entry is kept and becomes a recovery.
    effects = t.apply(t.m.on_push_response(1.0, req, PushResponse((), epoch="E2")))
    assert any(isinstance(e, EpochChanged) for e in effects)
    entry = t.m.entry("m1")
    assert entry is not None and entry.recover and entry.state == "pending"
    t.apply(t.m.recover_held(t.held()))
    assert [e.entry_id for e in t.m.entries] == ["m1"]  # o1 has an edit: no second entry for it
    # The restored server already has the edit (it was applied before the backup): nothing to re-send.
    t.pull(page(ch(1, "o1", 2, v=2), cursor="r1", epoch="E2", reset=True))
    assert t.m.entries == [] and t.m.next_push(2.0) is None
    assert PullRequest(cursor="r1", limit=t.m.pull_limit) == t.m.next_pull()


def test_a_conflicted_edit_stays_parked_for_a_person_across_an_epoch_change() -> None:
    t = Tablet()
    t.pull(page(ch(1, "o1", 1, v=1), cursor="c1", epoch="E1", reset=True))
    t.apply(edit(t.m, "m1", "Observation", "o1", res("Observation", "o1", v=2), 1, res("Observation", "o1", 1, v=1)))
    req = t.m.next_push(1.0)
    assert req is not None
    t.apply(t.m.on_push_response(1.0, req, PushResponse((MutationResult(
        "m1", "conflict", version_id=2, resource=res("Observation", "o1", 2, v=3), conflict_id="c-1",
        conflicts=({"path": "v", "base": 1, "ours": 3, "theirs": 2},)),), epoch="E1")))
    t.pull(page(cursor="c2", epoch="E2"))
    t.apply(t.m.recover_held(t.held()))
    t.pull(page(ch(1, "o1", 1, v=1), cursor="r1", epoch="E2", reset=True))
    (view,) = t.m.conflicts()
    assert view.local is not None and view.local["v"] == 2  # the clinician's edit, never dropped
    assert view.server_version == 1  # the restored server's side, for the decision


def test_same_content_ignores_meta_only() -> None:
    assert same_content(res("Observation", "o1", 1, v=1), res("Observation", "o1", 7, v=1))
    assert not same_content(res("Observation", "o1", 1, v=1), res("Observation", "o1", 1, v=2))
    assert same_content(None, None) and not same_content(None, res("Observation", "o1"))
