"""Reading the server's answers on the client: FHIR OperationOutcomes and the device-revoked signal.

One parser for every client path (the sync machine's rejected mutations, the browser adapter's HTTP
answers). The wire (PROTOCOL.md §9 "Outcomes"): every 4xx/5xx body is an OperationOutcome; the first issue's
``details.coding[0].code`` names the cases a client must act on (``device-revoked``, ``mfa-required``,
``password-change-required``), ``diagnostics`` is a sentence to show as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEVICE_REVOKED", "MFA_REQUIRED", "PASSWORD_CHANGE_REQUIRED", "code", "device_revoked", "text"]

DEVICE_REVOKED = "device-revoked"
MFA_REQUIRED = "mfa-required"
PASSWORD_CHANGE_REQUIRED = "password-change-required"  # noqa: S105 - an outcome code, not a secret
REJECTED = "rejected by the server"


def _issues(outcome: Any) -> list[Mapping[str, Any]]:
    issues = outcome.get("issue") if isinstance(outcome, Mapping) else None
    return [i for i in issues if isinstance(i, Mapping)] if isinstance(issues, list) else []


def code(outcome: Any) -> str | None:
    """The first issue's ``details.coding[0].code`` (e.g. ``"mfa-required"``), or None."""
    for issue in _issues(outcome)[:1]:
        details = issue.get("details")
        coding = details.get("coding") if isinstance(details, Mapping) else None
        if isinstance(coding, list) and coding and isinstance(coding[0], Mapping) and coding[0].get("code"):
            return str(coding[0]["code"])
    return None


def text(outcome: Any, fallback: str = REJECTED) -> str:
    """Every issue's words (diagnostics, else details.text, else the IssueType code) joined by '; '."""
    texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code") or "")
             for i in _issues(outcome)]
    return "; ".join(t for t in texts if t) or fallback


def device_revoked(status: int, body: str, device_header: str | None) -> bool:
    """A 403 that orders this device to wipe: the ``OmniCare-Device: revoked; wipe`` header, or the outcome's
    ``device-revoked`` code should a proxy drop the header."""
    if status != 403:
        return False
    if device_header and "revoked" in device_header.lower():
        return True
    return f'"{DEVICE_REVOKED}"' in body
