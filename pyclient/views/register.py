"""The registration screen's words (issue 18 item 1): possible duplicates said plainly before saving.

The rules (MRN, checks, what counts as a match) are :mod:`pyclient.registration`; this module only words them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["duplicate_warning", "registered_message"]

_GENDER = {"female": "female", "male": "male", "other": "other gender", "unknown": "gender unknown"}


def _mrn(mrn: str) -> str:
    return mrn if mrn.upper().startswith("MRN") else f"MRN {mrn}"  # never "MRN MRN-000007"


def _born(date: str) -> str:
    return f"born {date}" if date else "birth date not recorded"


def duplicate_warning(matches: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What the screen shows when the new patient may already be on this device (None: no possible match)."""
    if not matches:
        return None
    n = len(matches)
    return {
        "title": "This patient may already be registered" if n == 1 else f"{n} patients on this device look like this one",
        "message": ("Check before you register a second record for the same person: open the existing chart if it "
                    "is the same patient, or register anyway if it is someone else."),
        "items": [{"id": str(m["id"]),
                   "text": f"{m['display']} · {_born(str(m.get('birthDate') or ''))}"
                           f"{' · ' + _GENDER.get(str(m.get('gender')), '') if m.get('gender') else ''}"
                           f"{' · ' + _mrn(str(m['mrn'])) if m.get('mrn') else ''}",
                   "why": "Matches on " + str(m["why"]) + "."} for m in matches],
        "open": "Open this chart",
        "anyway": "Register anyway: this is a different person",
    }


def registered_message(display: str, mrn: str, online: bool) -> str:
    """Said after saving (the chart opens at once). Nothing about sending: the banner outlives the sync, and the
    status bar already says honestly what is still waiting (``online`` is kept for callers, not used)."""
    del online
    return f"{display} is registered with MRN {mrn}. The chart is ready to use."
