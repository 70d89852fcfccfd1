"""The push decision table (pyclient/push_rules.py), shared by the Django server and the simulator."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pyclient.push_rules import DECISIONS, base_relation, decide

HISTORY: dict[int, dict[str, Any] | None] = {
    1: {"resourceType": "Observation", "id": "o1", "status": "preliminary", "note": [{"text": "a"}]},
    2: {"resourceType": "Observation", "id": "o1", "status": "final", "note": [{"text": "a"}]},
}


def run(op: str, target: str, rel: str, theirs: dict[str, Any] | None = None) -> Any:
    cur_version = {"absent": 0, "deleted": 3, "live": 2}[target]
    base = {"none": None, "current": cur_version, "stale": 1, "ahead": cur_version + 1}[rel]
    if theirs is None and op == "put":
        theirs = {"resourceType": "Observation", "id": "o1", "status": "preliminary", "code": {"text": "x"}}
    return decide(
        op=op,  # type: ignore[arg-type]
        cur_version=cur_version,
        live=target == "live",
        ours=HISTORY[2] if target == "live" else None,
        base_version=base,
        base_of=HISTORY.get,
        theirs=theirs if op == "put" else None,
    )


def test_the_table_lists_every_combination() -> None:
    ops, targets, rels = (
        ("put", "delete"),
        ("absent", "deleted", "live"),
        ("none", "current", "stale", "ahead"),
    )
    assert set(DECISIONS) == set(itertools.product(ops, targets, rels))


@pytest.mark.parametrize("key", sorted(DECISIONS))
def test_each_entry_decides_as_listed(key: tuple[str, str, str]) -> None:
    op, target, rel = key
    action = DECISIONS[key]
    if action == "impossible":
        # An absent record has version 0: a base is "none" or "ahead", never stale; base 0 is
        # not a valid baseVersion and is refused loudly rather than guessed at.
        assert all(base_relation(b, 0) != "stale" for b in (None, 0, 1, 2, 7))
        if rel == "current":
            with pytest.raises(AssertionError):
                decide(
                    op=op,
                    cur_version=0,
                    live=False,
                    ours=None,
                    base_version=0,  # type: ignore[arg-type]
                    base_of=HISTORY.get,
                    theirs=None if op == "delete" else {"id": "o1"},
                )
        return
    d = run(op, target, rel)
    if action == "merge":
        assert d.kind in ("write", "noop", "conflict")
    else:
        assert d.kind == action, (key, d)


def test_stale_disjoint_edit_merges_and_keeps_both_changes() -> None:
    d = run("put", "live", "stale")
    assert (d.kind, d.status) == ("write", "merged")
    assert d.body["status"] == "final" and d.body["code"] == {"text": "x"}


def test_a_change_already_on_the_server_is_a_no_op_merge() -> None:
    d = run("put", "live", "stale", theirs=dict(HISTORY[2]))  # type: ignore[arg-type]
    assert (d.kind, d.status) == ("noop", "merged")


def test_a_put_onto_a_deleted_record_is_never_a_silent_resurrection() -> None:
    for rel in ("none", "stale"):
        d = run("put", "deleted", rel)
        assert d.kind == "conflict" and d.conflicts[0]["ours"] is None
    assert run("put", "deleted", "current").kind == "write"


def test_server_meta_is_not_an_edit() -> None:
    theirs = {**HISTORY[1], "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"}}
    d = run("put", "live", "stale", theirs=theirs)  # type: ignore[arg-type]
    assert (d.kind, d.status) == ("noop", "merged")
