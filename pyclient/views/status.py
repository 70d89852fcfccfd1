"""The always-visible status line, in plain words (issue 18, item 8).

Four connection states a clinician must tell apart: offline (this device has no network), server unreachable
(network, but the server did not answer), signed out of the server (changes wait for a sign-in), and synced.
"Synced" is said only when nothing is waiting, the connection works and the server acknowledged everything.
The device's own storage persistence is explained once elsewhere, never repeated on every status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyclient.outcome import unreachable


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def status_view(s: Mapping[str, Any], *, online: bool) -> dict[str, Any]:
    """{state, text, timeLabel, review} for ``s`` (``BrowserApp.status()``), with the browser on/offline.

    The one wording of the status line: the pill shows ``text`` as it is (issue 11 item 6), adding only the
    last-success time after ``timeLabel`` ("synced" / "last sync"; None when the device never synced), which the
    browser formats in its locale. ``review`` is where the "Review" link goes (conflicts first), or None.
    A locked device says "locked"; ``signedOut`` (no keyring: the sign-in screen) says "signed out"."""
    if s.get("signedOut") or s.get("locked"):
        words = "signed out" if s.get("signedOut") else "locked"
        state = "offline" if s.get("signedOut") and not online else "idle"
        return {"state": state, "text": f"{'Online' if online else 'Offline'} · {words}",
                "timeLabel": None, "review": None}
    pending, conflicted, rejected = int(s.get("pending") or 0), int(s.get("conflicted") or 0), int(s.get("rejected") or 0)
    unreadable, unverified = int(s.get("unreadableChanges") or 0), int(s.get("unverified") or 0)
    error = str(s.get("lastError") or "")
    if not online:
        conn, state = "Offline", "offline"
    elif s.get("needsLogin"):
        conn, state = "Signed out of the server: sign in to sync", "warn"
    elif unreachable(error):
        conn, state = "Server unreachable: changes are kept and sent when it answers", "warn"
    else:
        conn, state = "Online", "ok"
    parts = [conn]
    if s.get("syncing") and state == "ok":
        parts.append("syncing…")
    if pending:
        parts.append(_n(pending, "change waiting to be sent", "changes waiting to be sent"))
    if conflicted:
        parts.append(_n(conflicted, "conflict to review", "conflicts to review"))
    if rejected:
        parts.append(_n(rejected, "change refused", "changes refused"))
    if unreadable:
        parts.append(_n(unreadable, "change could not be read", "changes could not be read"))
    if unverified:
        parts.append(_n(unverified, "record not verified", "records not verified"))
    problems = conflicted or rejected or unreadable or unverified
    if state == "ok" and (problems):
        state = "warn"
    elif state == "ok" and pending:
        state = "pending"
    all_sent = not (pending or problems) and bool(s.get("synced"))
    time_label = None if not s.get("lastSuccess") else "synced" if all_sent and state == "ok" else "last sync"
    if not s.get("lastSuccess"):
        parts.append("not synced yet")
    review = "#/conflicts" if conflicted else "#/rejected" if rejected else None
    return {"state": state, "text": " · ".join(parts), "timeLabel": time_label, "review": review}


def status_views(s: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Both views, so the screen switches at once when the browser goes on- or offline."""
    return {"online": status_view(s, online=True), "offline": status_view(s, online=False)}


PERSISTENCE_NOTE = (
    "This browser may clear OmniCare's offline records when the device runs low on space. To keep them, "
    "install OmniCare on this device (browser menu, then Install app) or allow it to store data permanently. "
    "Changes you make are still sent to the server whenever you are online."
)
