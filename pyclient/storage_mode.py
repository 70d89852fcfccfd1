"""Where this device keeps patient data: on the device (offline-capable) or nowhere (online only) — issue 13 item 4.

A device that cannot keep data safely still has to be usable: it switches itself to ONLINE ONLY — the same
screens, records read from the server into memory, changes sent at once, nothing written at rest, everything
forgotten on lock. This module is the one place that decides it, as a table (like h11's ``_state.py``): the
browser asks it through the Python runtime, and when that runtime itself cannot start the server answers
with this same module (``POST /api/device/storage-mode``), so one rule and one set of words apply everywhere.

**Switching back.** Three conditions can clear while the app runs, and the app watches for it (``watch`` and
``recheck_s`` say which facts to gather and how often; JS also checks when the tab regains focus):

* ``quota-exhausted`` — space was freed: ``navigator.storage.estimate()`` shows at least
  :data:`RESUME_FREE_BYTES` more free than when the write failed (the estimate is coarse and may already have
  looked roomy then, so only growth counts);
* ``policy-no-offline`` — an administrator lifted "no offline data", seen at the next ``/api/auth/me``;
* ``persist-refused`` — the browser granted persistent storage later, or the policy no longer requires it.

When nothing holds any more the app does not switch silently: it OFFERS (``offer-device``, words in
:data:`OFFER`). The offer is watched as well, every ``recheck_s`` the same: the policy (an administrator may
impose "no offline data" again) and the facts of the conditions that cleared (the disk may fill again, below
:data:`WITHDRAW_FREE_BYTES` beyond what was free when the write failed). A condition back withdraws the offer
(``withdraw-offer``, said in :data:`NOTES` ``withdrawn``), and ``accept`` judges the same facts once more
first: the user may tap "Set PIN" between two checks, and the device must not store what the policy forbids.
Accepting is safe only when nothing is on its way to the server (no change or audit event
waiting in memory, no sync round running) and the device is online for the first download; the table says so
(``accept`` vs ``accept-not-yet``). Then the app sets a PIN, moves the store from memory to IndexedDB under the
same device id, reports ``switched`` (from then on a full disk is a ``hit`` on a device again), downloads into
it, and reports ``downloaded``.

``idb-unavailable`` (a private window stays private) and ``runtime-failed`` (no Python to ask) cannot clear
within a session: :meth:`StorageMode.clear` refuses them, and the next page start decides again.

Sans-IO: the adapters report *facts* (IndexedDB would not open, a write hit the quota, the runtime failed,
the policy the server shipped, the storage estimate); this module turns them into a mode, the action the app
must take on the change, and the words the status says. No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pyclient.keys import PIN_RULE

__all__ = [
    "ACTIONS", "CLEARABLE", "CONDITIONS", "EVENTS", "MODES", "OFFER", "OFFER_AGAIN_S", "REASONS", "RECHECK_S",
    "RESUME_FREE_BYTES",
    "TRANSITIONS", "WITHDRAW_FREE_BYTES", "Action", "Condition", "Decision", "Event", "Mode", "StorageMode",
    "conditions_from_facts", "decide", "free_bytes", "patients_summary",
]

# "offered" and "declined" are online only on the wire (``Decision.mode``): nothing is kept yet. Offered: every
# condition cleared and the offer to keep data stands. Declined: "Not now" — online only until the offer comes
# back (OFFER_AGAIN_S later, or once a condition came back and cleared again) or the next start.
Mode = Literal["device", "online-only", "offered", "declined"]
Condition = Literal["idb-unavailable", "persist-refused", "quota-exhausted", "runtime-failed", "policy-no-offline"]
# start: a page start; hit / clear: one condition met / gone; check: the watched facts gathered again;
# accept: the user accepted the offer and nothing is on its way (accept-not-yet: something is, or offline);
# decline: "Not now"; remind: OFFER_AGAIN_S passed since "Not now" (JS owns the timer); switched: the store moved
# to IndexedDB under a new PIN; downloaded: its first download ended (facts: ``done``), which is what the user is
# told.
Event = Literal["hit", "clear", "start", "check", "accept", "accept-not-yet", "decline", "remind", "switched",
                "downloaded"]
# What the app does on a change of mode:
#   none            nothing to do (the mode did not change)
#   go-online-only  push what is waiting, forget the local store, continue in memory (no new sign-in)
#   start-online-only   (at start) open in memory from the beginning
#   offer-device    every condition cleared: offer to keep data on the device again (never silently)
#   withdraw-offer  a condition came back before the offer was taken: say why again, the offer goes
#   not-yet         accepted, but a change is still on its way (or the device is offline): say so, try again
#   switch-to-device    safe now: set the PIN, move to IndexedDB, first download, then report ``switched``
#   back-at-next-start  declined: this session stays in memory for now (the offer comes back after
#                       OFFER_AGAIN_S, after a condition came back and cleared again, or at the next start)
Action = Literal["none", "go-online-only", "start-online-only", "offer-device", "withdraw-offer", "not-yet",
                 "switch-to-device", "back-at-next-start"]

MODES: tuple[Mode, ...] = get_args(Mode)
CONDITIONS: tuple[Condition, ...] = get_args(Condition)
EVENTS: tuple[Event, ...] = get_args(Event)
ACTIONS: tuple[Action, ...] = get_args(Action)

# Conditions that can clear during a session, and the fact that shows it (gathered by JS, judged here).
CLEARABLE: Mapping[Condition, str] = {
    "quota-exhausted": "estimate",  # navigator.storage.estimate(): {usage, quota}
    "policy-no-offline": "policy",  # /api/auth/me devicePolicy
    "persist-refused": "persisted",  # navigator.storage.persisted() (and the policy, which may drop the need)
}
# Free space a device needs, beyond what it had when the write failed, before it is offered to keep data
# again: a quarter of the web default budget (pyclient.device_set.DEFAULT_BUDGET_BYTES), enough for the pinned
# patients and the first pages of the prefetch tail (the device set stays within what fits).
RESUME_FREE_BYTES = 250_000_000
# While the offer stands, the disk counts as full again below half that margin: a margin of its own, so an
# estimate wobbling around the offer's threshold does not show and withdraw the offer every check.
WITHDRAW_FREE_BYTES = RESUME_FREE_BYTES // 2
# How often the watched facts are gathered while online only for a condition that can clear, and while the
# offer stands (and on focus).
RECHECK_S = 30
# "Not now" is an answer for now, not for the whole session: a clinician who dismissed the offer at the start of
# a shift is asked again an hour later (``Decision.remind_s``; the browser's timer sends ``remind``).
OFFER_AGAIN_S = 3600

# Why, in plain words, after "Online only: this device keeps no patient data — ". Most specific first: when
# several hold, the first one in CONDITIONS order is the one said.
REASONS: Mapping[Condition, str] = {
    "idb-unavailable": "this browser does not allow offline storage (a private window, or storage is turned off).",
    "persist-refused": "the browser would not keep data permanently, and your organisation requires that.",
    "quota-exhausted": "this device's storage is full.",
    "runtime-failed": "the offline engine could not start in this browser.",
    "policy-no-offline": "this is a shared workstation: your administrator turned off offline data.",
}
# The status pill's own words: short, so the header stays one line at 1024 px (issue 18); the whole sentence
# (``text``) is in the banner and the pill's tooltip / accessible description.
LABEL = "Online only"
PILL_ONLINE = f"{LABEL} · Online"
PILL_SIGNED_OUT = f"{LABEL} · signed out"
# What ends it, said with the reason (the first condition's).
WHAT_CLEARS: Mapping[Condition, str] = {
    "idb-unavailable": "OmniCare checks again the next time it starts.",
    "persist-refused": "If the browser allows permanent storage later, OmniCare offers to keep data again.",
    "quota-exhausted": "Free up space on this device and OmniCare offers to keep data on it again.",
    "runtime-failed": "OmniCare checks again the next time it starts.",
    "policy-no-offline": "If your administrator turns offline data back on, OmniCare offers to keep data again.",
}
PREFIX = "Online only: this device keeps no patient data — "
SHORT = "Online only: this device keeps no patient data"
CONSEQUENCE = ("Records are read from the server and changes are sent to it at once, so you need a connection. "
               "Locking or closing the tab forgets everything on this screen.")
# The offer and the PIN set-up it leads to (the dialog keeps the screen underneath as it is).
OFFER: Mapping[str, str] = {
    "text": "This device can keep patient data again. Set a PIN to work offline.",
    "accept": "Set PIN",
    "title": "Keep patient data on this device",
    "explain": ("Your patients are downloaded to this device, encrypted, so you can work offline. This PIN "
                "unlocks them. It never leaves the device and cannot be recovered: if you forget it, sign in "
                "again online. What is on your screen stays as it is."),
    "submit": "Set PIN and keep data",
    "cancel": "Not now",
    "pinHint": PIN_RULE,  # the rule setup_pin enforces (pyclient.keys), not a copy in the dialog
}
OFFERED_TEXT = "Online only for now: this device can keep patient data again."
DECLINED_TEXT = (SHORT + " for now. OmniCare offers to keep data again in an hour, or until OmniCare is next "
                 "started if that comes first.")
NOTES: Mapping[str, str] = {
    "unsent": ("A change is still on its way to the server. This device starts keeping data as soon as it has "
               "arrived; try again in a moment."),
    "unresolved": ("A change of yours waits for your decision (a conflict, or a change the server refused). "
                   "Deal with it first: then this device can keep data again."),
    "offline": "You are offline. Connect to the network: the first download to this device needs a connection.",
    "switching": "Downloading your patients to this device…",
    "switched": "Patient data is kept on this device again: you can work offline.",
    "unfinished": "The download to this device did not finish. It will retry automatically.",
    "declined": "This device keeps no patient data for now. OmniCare asks again in an hour.",
    "unconfirmed": ("The server did not answer, so OmniCare cannot confirm that this device may keep patient "
                    "data. Try again in a moment."),
    "withdrawn": "The offer to keep patient data on this device is withdrawn: nothing was stored on it.",
}

_ONLINE_ONLY_MODES: frozenset[Mode] = frozenset({"online-only", "offered", "declined"})


def _rows() -> dict[tuple[Mode, Event, bool], tuple[Mode, Action]]:
    rows: dict[tuple[Mode, Event, bool], tuple[Mode, Action]] = {}
    for mode in MODES:  # a page start decides afresh, whatever came before
        rows[(mode, "start", False)] = ("device", "none")
        rows[(mode, "start", True)] = ("online-only", "start-online-only")
    rows.update({
        ("device", "hit", True): ("online-only", "go-online-only"),
        ("online-only", "hit", True): ("online-only", "none"),
        ("offered", "hit", True): ("online-only", "withdraw-offer"),
        # A condition back ends the "Not now": once it clears again the offer is made again (a change of its own).
        ("declined", "hit", True): ("online-only", "none"),
    })
    judged: tuple[Event, ...] = ("clear", "check")
    for ev in judged:  # the same rows whether one condition is cleared or the watched facts say it
        rows.update({
            ("device", ev, False): ("device", "none"),  # nothing watched on a device that keeps data
            ("online-only", ev, True): ("online-only", "none"),
            ("online-only", ev, False): ("offered", "offer-device"),  # never a silent switch: ask first
            ("offered", ev, False): ("offered", "none"),  # the offer stands
            ("offered", ev, True): ("online-only", "withdraw-offer"),
            ("declined", ev, False): ("declined", "none"),
            ("declined", ev, True): ("online-only", "none"),  # as for a hit: the next clear offers again
        })
    for mode in MODES:  # the timer of an earlier "Not now": nothing unless still declined
        rows[(mode, "remind", False)] = (mode, "none")
        rows[(mode, "remind", True)] = (mode, "none")
    rows[("declined", "remind", False)] = ("offered", "offer-device")
    rows[("declined", "remind", True)] = ("online-only", "none")
    accepts: tuple[Event, ...] = ("accept", "accept-not-yet")
    for ev in accepts:
        rows.update({
            ("online-only", ev, True): ("online-only", "none"),  # the offer was withdrawn meanwhile
            ("declined", ev, False): ("declined", "none"),
            ("declined", ev, True): ("declined", "none"),
            ("device", ev, False): ("device", "none"),  # already switched (a second tap)
        })
    rows.update({
        # Safe: nothing is on its way to the server, so nothing can be lost when the memory store goes.
        ("offered", "accept", False): ("offered", "switch-to-device"),
        # A condition came back since the offer (accept judges the facts first): nothing may be stored.
        ("offered", "accept", True): ("online-only", "withdraw-offer"),
        ("offered", "accept-not-yet", True): ("online-only", "withdraw-offer"),
        ("offered", "accept-not-yet", False): ("offered", "not-yet"),
        ("offered", "switched", False): ("device", "none"),
        ("device", "downloaded", False): ("device", "none"),
        ("offered", "decline", False): ("declined", "back-at-next-start"),
        ("online-only", "decline", True): ("online-only", "none"),
        ("declined", "decline", False): ("declined", "none"),
        ("declined", "decline", True): ("declined", "none"),
        ("device", "decline", False): ("device", "none"),
    })
    return rows


# (mode now, event, does any condition remain after the event) -> (mode next, action)
TRANSITIONS: Mapping[tuple[Mode, Event, bool], tuple[Mode, Action]] = _rows()


@dataclass(frozen=True)
class Decision:
    mode: Literal["device", "online-only"]
    action: Action
    conditions: tuple[Condition, ...]
    # Decisions (views, validation, CDS) come from the browser's Python unless that runtime failed: then the
    # server runs the same pyclient functions behind /api/online/ (pyclient/PROTOCOL.md, "Online only").
    decisions: Literal["browser", "server"]
    text: str  # the status line ("" on a device that keeps data)
    reason: str  # the why ("" likewise)
    detail: str  # what it means for the user ("" likewise)
    back_next_start: bool = False
    offer: Mapping[str, str] | None = None  # the offer to keep data again, while it stands (OFFER)
    note: str = ""  # said once with this event (accept, decline, downloaded)
    recheck_s: int = 0  # gather the watched facts this often (0: nothing can clear in this session)
    watch: tuple[str, ...] = field(default=())  # which facts: "estimate", "policy", "persisted"
    remind_s: int = 0  # after "Not now": send ``remind`` this many seconds later (0: no timer)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "action": self.action, "conditions": list(self.conditions),
                "decisions": self.decisions, "text": self.text, "reason": self.reason, "detail": self.detail,
                "backNextStart": self.back_next_start, "offer": dict(self.offer) if self.offer else None,
                "note": self.note, "recheckS": self.recheck_s, "watch": list(self.watch), "remindS": self.remind_s,
                "label": LABEL if self.mode == "online-only" else "",
                # The status pill of the online-only page, signed in and not (the page spells no word itself).
                "pill": {"online": PILL_ONLINE, "signedOut": PILL_SIGNED_OUT} if self.mode == "online-only" else None}


class StorageMode:
    """The state machine: the set of conditions in force and the mode they give."""

    def __init__(self) -> None:
        self.mode: Mode = "device"
        self.active: frozenset[Condition] = frozenset()
        self._free_at_hit = 0  # free bytes the estimate showed when the quota was hit (0: not known)
        # Conditions that cleared in this session: watched while the offer stands, as they can come back.
        self._cleared: frozenset[Condition] = frozenset()

    def _step(self, event: Event, active: frozenset[Condition], note: str = "") -> Decision:
        key = (self.mode, event, bool(active))
        if key not in TRANSITIONS:
            raise ValueError(f"no transition for {key!r}")
        self.mode, action = TRANSITIONS[key]
        self._cleared = frozenset() if self.mode == "device" else (self._cleared | (self.active - active)) - active
        self.active = active
        return self._decision(action, note or (NOTES["withdrawn"] if action == "withdraw-offer" else ""))

    def on(self, event: str, facts: Mapping[str, Any] | None = None, condition: str = "") -> Decision:
        """One entry point for the adapters: ``event`` with its facts (start, check, hit, accept) or its
        condition (hit, clear)."""
        facts = facts or {}
        if event == "start":
            return self.start(conditions_from_facts(facts))
        if event == "hit":
            return self.hit(condition, estimate=facts.get("estimate"))
        if event == "clear":
            return self.clear(condition)
        if event == "check":
            return self.check(facts)
        if event == "accept":
            return self.accept(facts)
        if event == "decline":
            return self._step("decline", self.active, NOTES["declined"])
        if event == "remind":
            return self._step("remind", self.active)
        if event == "switched":
            return self._step("switched", self.active)
        if event == "downloaded":
            return self._step("downloaded", self.active, NOTES["switched" if facts.get("done") is True else "unfinished"])
        raise ValueError(f"unknown storage event {event!r}")

    def start(self, conditions: Iterable[str]) -> Decision:
        """A page start with the facts known then (IndexedDB probe, runtime, stored policy)."""
        self._free_at_hit = 0
        self.active, self._cleared = frozenset(), frozenset()  # a new session: nothing cleared in it yet
        return self._step("start", _checked(conditions))

    def hit(self, condition: str, estimate: Any = None) -> Decision:
        """A condition met during the session (a write hit the quota, the server shipped the policy).
        ``estimate``: the storage estimate at that moment, for a quota hit (what free space must grow from)."""
        cond = _checked([condition])
        if "quota-exhausted" in cond and "quota-exhausted" not in self.active:
            self._free_at_hit = free_bytes(estimate) or 0
        return self._step("hit", self.active | cond)

    def clear(self, condition: str) -> Decision:
        """A condition that no longer holds (space freed, policy lifted, persistence granted)."""
        cond = _checked([condition])
        stuck = sorted(c for c in cond if c not in CLEARABLE)
        if stuck:
            raise ValueError(f"{stuck[0]!r} cannot clear during a session: the next start decides again")
        return self._step("clear", self.active - cond)

    def check(self, facts: Mapping[str, Any]) -> Decision:
        """The watched facts gathered again (``estimate``, ``persisted``, ``policy``): conditions that can clear
        are re-judged from the facts present; absent facts change nothing (offline: no policy to read)."""
        if self.mode == "device":
            return self._step("check", self.active)
        active = set(self.active)
        for cond, holds in self._judged(facts).items():
            if holds:
                active.add(cond)
            else:
                active.discard(cond)
        return self._step("check", frozenset(active))

    def _judged(self, facts: Mapping[str, Any]) -> dict[Condition, bool]:
        policy = facts.get("policy")
        policy = policy if isinstance(policy, Mapping) else {}
        out: dict[Condition, bool] = {}
        free = free_bytes(facts.get("estimate"))
        if free is not None and "quota-exhausted" in self.active:  # only a failed write says "full"
            out["quota-exhausted"] = free < self._free_at_hit + RESUME_FREE_BYTES
        elif free is not None and "quota-exhausted" in self._cleared:  # freed, offered: filled again?
            out["quota-exhausted"] = free < self._free_at_hit + WITHDRAW_FREE_BYTES
        if isinstance(policy.get("offlineData"), bool):
            out["policy-no-offline"] = policy["offlineData"] is False
        persisted, required = facts.get("persisted"), policy.get("requirePersistence")
        if persisted is True or required is False:
            out["persist-refused"] = False
        elif persisted is False and required is True:
            out["persist-refused"] = True
        return out

    def accept(self, facts: Mapping[str, Any]) -> Decision:
        """The user accepted the offer. Facts: ``unsent`` (changes waiting in memory), ``audit`` (access
        events waiting), ``sending`` (a sync round running), ``unresolved`` (conflicted or refused changes, kept
        in memory for the user's decision), ``online``. The memory store is forgotten in the switch, so it is
        safe only when all of it has reached the server. The watched facts (``estimate``, ``persisted``,
        ``policy``, as for :meth:`check`) are judged first: a condition back since the last check withdraws the
        offer instead, and nothing is stored. The policy must have been read for this accept: without it, the
        administrator's word since the last check is unknown, so not yet."""
        if self.mode == "offered":
            back = {c for c, holds in self._judged(facts).items() if holds}
            if back:
                return self._step("accept", self.active | frozenset(back))
        if _count(facts.get("unresolved")):
            return self._step("accept-not-yet", self.active, NOTES["unresolved"])
        # Offline is said before "on its way": nothing can be sent until the device connects anyway (an access
        # record of the chart just read always waits offline), and connecting is what the user can do.
        if facts.get("online") is not True:
            return self._step("accept-not-yet", self.active, NOTES["offline"])
        unsent = _count(facts.get("unsent")) + _count(facts.get("audit")) + (1 if facts.get("sending") else 0)
        if unsent:
            return self._step("accept-not-yet", self.active, NOTES["unsent"])
        policy = facts.get("policy")
        if self.mode == "offered" and not (isinstance(policy, Mapping) and isinstance(policy.get("offlineData"), bool)):
            return self._step("accept-not-yet", self.active, NOTES["unconfirmed"])
        return self._step("accept", self.active, NOTES["switching"])

    def _decision(self, action: Action, note: str) -> Decision:
        conds = tuple(c for c in CONDITIONS if c in self.active)
        decisions: Literal["browser", "server"] = "server" if "runtime-failed" in conds else "browser"
        if self.mode == "device":
            return Decision("device", action, conds, decisions, "", "", "", note=note)
        watching = self.mode in ("online-only", "offered") and bool(conds) and all(c in CLEARABLE for c in conds)
        watch = tuple(sorted({CLEARABLE[c] for c in conds} | {"policy"})) if watching else ()
        recheck = RECHECK_S if watching else 0
        if not conds and self.mode == "offered":  # watched too: what cleared may come back before the accept
            return Decision("online-only", action, conds, decisions, OFFERED_TEXT, OFFER["text"], CONSEQUENCE,
                            offer=OFFER, note=note, recheck_s=RECHECK_S,
                            watch=tuple(sorted({CLEARABLE[c] for c in self._cleared} | {"policy"})))
        if not conds:  # declined: still in memory for now; what cleared is still watched (it may come back)
            return Decision("online-only", action, conds, decisions, DECLINED_TEXT,
                            "the reason has cleared; OmniCare offers to keep data on this device again later.",
                            CONSEQUENCE, back_next_start=True, note=note, recheck_s=RECHECK_S,
                            watch=tuple(sorted({CLEARABLE[c] for c in self._cleared} | {"policy"})),
                            remind_s=OFFER_AGAIN_S if action == "back-at-next-start" else 0)
        reason = REASONS[conds[0]]
        return Decision("online-only", action, conds, decisions, PREFIX + reason, reason,
                        f"{CONSEQUENCE} {WHAT_CLEARS[conds[0]]}", note=note, recheck_s=recheck, watch=watch)


def keeps_nothing(mode: str) -> bool:
    """True in every online-only mode (also while an offer to keep data again stands or was declined)."""
    return mode in _ONLINE_ONLY_MODES


def patients_summary(count: int, mode: str, shown: int | None = None) -> str:
    """The line above the patient list: how many, and where they are read from — on a device that keeps
    nothing, "on this device" would be untrue (``mode``: :attr:`StorageMode.mode`, or "device"). ``shown``:
    how many the list draws when that is fewer (a page: "Showing 50 of 9,090 patients ...")."""
    n = f"{count:,} patient{'' if count == 1 else 's'}"
    if shown is not None and shown < count:
        n = f"Showing {shown:,} of {n}"
    if keeps_nothing(mode):
        return f"{n} · read from the server, nothing kept on this device"
    return f"{n} on this device"


def free_bytes(estimate: Any) -> int | None:
    """Free bytes from ``navigator.storage.estimate()`` (``{usage, quota}``), or None when it says nothing usable."""
    if not isinstance(estimate, Mapping):
        return None
    usage, quota = estimate.get("usage"), estimate.get("quota")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in (usage, quota)):
        return None
    assert isinstance(usage, int | float) and isinstance(quota, int | float)  # narrowed just above
    return max(0, int(quota) - int(usage))


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _checked(conditions: Iterable[str]) -> frozenset[Condition]:
    out: set[Condition] = set()
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown storage condition {c!r}")
        out.add(c)  # narrowed by the membership test just above
    return frozenset(out)


def conditions_from_facts(facts: Mapping[str, Any]) -> list[Condition]:
    """The adapters' facts -> conditions. Facts (all optional, wire names of PROTOCOL.md):

    ``idb`` false = IndexedDB missing or would not open; ``persisted`` false = persistence refused (counts only
    with ``policy.requirePersistence``); ``quota`` true = a write raised QuotaExceededError; ``runtime`` false =
    WebAssembly/Pyodide did not start; ``policy.offlineData`` false = shared workstation, no offline data."""
    policy = facts.get("policy") or {}
    if not isinstance(policy, Mapping):
        raise ValueError("policy must be an object")
    out: list[Condition] = []
    if facts.get("idb") is False:
        out.append("idb-unavailable")
    if facts.get("persisted") is False and policy.get("requirePersistence") is True:
        out.append("persist-refused")
    if facts.get("quota") is True:
        out.append("quota-exhausted")
    if facts.get("runtime") is False:
        out.append("runtime-failed")
    if policy.get("offlineData") is False:
        out.append("policy-no-offline")
    return out


def decide(facts: Mapping[str, Any]) -> Decision:
    """One-shot decision at start (the server's /api/device/storage-mode and the browser's first question)."""
    return StorageMode().start(conditions_from_facts(facts))
