"""Questions asked before a change that one tap would otherwise make (issue 18, item 9: allergy dropdowns)."""

from __future__ import annotations

from typing import Final

from pyclient import choices as ch

# The pick lists' own words, in a sentence (pyclient.choices).
_CRIT: Final = {c: w.lower() for c, w in ch.ALLERGY_CRITICALITY}
_STATUS: Final = {c: w.lower() for c, w in ch.ALLERGY_STATUS}


def allergy_change(substance: str, field: str, old: str, new: str) -> dict[str, str]:
    """{title, message, ok} for changing an allergy's criticality or status from the chart list."""
    words = _CRIT if field == "criticality" else _STATUS
    what = "criticality" if field == "criticality" else "status"
    name = substance or "this allergy"
    message = f"Change the {what} of {name} from {words.get(old, old or 'not set')} to {words.get(new, new)}?"
    if field == "status" and new != "active":
        message += " It will no longer be shown as an active allergy in order checks."
    return {"title": f"Change {name} {what}?", "message": message, "ok": f"Change to {words.get(new, new)}"}
