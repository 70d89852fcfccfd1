"""Unsaved work kept across the idle lock (issue 18 item 10): which forms keep a draft, and what it holds.

When the lock fires while a form is open, the adapter seals the typed values with the device keys (the same
envelope as every record: never plaintext at rest) under one meta key, and after unlock the same form opens
with them. A draft lives only on the device: it is not a record, has no outbox entry and never syncs. It is
discarded when the form is saved, when the clinician cancels it, and on sign-out (the device is wiped).
Pure: no clock or I/O; the adapter passes ``saved_at`` (epoch seconds) and does the sealing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["DRAFT_FORMS", "DRAFT_TYPE", "META_DRAFT", "draft_from", "draft_matches", "draft_words"]

#: Forms whose half-typed values survive a lock, with the fields kept (a PIN or password never is).
DRAFT_FORMS: Final[Mapping[str, tuple[str, ...]]] = {
    "note": ("title", "text"),
    "vitals": ("sbp", "dbp", "hr", "rr", "temp", "spo2", "weight", "taken_at"),
    "problem": ("text", "onset"),
    "problem-resolve": ("abatement",),
    "allergy": ("substance", "reaction", "criticality"),
    "medication": ("name", "dosage"),
    "medication-change": ("dosage",),
    "medication-stop": ("reason",),
    "demographics": ("phone", "birth_date", "gender"),
}
#: Envelope resource type (bound into the AAD, so a draft blob cannot be swapped for a record) and meta key.
DRAFT_TYPE: Final = "Draft"
META_DRAFT: Final = "draft.sealed"
MAX_CHARS: Final = 100_000  # a note is long; a pasted book is not a draft


def draft_from(*, patient_id: str, form: str, values: Mapping[str, Any], saved_at: float,
               target: str = "") -> dict[str, Any] | None:
    """The draft to seal for ``form`` on ``patient_id``, or None when there is nothing worth keeping."""
    fields = DRAFT_FORMS.get(form)
    if fields is None or not patient_id:
        return None
    kept = {k: str(values[k])[:MAX_CHARS] for k in fields if isinstance(values.get(k), (str, int, float))}
    if not any(v.strip() for v in kept.values()):
        return None  # an empty form is not unsaved work
    return {"patientId": patient_id, "form": form, "target": target, "values": kept, "savedAt": saved_at}


def draft_matches(draft: Mapping[str, Any] | None, *, patient_id: str, form: str, target: str = "") -> bool:
    """Whether ``draft`` belongs in the form being opened (same patient, form and medication)."""
    if not draft:
        return False
    return draft.get("patientId") == patient_id and draft.get("form") == form \
        and (draft.get("target") or "") == (target or "")


def draft_words() -> str:
    """What the restored form says above its fields."""
    return ("Your unsaved entry was kept while the app was locked. Check it, then save it or cancel it.")
