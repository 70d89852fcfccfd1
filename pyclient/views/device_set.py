"""The "On this device" screen (issue 13, item 1): what the device holds, the space it uses, and why.

Words only; the decision is :func:`pyclient.device_set.plan_device_set`. Names come from the adapter
(decrypted in memory for the patients the device holds; never stored in plaintext).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..chart import SHOW_MORE
from ..device_set import LIKELY, DevicePlan, reason_code

_WORDS: dict[str, str] = {
    "pending": "changes not yet sent",
    "conflict": "a conflict to resolve",
    "on-demand": "opened on this device",
    "care-team": "your care team",
    "appointment-today": "appointment today",
    "appointment-tomorrow": "appointment tomorrow",
    "appointment-week": "appointment this week",
    "grant": "emergency access",
    LIKELY: "likely needed",
}


def reason_words(reason: str) -> str:
    """``ward:Ward 3`` → "Ward 3 inpatient"; codes → plain words; anything unknown is not shown raw."""
    code, _, arg = reason.partition(":")
    if code == "ward":
        return f"{arg} inpatient" if arg else "ward inpatient"
    if code == "ward-recent":
        return f"recently on {arg}" if arg else "recently on your ward"
    return _WORDS.get(code, "in your patients")


def size_words(n: int) -> str:
    """Decimal units, as storage is sold and as the seed states budgets (500 MB, 1 GB)."""
    if n >= 1_000_000_000:
        return f"{n / 1_000_000_000:.1f} GB".replace(".0 GB", " GB")
    if n >= 1_000_000:
        return f"{round(n / 1_000_000)} MB"
    if n >= 1_000:
        return f"{round(n / 1_000)} kB"
    return f"{n} bytes" if n != 1 else "1 byte"


def _first_upper(text: str) -> str:
    return text[:1].upper() + text[1:]  # not str.capitalize(): it would lower "Ward 3"


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def device_set_view(plan: DevicePlan, *, names: Mapping[str, str], online: bool,
                    limit: int | None = None) -> dict[str, Any]:
    """{title, summary, space, spaceHow (measured or estimated, in words), percent, warning, notHeld,
    rows[{patientId, name, why, pinned, size}], more}: ``rows`` for the first ``limit`` patients held (None:
    all), the counts and the space for all of them."""
    rows = []
    for h in plan.held if limit is None else plan.held[:max(0, limit)]:
        seen: list[str] = []
        for r in h.reasons:
            w = reason_words(r)
            if w not in seen:
                seen.append(w)
        rows.append({
            "patientId": h.patient_id,
            "name": names.get(h.patient_id) or "Patient not yet downloaded",
            "why": _first_upper(", ".join(seen)),
            "pinned": h.pinned,
            "unsynced": any(reason_code(r) in ("pending", "conflict") for r in h.reasons),
            "size": size_words(h.bytes),
        })
    percent = min(100, round(100 * plan.bytes_used / plan.budget_bytes)) if plan.budget_bytes else 100
    warning = None
    if plan.over_budget:
        warning = ("The patients this device must keep need more than its storage budget: they are kept, and "
                   "no other patient is downloaded. Ask an administrator for a larger budget.")
    if plan.not_held:
        more = _n(plan.not_held, "other patient you may see is", "other patients you may see are")
        not_held = (f"{more} not on this device. "
                    + ("Search for one on the Patients screen: it is downloaded when you open it."
                       if online else "They can be opened when this device is online again."))
    else:
        not_held = "Every patient you may see is on this device."
    return {
        "title": "On this device",
        "empty": "No patients on this device yet.",
        "summary": _n(len(plan.held), "patient", "patients") + " on this device",
        "space": (f"{size_words(plan.bytes_used)} used of {size_words(plan.budget_bytes)}" if plan.measured
                  else f"About {size_words(plan.bytes_used)} used of {size_words(plan.budget_bytes)}"),
        "spaceHow": ("Measured on this device." if plan.measured
                     else "Estimated from the size of the records: this device has not measured its storage yet."),
        "percent": percent,
        "warning": warning,
        "notHeld": not_held,
        "rows": rows,
        "rowsTotal": len(plan.held),  # the rows there are ("Show more" while more than ``rows``)
        "more": SHOW_MORE,
    }


def online_only_device_view() -> dict[str, Any]:
    """The "On this device" screen of a device that keeps nothing (online only, issue 13 item 4): no budget, no
    list — a budget and "0 patients on this device" would suggest the records are merely missing."""
    return {
        "title": "On this device",
        "empty": "Nothing is kept on this device while it is online only.",
        "summary": "No patient data is kept on this device",
        "space": "Online only: charts are read from the server when you open them and forgotten when you lock "
                 "or close OmniCare.",
        "spaceHow": "",
        "percent": None,  # no budget: the screen draws no meter
        "warning": None,
        "notHeld": "Every patient you may see can be opened while this device is online.",
        "rows": [],
        "rowsTotal": 0,
        "more": SHOW_MORE,
    }
