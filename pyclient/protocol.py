"""Wire messages of the sync protocol (pull and push), as typed dataclasses.

Every message has ``to_json()`` (a plain JSON-compatible dict, camelCase keys
exactly as on the wire) and ``from_json()`` which validates and raises
:class:`ProtocolError` with the offending path on malformed input. The byte
level is UTF-8 JSON (:func:`dumps` / :func:`loads`). PROTOCOL.md §5 is the
prose description of the same shapes; keep the two in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from pyclient.views.caldate import days  # the one calendar rule (no datetime: sans-IO)

__all__ = [
    "DEVICE_ID_CHARS",
    "DEVICE_ID_RE",
    "MAX_PULL_LIMIT",
    "MAX_PUSH_MUTATIONS",
    "MUTATION_STATUSES",
    "Change",
    "DropEntry",
    "Mutation",
    "MutationResult",
    "ProtocolError",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "dumps",
    "loads",
    "parse_retry_after",
]

MAX_PULL_LIMIT: Final = 1000
#: THE rule for a device id (and the other client-generated ids: telemetry report ids): 1-64 characters of
#: ``A-Z a-z 0-9 . _ : -`` (a UUID fits). The server's schemas and checks (``omnicare.access.device_ids``), the
#: telemetry report and the ops API all use these two; ``\Z``, not ``$``, so a trailing newline is refused.
DEVICE_ID_CHARS: Final = r"[A-Za-z0-9._:-]{1,64}"
DEVICE_ID_RE: Final = re.compile(rf"^{DEVICE_ID_CHARS}\Z")
MAX_PUSH_MUTATIONS: Final = 100
MUTATION_STATUSES: Final = ("applied", "merged", "conflict", "rejected")

Op = Literal["put", "delete"]
Status = Literal["applied", "merged", "conflict", "rejected"]


class ProtocolError(ValueError):
    """A message does not have the shape the sync protocol requires."""


# --- small validators -------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if type(value) is dict:  # what json gives: skip the ABC check (~2 per pulled record under Pyodide)
        return value
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return cast(Mapping[str, Any], value)


def _req(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise ProtocolError(f"{where}.{key}: required field missing")
    return obj[key]


def _str(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise ProtocolError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: str, *, minimum: int | None = None) -> int:
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ProtocolError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: expected true/false, got {value!r}")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected a JSON array, got {type(value).__name__}")
    return cast(Sequence[Any], value)


def _items[T](obj: Mapping[str, Any], key: str, where: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    """The required array ``where.key``, each item parsed with its own path (``where.key[i]``) for errors."""
    return tuple(parse(x, f"{where}.{key}[{i}]") for i, x in enumerate(_list(_req(obj, key, where), f"{where}.{key}")))


def _resource(value: Any, where: str, resource_type: str, rid: str) -> dict[str, Any]:
    res = dict(_obj(value, where))
    if res.get("resourceType") != resource_type:
        raise ProtocolError(f"{where}.resourceType: {res.get('resourceType')!r} != {resource_type!r}")
    if "id" in res and res["id"] != rid:
        raise ProtocolError(f"{where}.id: {res['id']!r} != {rid!r}")
    return res


def _opt_resource(
    obj: Mapping[str, Any], key: str, where: str, resource_type: str, rid: str
) -> dict[str, Any] | None:
    value = obj.get(key)
    return None if value is None else _resource(value, f"{where}.{key}", resource_type, rid)


# --- pull -------------------------------------------------------------------


@dataclass(frozen=True)
class PullRequest:
    """Ask for the changes after ``cursor`` (``None`` = from the beginning)."""

    cursor: str | None
    limit: int = 200

    def __post_init__(self) -> None:
        if self.cursor is not None:
            _str(self.cursor, "PullRequest.cursor")
        _int(self.limit, "PullRequest.limit", minimum=1)
        if self.limit > MAX_PULL_LIMIT:
            raise ProtocolError(f"PullRequest.limit: at most {MAX_PULL_LIMIT}, got {self.limit}")

    def to_json(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "limit": self.limit}

    @classmethod
    def from_json(cls, data: Any) -> PullRequest:
        obj = _obj(data, "PullRequest")
        cursor = obj.get("cursor")
        limit = obj.get("limit", 200)
        return cls(
            cursor=None if cursor is None else _str(cursor, "PullRequest.cursor"),
            limit=_int(limit, "PullRequest.limit", minimum=1),
        )


@dataclass(frozen=True)
class Change:
    """One entry of the server change feed: the new state of one resource."""

    seq: int
    resource_type: str
    id: str
    version_id: int
    deleted: bool
    resource: dict[str, Any] | None

    def __post_init__(self) -> None:
        if self.deleted != (self.resource is None):
            raise ProtocolError("Change: resource must be null exactly when deleted is true")

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "resourceType": self.resource_type,
            "id": self.id,
            "versionId": self.version_id,
            "deleted": self.deleted,
            "resource": self.resource,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "Change") -> Change:
        if type(data) is dict:
            # A well-formed change, checked as below without building the six error paths (f-strings) that
            # only a failure needs: ~10,000 per first sync under Pyodide. Anything else takes the slow path,
            # which names what is wrong.
            rt, rid, deleted, res = data.get("resourceType"), data.get("id"), data.get("deleted"), data.get("resource")
            seq, vid = data.get("seq"), data.get("versionId")
            if (type(rt) is str and rt and type(rid) is str and rid and type(deleted) is bool
                    and type(seq) is int and seq >= 0 and type(vid) is int and vid >= 1
                    and (res is None) == deleted
                    and (res is None or (type(res) is dict and res.get("resourceType") == rt
                                         and res.get("id", rid) == rid))):
                return cls(seq=seq, resource_type=rt, id=rid, version_id=vid, deleted=deleted,
                           resource=None if res is None else dict(res))
        obj = _obj(data, where)
        rtype = _str(_req(obj, "resourceType", where), f"{where}.resourceType")
        rid = _str(_req(obj, "id", where), f"{where}.id")
        deleted = _bool(_req(obj, "deleted", where), f"{where}.deleted")
        resource = _opt_resource(obj, "resource", where, rtype, rid)
        if deleted != (resource is None):
            raise ProtocolError(f"{where}: resource must be null exactly when deleted is true")
        return cls(
            seq=_int(_req(obj, "seq", where), f"{where}.seq", minimum=0),
            resource_type=rtype,
            id=rid,
            version_id=_int(_req(obj, "versionId", where), f"{where}.versionId", minimum=1),
            deleted=deleted,
            resource=resource,
        )


@dataclass(frozen=True)
class DropEntry:
    """A record that left the caller's scope (care team change, grant expiry)."""

    resource_type: str
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": self.resource_type, "id": self.id}

    @classmethod
    def from_json(cls, data: Any, where: str = "DropEntry") -> DropEntry:
        obj = _obj(data, where)
        return cls(
            resource_type=_str(_req(obj, "resourceType", where), f"{where}.resourceType"),
            id=_str(_req(obj, "id", where), f"{where}.id"),
        )


@dataclass(frozen=True)
class PullResponse:
    """A page of the change feed; ``cursor`` is opaque and must be echoed back."""

    changes: tuple[Change, ...]
    cursor: str
    has_more: bool
    drop: tuple[DropEntry, ...] = ()
    reset: bool = False
    # The server database's epoch (PROTOCOL.md "Server epochs"); None from a server that predates epochs.
    epoch: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "changes": [c.to_json() for c in self.changes],
            "cursor": self.cursor,
            "hasMore": self.has_more,
            "drop": [d.to_json() for d in self.drop],
        }
        if self.reset:
            out["reset"] = True
        if self.epoch is not None:
            out["epoch"] = self.epoch
        return out

    @classmethod
    def from_json(cls, data: Any) -> PullResponse:
        obj = _obj(data, "PullResponse")
        changes = _items(obj, "changes", "PullResponse", Change.from_json)
        if any(a.seq >= b.seq for a, b in zip(changes, changes[1:], strict=False)):
            raise ProtocolError("PullResponse.changes: seq must be strictly ascending")
        drop = tuple(
            DropEntry.from_json(d, f"PullResponse.drop[{i}]")
            for i, d in enumerate(_list(obj.get("drop", []), "PullResponse.drop"))
        )
        return cls(
            changes=changes,
            cursor=_str(_req(obj, "cursor", "PullResponse"), "PullResponse.cursor"),
            has_more=_bool(_req(obj, "hasMore", "PullResponse"), "PullResponse.hasMore"),
            drop=drop,
            reset=_bool(obj.get("reset", False), "PullResponse.reset"),
            epoch=_opt_epoch(obj, "PullResponse"),
        )


# --- push -------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """One client change. ``mutation_id`` makes replays idempotent."""

    mutation_id: str
    op: Op
    resource_type: str
    id: str
    base_version: int | None
    resource: dict[str, Any] | None
    # mutationId of an earlier (conflicted) mutation this one replaces; the
    # server closes the conflict it stored for that mutation.
    supersedes: str | None = None
    # A server-epoch recovery (PROTOCOL.md "Server epochs"): the server merges it against the version the
    # restored database held, not against ``base_version`` (a version of the lost timeline).
    recover: bool = False

    def __post_init__(self) -> None:
        if self.op not in ("put", "delete"):
            raise ProtocolError(f"Mutation.op: expected 'put' or 'delete', got {self.op!r}")
        if (self.op == "put") != (self.resource is not None):
            raise ProtocolError("Mutation: a put carries a resource, a delete carries null")
        if self.op == "delete" and self.base_version is None:
            raise ProtocolError("Mutation: a delete needs the baseVersion it was decided on")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mutationId": self.mutation_id,
            "op": self.op,
            "resourceType": self.resource_type,
            "id": self.id,
            "baseVersion": self.base_version,
            "resource": self.resource,
        }
        if self.supersedes is not None:
            out["supersedes"] = self.supersedes
        if self.recover:
            out["recover"] = True
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "Mutation") -> Mutation:
        obj = _obj(data, where)
        op = _req(obj, "op", where)
        if op not in ("put", "delete"):
            raise ProtocolError(f"{where}.op: expected 'put' or 'delete', got {op!r}")
        rtype = _str(_req(obj, "resourceType", where), f"{where}.resourceType")
        rid = _str(_req(obj, "id", where), f"{where}.id")
        base = _req(obj, "baseVersion", where)
        supersedes = obj.get("supersedes")
        try:
            return cls(
                mutation_id=_str(_req(obj, "mutationId", where), f"{where}.mutationId"),
                op=cast(Op, op),
                resource_type=rtype,
                id=rid,
                base_version=None if base is None else _int(base, f"{where}.baseVersion", minimum=1),
                resource=_opt_resource(obj, "resource", where, rtype, rid),
                supersedes=None if supersedes is None else _str(supersedes, f"{where}.supersedes"),
                recover=_bool(obj.get("recover", False), f"{where}.recover"),
            )
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class PushRequest:
    """A batch of mutations from one device."""

    device_id: str
    mutations: tuple[Mutation, ...]
    # The epoch the device last saw: a server in another epoch applies nothing (PROTOCOL.md "Server epochs").
    epoch: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deviceId": self.device_id, "mutations": [m.to_json() for m in self.mutations]}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        return out

    @classmethod
    def from_json(cls, data: Any) -> PushRequest:
        obj = _obj(data, "PushRequest")
        muts = _items(obj, "mutations", "PushRequest", Mutation.from_json)
        if len(muts) > MAX_PUSH_MUTATIONS:
            raise ProtocolError(f"PushRequest.mutations: at most {MAX_PUSH_MUTATIONS} per request")
        ids = [m.mutation_id for m in muts]
        if len(set(ids)) != len(ids):
            raise ProtocolError("PushRequest.mutations: duplicate mutationId in one batch")
        return cls(
            device_id=_str(_req(obj, "deviceId", "PushRequest"), "PushRequest.deviceId"),
            mutations=muts,
            epoch=_opt_epoch(obj, "PushRequest"),
        )


@dataclass(frozen=True)
class MutationResult:
    """What the server did with one mutation (the same answer on every replay).

    applied/merged: ``version_id`` and ``resource`` are the new server version.
    conflict: ``version_id``/``resource`` are the server's current version (the
    "ours" side), ``conflicts`` the field-level clashes, ``conflict_id`` the
    stored conflict. rejected: ``outcome`` is a FHIR OperationOutcome.
    """

    mutation_id: str
    status: Status
    version_id: int | None = None
    resource: dict[str, Any] | None = None
    conflict_id: str | None = None
    conflicts: tuple[dict[str, Any], ...] = ()
    outcome: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mutationId": self.mutation_id, "status": self.status}
        if self.version_id is not None:
            out["versionId"] = self.version_id
        if self.resource is not None:
            out["resource"] = self.resource
        if self.conflict_id is not None:
            out["conflictId"] = self.conflict_id
        if self.conflicts:
            out["conflicts"] = [dict(c) for c in self.conflicts]
        if self.outcome is not None:
            out["outcome"] = self.outcome
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "MutationResult") -> MutationResult:
        obj = _obj(data, where)
        status = _req(obj, "status", where)
        if status not in MUTATION_STATUSES:
            raise ProtocolError(f"{where}.status: expected one of {MUTATION_STATUSES}, got {status!r}")
        version = obj.get("versionId")
        resource = obj.get("resource")
        conflict_id = obj.get("conflictId")
        outcome = obj.get("outcome")
        conflicts = []
        for i, c in enumerate(_list(obj.get("conflicts", []), f"{where}.conflicts")):
            cobj = _obj(c, f"{where}.conflicts[{i}]")
            _str(
                _req(cobj, "path", f"{where}.conflicts[{i}]"),
                f"{where}.conflicts[{i}].path",
                allow_empty=True,
            )
            conflicts.append(dict(cobj))
        result = cls(
            mutation_id=_str(_req(obj, "mutationId", where), f"{where}.mutationId"),
            status=cast(Status, status),
            version_id=None if version is None else _int(version, f"{where}.versionId", minimum=1),
            resource=None if resource is None else dict(_obj(resource, f"{where}.resource")),
            conflict_id=None if conflict_id is None else _str(conflict_id, f"{where}.conflictId"),
            conflicts=tuple(conflicts),
            outcome=None if outcome is None else dict(_obj(outcome, f"{where}.outcome")),
        )
        if status in ("applied", "merged") and result.version_id is None:
            raise ProtocolError(f"{where}: status {status!r} requires versionId")
        return result


@dataclass(frozen=True)
class PushResponse:
    """One result per mutation of the request, matched by ``mutationId``."""

    results: tuple[MutationResult, ...] = field(default_factory=tuple)
    epoch: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"results": [r.to_json() for r in self.results]}
        if self.epoch is not None:
            out["epoch"] = self.epoch
        return out

    @classmethod
    def from_json(cls, data: Any) -> PushResponse:
        obj = _obj(data, "PushResponse")
        return cls(
            results=_items(obj, "results", "PushResponse", MutationResult.from_json),
            epoch=_opt_epoch(obj, "PushResponse"),
        )


def _opt_epoch(obj: Mapping[str, Any], where: str) -> str | None:
    value = obj.get("epoch")
    return None if value is None else _str(value, f"{where}.epoch")


# --- bytes ------------------------------------------------------------------


def dumps(message: Any) -> bytes:
    """Encode a message (dataclass with ``to_json`` or plain dict) as compact UTF-8 JSON."""
    data = message.to_json() if hasattr(message, "to_json") else message
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def loads(raw: bytes | str) -> Any:
    """Decode UTF-8 JSON, turning any decoding error into :class:`ProtocolError`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not valid UTF-8 JSON: {exc}") from None


_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE: Final = re.compile(
    r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$"
)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header (delta-seconds or IMF-fixdate).

    ``now`` is the current Unix time in seconds (passed in: the core has no clock).
    Returns ``None`` when the header is absent or unparseable, never a negative delay.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    match = _IMF_FIXDATE.match(value)
    if match is None or match.group(2) not in _MONTHS:
        return None
    day, mon, year, hh, mm, ss = match.groups()
    epoch = (
        days((int(year), _MONTHS.index(mon) + 1, int(day))) * 86400
        + int(hh) * 3600
        + int(mm) * 60
        + int(ss)
    )
    return max(0.0, float(epoch) - now)
