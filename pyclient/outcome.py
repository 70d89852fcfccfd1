"""Reading the server's answers on the client: FHIR OperationOutcomes and the device-revoked signal.

One parser for every client path (the sync machine's rejected mutations, the browser adapter's HTTP
answers). The wire (PROTOCOL.md §9 "Outcomes"): every 4xx/5xx body is an OperationOutcome; the first issue's
``details.coding[0].code`` names the cases a client must act on (``device-revoked``, ``mfa-required``,
``password-change-required``), ``diagnostics`` is a sentence to show as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["DEVICE_REVOKED", "MFA_REQUIRED", "NO_RESULT", "OFFLINE", "PASSWORD_CHANGE_REQUIRED", "SERVER_ERROR",
           "SIGN_IN_AGAIN", "BROWSER_WORDS", "code", "device_revoked", "needs_sign_in", "sign_in_paused",
           "sync_failure", "text", "unreachable", "words_js"]

DEVICE_REVOKED = "device-revoked"
MFA_REQUIRED = "mfa-required"
PASSWORD_CHANGE_REQUIRED = "password-change-required"  # noqa: S105 - an outcome code, not a secret
REJECTED = "rejected by the server"
#: A sync round's ``last_error`` when the server gave no usable answer (:func:`sync_failure`); the status line
#: (pyclient.views.status) tells "server unreachable" from these with :func:`unreachable`.
OFFLINE = "offline"
SIGN_IN_AGAIN = "sign in again to sync"
SERVER_ERROR = "server error"
NO_RESULT = "server returned no result for some changes"

#: What the browser says when neither the server nor its own Python can word it: no server answered (the
#: sign-in screen runs before Python has loaded), or the device was revoked (Python has just erased itself).
#: ``pwa/app/words.js`` is generated from this table (``scripts/gen_words_js.py``); tests/test_js_words.py
#: fails when the file is stale and when any other JS file spells one of these sentences.
BROWSER_WORDS: Mapping[str, str] = {
    "noServer": "No connection to the server.",
    "noServerNothingSaved": "No connection to the server. Nothing was saved.",
    "signInFailed": "Sign-in failed.",
    "revokedPill": "Device revoked",
    "revokedTitle": "This device was revoked",
    "revokedBody": ("An administrator reported this device lost or stolen. All patient data, keys and unsynced "
                    "changes have been erased from it."),
    "revokedHelp": ("If this is a mistake, contact your OmniCare administrator. They can register the device "
                    "again; you will then sign in and download your patients anew."),
    "revokedBack": "Back to sign-in",
}


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


def needs_sign_in(status: int) -> bool:
    """A 401/403 on a sync path: the session ended (or the device is not bound to it): sign in again."""
    return status in (401, 403)


def sync_failure(status: int) -> str:
    """The sync round's ``last_error`` for an answer that was not 200 (status 0: no answer at all)."""
    return OFFLINE if status == 0 else SIGN_IN_AGAIN if needs_sign_in(status) else f"{SERVER_ERROR} {status}"


def unreachable(last_error: str | None) -> bool:
    """Whether ``last_error`` means the server did not answer usefully (not: it refused one change)."""
    error = last_error or ""
    return error in (OFFLINE, NO_RESULT) or error.startswith(SERVER_ERROR)


def sign_in_paused(retry_after_s: int | None) -> str:
    """The sentence of a 429 on sign-in, naming the wait (the server writes it as the outcome's diagnostics, so
    the sign-in screen shows it as it is, before the runtime has loaded: PROTOCOL.md §9)."""
    s = retry_after_s or 0
    wait = "later" if s <= 0 else f"in {s} seconds" if s < 90 else f"in {-(-s // 60)} minutes"
    return f"Too many failed sign-ins. For your security, sign-in is paused: try again {wait}."


def words_js() -> str:
    """The text of ``pwa/app/words.js``: :data:`BROWSER_WORDS` as a frozen ES module (pure: the script writes it)."""
    body = "".join(f"  {k}: {json.dumps(v, ensure_ascii=False)},\n" for k, v in BROWSER_WORDS.items())
    return ("// Generated from pyclient.outcome.BROWSER_WORDS by scripts/gen_words_js.py: do not edit.\n"
            "// The words the browser says when neither the server nor its Python can (PROTOCOL.md §9).\n"
            f"export const WORDS = Object.freeze({{\n{body}}});\n")
