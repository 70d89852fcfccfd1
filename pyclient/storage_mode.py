"""Where this device keeps patient data: on the device (offline-capable) or nowhere (online only) — issue 13 item 4.

A device that cannot keep data safely still has to be usable: it switches itself to ONLINE ONLY — the same
screens, records read from the server into memory, changes sent at once, nothing written at rest, everything
forgotten on lock. This module is the one place that decides it, as a table (like h11's ``_state.py``): the
browser asks it through the Python runtime, and when that runtime itself cannot start the server answers
with this same module (``POST /api/device/storage-mode``), so one rule and one set of words apply everywhere.

Sans-IO: the adapters report *facts* (IndexedDB would not open, a write hit the quota, the runtime failed,
the policy the server shipped); this module turns them into a mode, the action the app must take on the
change, and the words the status says. No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "ACTIONS", "CONDITIONS", "REASONS", "TRANSITIONS", "Action", "Condition", "Decision", "Event", "Mode",
    "StorageMode", "conditions_from_facts", "decide",
]

Mode = Literal["device", "online-only"]
Condition = Literal["idb-unavailable", "persist-refused", "quota-exhausted", "runtime-failed", "policy-no-offline"]
Event = Literal["hit", "clear", "start"]
# What the app does on a change of mode:
#   none            nothing to do (the mode did not change)
#   go-online-only  push what is waiting, forget the local store, continue in memory (no new sign-in)
#   start-online-only   (at start) open in memory from the beginning
#   back-at-next-start  the condition cleared: this session stays in memory; the next start keeps data again
Action = Literal["none", "go-online-only", "start-online-only", "back-at-next-start"]

CONDITIONS: tuple[Condition, ...] = get_args(Condition)
ACTIONS: tuple[Action, ...] = get_args(Action)

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
PREFIX = "Online only: this device keeps no patient data — "
SHORT = "Online only: this device keeps no patient data"
CONSEQUENCE = ("Records are read from the server and changes are sent to it at once, so you need a connection. "
               "Locking or closing the tab forgets everything on this screen.")

# (mode now, event, does any condition remain after the event) -> (mode next, action)
TRANSITIONS: Mapping[tuple[Mode, Event, bool], tuple[Mode, Action]] = {
    ("device", "start", False): ("device", "none"),
    ("device", "start", True): ("online-only", "start-online-only"),
    ("device", "hit", True): ("online-only", "go-online-only"),
    ("device", "clear", False): ("device", "none"),
    ("online-only", "start", True): ("online-only", "start-online-only"),
    ("online-only", "start", False): ("device", "none"),
    ("online-only", "hit", True): ("online-only", "none"),
    ("online-only", "clear", True): ("online-only", "none"),
    # Switching a running session back would need a PIN and a first sync in the middle of work: the session
    # stays in memory and the next start keeps data again (said in the status).
    ("online-only", "clear", False): ("online-only", "back-at-next-start"),
}


@dataclass(frozen=True)
class Decision:
    mode: Mode
    action: Action
    conditions: tuple[Condition, ...]
    # Decisions (views, validation, CDS) come from the browser's Python unless that runtime failed: then the
    # server runs the same pyclient functions behind /api/online/ (pyclient/PROTOCOL.md, "Online only").
    decisions: Literal["browser", "server"]
    text: str  # the status line ("" on a device that keeps data)
    reason: str  # the why ("" likewise)
    detail: str  # what it means for the user ("" likewise)
    back_next_start: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "action": self.action, "conditions": list(self.conditions),
                "decisions": self.decisions, "text": self.text, "reason": self.reason, "detail": self.detail,
                "backNextStart": self.back_next_start, "label": LABEL if self.mode == "online-only" else ""}


class StorageMode:
    """The state machine: the set of conditions in force and the mode they give."""

    def __init__(self) -> None:
        self.mode: Mode = "device"
        self.active: frozenset[Condition] = frozenset()
        self._back = False

    def _step(self, event: Event, active: frozenset[Condition]) -> Decision:
        key = (self.mode, event, bool(active))
        if key not in TRANSITIONS:
            raise ValueError(f"no transition for {key!r}")
        self.mode, action = TRANSITIONS[key]
        self.active = active
        if event == "start":
            self._back = False
        if action == "back-at-next-start":
            self._back = True
        if action in ("go-online-only", "start-online-only"):
            self._back = False
        return self._decision(action)

    def start(self, conditions: Iterable[str]) -> Decision:
        """A page start with the facts known then (IndexedDB probe, runtime, stored policy)."""
        return self._step("start", _checked(conditions))

    def hit(self, condition: str) -> Decision:
        """A condition met during the session (a write hit the quota, the server shipped the policy)."""
        return self._step("hit", self.active | _checked([condition]))

    def clear(self, condition: str) -> Decision:
        """A condition that no longer holds (space freed, policy lifted, storage became available)."""
        return self._step("clear", self.active - _checked([condition]))

    def _decision(self, action: Action) -> Decision:
        conds = tuple(c for c in CONDITIONS if c in self.active)
        decisions: Literal["browser", "server"] = "server" if "runtime-failed" in conds else "browser"
        if self.mode == "device":
            return Decision("device", action, conds, decisions, "", "", "")
        if not conds:  # cleared during the session: still in memory until the next start
            return Decision("online-only", action, conds, decisions, SHORT + " until OmniCare is next started.",
                            "the reason has cleared; the next start keeps data on this device again.", CONSEQUENCE,
                            back_next_start=self._back)
        reason = REASONS[conds[0]]
        return Decision("online-only", action, conds, decisions, PREFIX + reason, reason, CONSEQUENCE)


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
