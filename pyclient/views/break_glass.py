"""Break-the-glass (emergency access outside the care team): the rules server and device share.

One rule, one place: the server (``omnicare.access.services`` and ``omnicare.access.lookup``) imports the
reason rule, the lookup rule and the rate limit from here, and the device checks the same rules before it
asks, so a clinician learns "give a reason of at least 10 characters" before anything leaves the tablet.

The lookup is front-desk style: the clinician types a family name and a full birth date, or an MRN, and the
server answers only *whether* exactly one patient outside their care team matches, with an opaque patient id
to request access for. It never returns a name, a birth date or an address: nothing the clinician did not
type. Pure: the adapter passes the clock (epoch seconds) and the device's local time of day for the words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pyclient import blindindex as bi
from pyclient.chart import DateOrder, normalize_query
from pyclient.errors import ValidationFailed

__all__ = [
    "LOOKUP_LIMIT",
    "LOOKUP_WINDOW_S",
    "MIN_REASON",
    "PERMISSION",
    "active_grants",
    "banner_words",
    "lookup_query",
    "lookup_words",
    "reason_problem",
]

#: Shortest reason the server accepts (audited as the justification of the override).
MIN_REASON: Final = 10
MAX_REASON: Final = 2000
#: Lookups per user per window: enough for a real emergency, too few to walk the patient index.
LOOKUP_LIMIT: Final = 10
LOOKUP_WINDOW_S: Final = 600
#: The pseudo resource type and action the server's permission answer carries for roles that may break the
#: glass (``omnicare.access.api``): the device shows the control only when it is there.
PERMISSION: Final = ("EmergencyAccess", "create")

_MRN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{2,63}")
ONLINE_ONLY: Final = ("Emergency access needs a connection to the server: you are offline. "
                      "Connect to the network and try again.")


def reason_problem(reason: str) -> str | None:
    """Why ``reason`` is refused as the justification for emergency access, or None when it is accepted."""
    text = (reason or "").strip()
    if len(text) < MIN_REASON:
        return f"Give the reason for emergency access (at least {MIN_REASON} characters)."
    if len(text) > MAX_REASON:
        return f"Keep the reason under {MAX_REASON} characters."
    return None


def lookup_query(*, family: str = "", birth_date: str = "", mrn: str = "",
                 date_order: DateOrder = "mdy") -> dict[str, str]:
    """The lookup the server is asked for: ``{"mrn": ...}`` or ``{"family": ..., "birthDate": YYYY-MM-DD}``.

    Raises :class:`ValidationFailed` with a sentence per field. A partial name or date is refused: the
    lookup confirms one patient the clinician already knows, it is not a search of the hospital's index.
    """
    family, birth_date, mrn = (family or "").strip(), (birth_date or "").strip(), (mrn or "").strip()
    if mrn:
        if not _MRN.fullmatch(mrn):
            raise ValidationFailed("Check the medical record number.",
                                   fields={"mrn": "Type the whole medical record number, e.g. MRN-000021."})
        return {"mrn": mrn}
    errors: dict[str, str] = {}
    if len(family) < 2 or len(family) > 100 or any(c in family for c in ",|$\\"):
        errors["family"] = "Type the patient's family name (letters, spaces, hyphens or apostrophes)."
    day = ""
    if not birth_date:
        errors["birth_date"] = "Type the full birth date."
    else:
        try:
            day = normalize_query("birthdate", birth_date, date_order)
        except bi.InvalidQuery as exc:
            errors["birth_date"] = str(exc)
        else:
            if len(day) != 10:
                errors["birth_date"] = "Type the full birth date: day, month and year."
    if errors:
        if "family" in errors and "birth_date" in errors and not family and not birth_date:
            raise ValidationFailed("Type a family name and birth date, or a medical record number.", fields=errors)
        raise ValidationFailed("Please correct the highlighted fields.", fields=errors)
    return {"family": family, "birthDate": day}


def lookup_words(matches: int) -> str:
    """The lookup's answer in words (the count is all the server says)."""
    if matches == 1:
        return ("1 match outside your patients. You can request emergency access to this patient's chart; "
                "the request and everything you open are recorded.")
    if matches == 0:
        return "No patient outside your care team matches. Check the spelling and the birth date."
    return (f"{matches} patients match. Use the medical record number to find the one you need.")


INTRO: Final = ("For a patient who is not on your care team and needs care now. Find them by family name and "
                "full birth date, or by medical record number: you see only whether one patient matches. "
                "Access lasts a few hours, is recorded with your reason, and the chart is removed from this "
                "device when it ends.")
NOT_ALLOWED: Final = "Your role may not use emergency access. Ask a physician or nurse on duty."


def removed_words(count: int) -> str:
    """Said when emergency access has ended and the chart(s) left the device."""
    if count == 1:
        return "Emergency access has ended. That patient's chart has been removed from this device."
    return f"Emergency access has ended for {count} patients. Their charts have been removed from this device."


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} hour{'s' if h != 1 else ''} {m} minute{'s' if m != 1 else ''}"
    if h:
        return f"{h} hour{'s' if h != 1 else ''}"
    if m:
        return f"{m} minute{'s' if m != 1 else ''}"
    return "less than a minute"


def banner_words(*, expires_s: float, now_s: float, local_time: str) -> str:
    """The banner on a patient's screens while an emergency grant lasts: when it ends, in words."""
    return (f"This patient is not on your care team. Your access ends at {local_time} "
            f"(in {_duration(expires_s - now_s)}), and then the chart is removed from this device. "
            "Everything you open is recorded.")


def active_grants(grants: Sequence[Mapping[str, Any]], now_s: float) -> tuple[list[dict[str, Any]], list[str]]:
    """(grants still running, patient ids whose grant has ended by the clock) from the device's grant list.

    Each grant is ``{"id", "patientId", "expiresS"}``; a patient with a second, running grant is kept.
    """
    live = [dict(g) for g in grants if not g.get("ended") and float(g.get("expiresS", 0)) > now_s]
    keep = {str(g.get("patientId")) for g in live}
    return live, sorted({str(g.get("patientId")) for g in grants} - keep)
