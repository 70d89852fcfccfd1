"""Upload of the device's offline audit events: bounded retries, backoff, and parking of refused events.

Why: the server refuses a whole batch it does not believe (``403``/``400``: a patient this device never
received, a time outside the device's lifetime, ...). Retried as is, the same batch is refused at every sync
forever and every later event waits behind it. Here a refused batch is halved until the refused event is alone
(so the good events around it still reach the server), a lone refused event is retried a bounded number of
times with a growing delay, then *parked*: kept on the device, sealed, with the server's reason, and shown to
the user — never dropped. The server files every refusal as a security event and, once later events arrive,
flags the missing sequence numbers as a gap, so the parked event is visible there too.

Pure rules: the adapter passes the clock (``now``, epoch seconds) and the HTTP status and does the storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

#: How many times a lone refused event is sent before it is parked.
REFUSALS_BEFORE_PARK = 3
#: Delay after a refusal or a server error: BACKOFF_BASE_S * 2**(n-1), at most BACKOFF_MAX_S.
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0
#: At most this many parked events are listed (the rest are counted); each is kept in the store anyway.
PARKED_LISTED = 50


@dataclass(frozen=True)
class Parked:
    """One refused event kept on the device (``eid`` names its sealed copy in the store)."""

    eid: str
    seq: int
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"eid": self.eid, "seq": self.seq, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class UploadState:
    """Persisted between syncs (meta ``audit.upload``)."""

    batch: int = 0  # 0: the full batch size
    refusals: int = 0  # consecutive refusals of the current head batch
    errors: int = 0  # consecutive transient failures (server errors, throttling)
    not_before: float = 0.0  # no upload before this time
    parked: tuple[Parked, ...] = field(default=())
    parked_total: int = 0

    def to_json(self) -> str:
        return json.dumps({"batch": self.batch, "refusals": self.refusals, "errors": self.errors,
                           "notBefore": self.not_before, "parked": [p.to_json() for p in self.parked],
                           "parkedTotal": self.parked_total})

    @classmethod
    def from_json(cls, raw: str | None) -> UploadState:
        if not raw:
            return cls()
        try:
            d = json.loads(raw)
            parked = tuple(Parked(str(p["eid"]), int(p["seq"]), str(p["reason"]), float(p["at"]))
                           for p in d.get("parked", []))
            return cls(int(d.get("batch", 0)), int(d.get("refusals", 0)), int(d.get("errors", 0)),
                       float(d.get("notBefore", 0.0)), parked, int(d.get("parkedTotal", len(parked))))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()  # a damaged state only loses the backoff, never an event (they stay in the queue)


@dataclass(frozen=True)
class Outcome:
    """What the adapter does after one upload attempt."""

    state: UploadState
    delete: tuple[str, ...] = ()  # events the server holds: remove from the queue
    park: tuple[Parked, ...] = ()  # events to move from the queue to the parked store (with their reason)
    again: bool = False  # try the next batch now (in the same sync)


def may_upload(state: UploadState, now: float) -> bool:
    return now >= state.not_before


def batch_size(state: UploadState, full: int) -> int:
    return state.batch if 0 < state.batch < full else full


def _backoff(n: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, n - 1)))


def refused(status: int) -> bool:
    """A refusal of the content (retrying the same bytes cannot help) rather than a passing failure."""
    return 400 <= status < 500 and status not in (401, 408, 409, 425, 429)


def on_result(state: UploadState, *, status: int, reason: str, sent: list[tuple[str, int]], full: int,
              now: float) -> Outcome:
    """The next state after sending ``sent`` (``(eid, seq)`` in order) and getting ``status``."""
    if status == 200:
        more = len(sent) >= batch_size(state, full)
        # While a refused batch is being split, keep the smaller size (going back to the full batch would send
        # the refused event with its neighbours again); back to full once it is parked or the queue is empty.
        return Outcome(replace(state, batch=state.batch if more else 0, refusals=0, errors=0, not_before=0.0),
                       delete=tuple(e for e, _ in sent), again=more)
    if not refused(status):
        if status == 0 or status == 401:
            return Outcome(state)  # offline / signed out: the next sync tries again, nothing counts
        errors = state.errors + 1
        return Outcome(replace(state, errors=errors, not_before=now + _backoff(errors)))
    if len(sent) > 1:
        # Halve at once (no wait): the first half goes next; a good half is accepted and the bad one is left.
        return Outcome(replace(state, batch=max(1, len(sent) // 2), refusals=0, errors=0), again=True)
    refusals = state.refusals + 1
    if refusals < REFUSALS_BEFORE_PARK or not sent:
        return Outcome(replace(state, batch=1, refusals=refusals, not_before=now + _backoff(refusals)))
    eid, seq = sent[0]
    parked = Parked(eid, seq, (reason or f"refused ({status})")[:300], now)
    listed = (*state.parked, parked)[-PARKED_LISTED:]
    return Outcome(replace(state, batch=0, refusals=0, errors=0, not_before=0.0, parked=listed,
                           parked_total=state.parked_total + 1),
                   park=(parked,), again=True)


def parked_message(state: UploadState) -> str | None:
    """Plain words for the status bar / banner, or None when nothing is parked."""
    n = state.parked_total
    if not n:
        return None
    last = state.parked[-1].reason if state.parked else ""
    what = "One access record" if n == 1 else f"{n} access records"
    verb = "was" if n == 1 else "were"
    return (f"{what} from this device {verb} refused by the server and {'is' if n == 1 else 'are'} kept on this "
            f"device for your administrator. Your patient data is not affected. Reason: {last}")
