"""What a device holds: a budgeted subset of its user's scope (issue 13, item 1). THE rule, in one place.

The server decides what a user *may* see (``omnicare.access``: care team, break-the-glass grants, ward census,
schedule) and ships, per device, that scope as a ranked list of :class:`Candidate` (why each patient is in
scope, the prefetch model's probability that the user opens the chart in the next shift, and how many bytes
the compartment is) together with the device's storage budget: a :class:`DeviceSetOffer`
(``GET /api/sync/device-set``, PROTOCOL.md "Device set").

The device decides what it *holds* with :func:`plan_device_set`, sans-IO:

1. **Pinned**, whatever the budget: patients with pending (unsynced) or conflicted changes on this device,
   the user's care team, today's and tomorrow's appointments, current inpatients of the user's wards,
   emergency-access grants and charts the user fetched on demand on this device.
2. **The rest**, in the model's order (highest probability first, then patient id, so every device
   given the same offer chooses the same set), while they fit in what the pins left of the budget.

Eviction (:attr:`DevicePlan.evict`) lists patients the device holds now that the plan no longer keeps,
least likely to be needed first; a patient with pending changes or conflicts is never in it. The device then
tells the server the chosen set (``POST /api/sync/device-set``) and pulls: the server intersects the set with
the user's scope at every pull (so nothing a device asks for widens it), fills what was added and sends
``drop`` for what left — the existing pull machinery purges them from the store.

Sizes are estimates: the server counts the JSON bytes of the compartment; a sealed envelope is base64 of
AES-GCM ciphertext plus a header and blind-index tokens (:func:`sealed_bytes`). Where the device can measure
what its store really uses (``stored_bytes``: the browser's IndexedDB usage), the plan scales every estimate by
measured / estimated of what the device holds now (:func:`measured_scale`), so the budget is spent on what the
data really takes there, and says so (:attr:`DevicePlan.measured`); without a usable measure it keeps the
estimates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .protocol import ProtocolError

#: Why a patient is on a device. Server-side reasons first (``ward:<name>`` carries the ward's name).
PINNING_REASONS: Final = frozenset(
    {"pending", "conflict", "care-team", "appointment-today", "appointment-tomorrow", "ward", "grant", "on-demand"}
)
LIKELY: Final = "likely"  # not pinned: held because the model ranks it within the budget

#: Bytes a sealed record adds to its JSON beyond base64 (nonce, tag, header, blind-index tokens, IDB keys).
ENVELOPE_OVERHEAD_BYTES: Final = 320

#: Defaults from the seed ("Web 1–5 GB IndexedDB", "Mobile 500 MB–2 GB"): the low end of each range.
DEFAULT_BUDGET_BYTES: Final[Mapping[str, int]] = {"web": 1_000_000_000, "mobile": 500_000_000}


def sealed_bytes(json_bytes: int, records: int) -> int:
    """Estimated bytes at rest of a compartment of ``records`` records totalling ``json_bytes`` of JSON."""
    return -(-max(0, json_bytes) * 4 // 3) + max(0, records) * ENVELOPE_OVERHEAD_BYTES


#: Below this much estimated data held, the store's fixed costs (schema, meta, audit rows) swamp the ratio.
MIN_MEASURED_BYTES: Final = 1_000_000
#: A measured/estimated ratio outside this range is not believed (a stale or foreign figure): estimates stay.
MEASURED_SCALE_RANGE: Final = (0.25, 8.0)


def measured_scale(stored_bytes: int | None, estimated_held: int) -> float | None:
    """measured / estimated bytes of what the device holds now, or None when there is no usable measure."""
    if stored_bytes is None or stored_bytes <= 0 or estimated_held < MIN_MEASURED_BYTES:
        return None
    ratio = stored_bytes / estimated_held
    lo, hi = MEASURED_SCALE_RANGE
    return ratio if lo <= ratio <= hi else None


def reason_code(reason: str) -> str:
    """``ward:Ward 3`` → ``ward``; other reasons are their own code."""
    return reason.split(":", 1)[0]


@dataclass(frozen=True)
class Candidate:
    """One patient of the user's scope as the server ranks it for this device."""

    patient_id: str
    reasons: tuple[str, ...]  # pinning ones (PINNING_REASONS) and "ward-recent:<name>", "appointment-week"
    score: float  # probability the user opens the chart in the next shift (0..1)
    json_bytes: int
    records: int

    @property
    def bytes(self) -> int:
        return sealed_bytes(self.json_bytes, self.records)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.patient_id, "reasons": list(self.reasons), "score": self.score,
                "bytes": self.json_bytes, "records": self.records}

    @classmethod
    def from_json(cls, data: Any) -> Candidate:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
            raise ProtocolError("device-set candidate: id must be a non-empty string")
        reasons = data.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ProtocolError("device-set candidate: reasons must be a list of strings")
        score, size, records = data.get("score", 0), data.get("bytes", 0), data.get("records", 0)
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
            raise ProtocolError("device-set candidate: score must be a number from 0 to 1")
        for name, v in (("bytes", size), ("records", records)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ProtocolError(f"device-set candidate: {name} must be a non-negative integer")
        return cls(data["id"], tuple(reasons), float(score), size, records)


@dataclass(frozen=True)
class DeviceSetOffer:
    """``GET /api/sync/device-set``: the device's budget and its user's scope, ranked."""

    budget_bytes: int
    model_version: str  # "heuristic" when the site has too little history for the learned model
    candidates: tuple[Candidate, ...]

    def to_json(self) -> dict[str, Any]:
        return {"budgetBytes": self.budget_bytes, "modelVersion": self.model_version,
                "patients": [c.to_json() for c in self.candidates]}

    @classmethod
    def from_json(cls, data: Any) -> DeviceSetOffer:
        if not isinstance(data, Mapping):
            raise ProtocolError("device-set offer must be an object")
        budget, version, patients = data.get("budgetBytes"), data.get("modelVersion", ""), data.get("patients")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise ProtocolError("device-set offer: budgetBytes must be a non-negative integer")
        if not isinstance(version, str) or not isinstance(patients, list):
            raise ProtocolError("device-set offer: modelVersion must be a string and patients a list")
        return cls(budget, version, tuple(Candidate.from_json(p) for p in patients))


@dataclass(frozen=True)
class Holding:
    """One patient the plan keeps on the device, and why."""

    patient_id: str
    reasons: tuple[str, ...]  # local ("pending", "conflict", "on-demand") then the server's; "likely" first if unpinned
    pinned: bool
    bytes: int
    score: float


@dataclass(frozen=True)
class DevicePlan:
    held: tuple[Holding, ...]  # pinned first (in the server's order), then by the model's rank
    evict: tuple[str, ...]  # held now, not kept: purge these (least likely to be needed first)
    not_held: int  # patients in scope the budget leaves on the server (fetched on demand when online)
    bytes_used: int
    budget_bytes: int
    model_version: str
    measured: bool = False  # sizes scaled to what this device measured its store uses (else estimates)

    @property
    def patient_ids(self) -> list[str]:
        """What the device asks the server for (``POST /api/sync/device-set``), in a stable order."""
        return sorted(h.patient_id for h in self.held)

    @property
    def over_budget(self) -> bool:
        """The pins alone need more than the budget: they are kept anyway, and the screen says so."""
        return self.bytes_used > self.budget_bytes


def plan_device_set(
    offer: DeviceSetOffer,
    *,
    held_now: Iterable[str] = (),
    pending: Iterable[str] = (),
    conflicted: Iterable[str] = (),
    on_demand: Iterable[str] = (),
    budget_bytes: int | None = None,
    stored_bytes: int | None = None,
) -> DevicePlan:
    """Choose what the device holds within ``budget_bytes`` (default: the offer's). See the module notes.

    ``pending``/``conflicted``: patients with unsynced or conflicted changes on this device (kept even if the
    server no longer offers them: their changes must reach the server first). ``on_demand``: charts the user
    fetched on demand here. ``held_now``: what the device holds before this plan (for the eviction list).
    ``stored_bytes``: what the device's store measures it uses now (None: not measured; see the module notes)."""
    budget = offer.budget_bytes if budget_bytes is None else max(0, budget_bytes)
    pend, conf, demand = set(pending), set(conflicted), set(on_demand)
    offered = {c.patient_id: c for c in offer.candidates}
    held_before = set(held_now)
    scale = measured_scale(stored_bytes, sum(c.bytes for p, c in offered.items() if p in held_before))

    def size(c: Candidate) -> int:
        return c.bytes if scale is None else round(c.bytes * scale)

    held: list[Holding] = []
    used = 0

    def local_reasons(pid: str) -> list[str]:
        return [r for r, ids in (("pending", pend), ("conflict", conf), ("on-demand", demand)) if pid in ids]

    # Local pins the server did not offer (left scope, or not yet indexed): kept only for unsynced work.
    for pid in sorted((pend | conf) - offered.keys()):
        held.append(Holding(pid, tuple(local_reasons(pid)), True, 0, 0.0))
    rest: list[Candidate] = []
    for c in offer.candidates:
        local = local_reasons(c.patient_id)
        if local or any(reason_code(r) in PINNING_REASONS for r in c.reasons):
            held.append(Holding(c.patient_id, (*local, *c.reasons), True, size(c), c.score))
            used += size(c)
        else:
            rest.append(c)
    rest.sort(key=lambda c: (-c.score, c.patient_id))
    not_held = 0
    for c in rest:
        if used + size(c) <= budget:
            held.append(Holding(c.patient_id, (LIKELY, *c.reasons), False, size(c), c.score))
            used += size(c)
        else:
            not_held += 1
    keep = {h.patient_id for h in held}
    leaving = [p for p in held_before - keep]
    leaving.sort(key=lambda p: (offered[p].score if p in offered else -1.0, p))
    assert not (set(leaving) & (pend | conf)), "a patient with unsynced work is never evicted"
    return DevicePlan(tuple(held), tuple(leaving), not_held, used, budget, offer.model_version, scale is not None)
