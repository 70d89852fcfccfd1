"""How the server decides one pushed mutation: the decision table (sans-IO).

One rule, one place: the Django server (``omnicare.sync.services``) and the test
simulator (``tests/pyclient/simserver.py``) both call :func:`decide`, so what the
convergence simulation proves about the protocol holds for the real server.
Authorization, validation and storage stay with the caller; this module only
says what to do, given the current server copy, the version the client edited
from, and the client's change.

The table is keyed by (operation, state of the server copy, relation of the
client's base to the current version) — the shape of h11's ``_state.py``: every
combination is listed, so an unexpected one raises instead of falling through.

Two decisions are worth spelling out (PROTOCOL.md §5, "Push"):

* **A put onto a deleted record is never a silent resurrection.** With the
  tombstone as its base (the client saw the delete and created again) it is
  written; with an older base *or no base at all* (the client never saw the
  delete: an offline edit, or a create racing a delete) it is parked as a
  conflict for a person to decide (PouchDB #6666 brought deleted documents back
  silently).
* **A delete of a record changed since the client's base** is parked too: the
  other side's change is never thrown away without a person seeing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pyclient.merge import merge
from pyclient.protocol import Mutation

__all__ = ["DECISIONS", "Decision", "base_relation", "content", "decide", "mutation_hash"]

Target = Literal["absent", "deleted", "live"]
BaseRel = Literal["none", "current", "stale", "ahead"]
Action = Literal["write", "noop", "merge", "conflict", "reject", "impossible"]

#: (op, target, base relation) -> action. "merge" = three-way merge: clean -> write (or no-op when
#: it changes nothing), unclean -> conflict. "impossible" cannot be reached with a consistent
#: server (an absent record has version 0, so any base is "ahead" or "none").
DECISIONS: Final[Mapping[tuple[str, Target, BaseRel], Action]] = {
    # a base newer than anything the server has: the client is confused -> rejected
    ("put", "absent", "ahead"): "reject",
    ("put", "deleted", "ahead"): "reject",
    ("put", "live", "ahead"): "reject",
    ("delete", "absent", "ahead"): "reject",
    ("delete", "deleted", "ahead"): "reject",
    ("delete", "live", "ahead"): "reject",
    # put
    ("put", "absent", "none"): "write",  # a create
    ("put", "absent", "current"): "impossible",
    ("put", "absent", "stale"): "impossible",
    ("put", "deleted", "current"): "write",  # re-created on top of the tombstone it saw
    ("put", "deleted", "none"): "conflict",  # never resurrect silently
    ("put", "deleted", "stale"): "conflict",  # edited offline, deleted meanwhile
    ("put", "live", "current"): "write",
    ("put", "live", "stale"): "merge",
    ("put", "live", "none"): "merge",  # a create of an id that exists: merge from nothing
    # delete
    ("delete", "absent", "none"): "noop",  # already gone
    ("delete", "absent", "current"): "impossible",
    ("delete", "absent", "stale"): "impossible",
    ("delete", "deleted", "none"): "noop",
    ("delete", "deleted", "current"): "noop",
    ("delete", "deleted", "stale"): "noop",
    ("delete", "live", "current"): "write",
    ("delete", "live", "stale"): "conflict",  # changed after the client decided to delete
    ("delete", "live", "none"): "conflict",
}


@dataclass(frozen=True)
class Decision:
    """What to do with one mutation.

    ``write``: store ``body`` (None = tombstone) as a new version, answered with ``status``.
    ``noop``: store nothing; answer ``status`` with the current version.
    ``conflict``: store a conflict with ``conflicts`` (merge-path dicts); the server keeps its copy.
    ``reject``: refuse with ``reason``.
    """

    kind: Literal["write", "noop", "conflict", "reject"]
    status: Literal["applied", "merged", "conflict", "rejected"]
    body: dict[str, Any] | None = None
    conflicts: tuple[dict[str, Any], ...] = ()
    reason: str = ""


def content(body: dict[str, Any]) -> dict[str, Any]:
    """A body without the server-owned ``meta.versionId``/``meta.lastUpdated``: a client may or may not
    echo them; they are not an edit, so they never show up as a merge conflict."""
    meta = body.get("meta")
    if not isinstance(meta, dict) or not ({"versionId", "lastUpdated"} & meta.keys()):
        return body
    out = dict(body)
    rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    if rest:
        out["meta"] = rest
    else:
        out.pop("meta")
    return out


def mutation_hash(m: Mutation) -> str:
    """Canonical SHA-256 of a mutation (key order and whitespace do not matter).

    A replayed mutation id is answered with its first result only when the hash matches;
    the same id with other content is refused (the client must never reuse an id)."""
    raw = json.dumps(m.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def base_relation(base_version: int | None, cur_version: int) -> BaseRel:
    if base_version is None:
        return "none"
    if base_version > cur_version:
        return "ahead"
    return "current" if base_version == cur_version else "stale"


def decide(
    *,
    op: Literal["put", "delete"],
    cur_version: int,
    live: bool,
    ours: dict[str, Any] | None,
    base_version: int | None,
    base_of: Callable[[int], dict[str, Any] | None],
    theirs: dict[str, Any] | None,
) -> Decision:
    """Decide one mutation against the current server copy.

    ``cur_version`` is the current version (0: never existed), ``live`` whether it is not a
    tombstone, ``ours`` its body when live. ``base_of(v)`` loads the body of version ``v``
    (None for a tombstone or unknown); it is called only when a merge or conflict needs it.
    ``theirs`` is the client's body for a put.
    """
    target: Target = "absent" if cur_version == 0 else ("live" if live else "deleted")
    rel = base_relation(base_version, cur_version)
    action = DECISIONS[(op, target, rel)]
    if action == "impossible":
        raise AssertionError(f"inconsistent server state: {op} onto {target} with base {rel}")
    if action == "reject":
        return Decision(
            "reject",
            "rejected",
            reason=f"baseVersion {base_version} is ahead of the server's version {cur_version}",
        )
    if action == "noop":
        return Decision("noop", "applied")
    if action == "write":
        return Decision("write", "applied", body=theirs if op == "put" else None)
    base = base_of(base_version) if base_version is not None and rel == "stale" else None
    if action == "conflict":
        side = {"path": "", "base": base, "ours": ours, "theirs": theirs}
        return Decision("conflict", "conflict", conflicts=(side,))
    assert action == "merge" and ours is not None and theirs is not None
    ours_n = content(ours)
    result = merge(content(base) if base is not None else None, ours_n, content(theirs))
    if not result.clean:
        return Decision("conflict", "conflict", conflicts=tuple(c.to_json() for c in result.conflicts))
    if result.merged == ours_n:
        return Decision("noop", "merged")  # the change is already there: no new version
    return Decision("write", "merged", body=result.merged)
