"""Offline PIN attempts: an escalating delay after a few failures and a wipe after too many (sans-IO).

A stolen tablet's attacker can try PINs in the app. The policy (configurable, defaults below): the first
``free_attempts`` (3) wrong PINs cost nothing; each further failure makes the next attempt wait
``base_delay * 2**(k-1)`` seconds (30 s, 60 s, 120 s, ... at most ``max_delay``); the ``wipe_after``-th (10th)
consecutive failure erases the device's data. The state is a small JSON object the adapter stores beside the
keyring (IndexedDB ``meta``), so the count survives reloads and reboots; the clock is passed in.

This does not stop an offline attack on a COPIED IndexedDB (that is bounded only by the PBKDF2 cost, see
docs/SECURITY.md); it stops guessing through the app itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class PinPolicy:
    free_attempts: int = 3
    wipe_after: int = 10
    base_delay: float = 30.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.free_attempts < self.wipe_after:
            raise ValueError("PinPolicy: need 1 <= free_attempts < wipe_after")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("PinPolicy: need 0 <= base_delay <= max_delay")


@dataclass(frozen=True)
class PinState:
    failures: int = 0
    not_before: float = 0.0  # wall-clock seconds; no attempt is checked before this time
    reported: int = 0  # failures already reported to the audit trail

    def to_json(self) -> str:
        return json.dumps({"failures": self.failures, "notBefore": self.not_before, "reported": self.reported})

    @classmethod
    def from_json(cls, raw: str | None) -> PinState:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(failures=max(0, int(data.get("failures", 0))), not_before=float(data.get("notBefore", 0.0)),
                       reported=max(0, int(data.get("reported", 0))))
        except (ValueError, TypeError, AttributeError):
            # A damaged counter must not reset the attacker's budget: treat it as one short of the wipe.
            return cls(failures=PinPolicy().wipe_after - 1, not_before=0.0)


@dataclass(frozen=True)
class PinVerdict:
    """After a failure: ``wipe`` now, or wait ``delay`` seconds before the next attempt (0 = at once)."""

    state: PinState
    wipe: bool
    delay: float
    attempts_left: int


def pin_wait(state: PinState, *, now: float) -> float:
    """Seconds the user must still wait before an attempt is checked (0 = may try now)."""
    return max(0.0, state.not_before - now)


def pin_failed(state: PinState, policy: PinPolicy, *, now: float) -> PinVerdict:
    failures = state.failures + 1
    left = max(0, policy.wipe_after - failures)
    if failures >= policy.wipe_after:
        return PinVerdict(PinState(failures, 0.0, state.reported), wipe=True, delay=0.0, attempts_left=0)
    over = failures - policy.free_attempts
    delay = 0.0 if over <= 0 else min(policy.max_delay, policy.base_delay * 2 ** (over - 1))
    return PinVerdict(PinState(failures, now + delay, state.reported), wipe=False, delay=delay, attempts_left=left)


def pin_succeeded(state: PinState) -> tuple[PinState, int]:
    """A correct PIN: a fresh state, and how many failures since the last report must now be reported."""
    return PinState(), max(0, state.failures - state.reported)
