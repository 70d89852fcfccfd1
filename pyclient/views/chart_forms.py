"""Forms the full chart adds (issue 18 item 5): add and resolve a problem, and when vitals were taken.

Pure: the adapter passes ``now`` (ISO 8601 UTC), ``today`` (YYYY-MM-DD, the device's local date), the
device's UTC offset and the author reference. Errors are :class:`ValidationFailed` with one plain sentence
per field, shown next to it; nothing is queued until the form is right.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pyclient.chart import cc_text, code
from pyclient.errors import ValidationFailed
from pyclient.systems import SNOMED
from pyclient.views import caldate as cd
from pyclient.views.fullchart import plain_term

__all__ = [
    "COMMON_PROBLEMS",
    "CONDITION_CLINICAL",
    "no_known_allergies",
    "problem_new",
    "problem_resolve",
    "problem_rows",
    "vitals_effective",
]

FIX: Final = "Please correct the highlighted fields."
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
#: A short pick list (SNOMED CT) offered while typing; anything else is kept as free text.
COMMON_PROBLEMS: Final[Sequence[tuple[str, str]]] = (
    ("38341003", "Hypertension"),
    ("44054006", "Type 2 diabetes mellitus"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive pulmonary disease"),
    ("49436004", "Atrial fibrillation"),
    ("709044004", "Chronic kidney disease"),
    ("84114007", "Heart failure"),
    ("53741008", "Coronary artery disease"),
    ("55822004", "Hyperlipidemia"),
    ("40930008", "Hypothyroidism"),
    ("35489007", "Depressive disorder"),
    ("197480006", "Anxiety disorder"),
    ("69896004", "Rheumatoid arthritis"),
    ("396275006", "Osteoarthritis"),
    ("414916001", "Obesity"),
    ("233604007", "Pneumonia"),
    ("68566005", "Urinary tract infection"),
    ("444814009", "Viral sinusitis"),
    ("10509002", "Acute bronchitis"),
    ("271737000", "Anemia"),
    ("230690007", "Stroke"),
    ("22298006", "Myocardial infarction"),
)
_BY_NAME: Final = {name.casefold(): (c, name) for c, name in COMMON_PROBLEMS}
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOCAL: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?")
RESOLVABLE: Final = frozenset({"active", "recurrence", "relapse"})
#: Vitals entered later than this after they were taken belong in a late entry with a note, not this form.
MAX_BACKDATE_S: Final = 7 * 86400


def _date(text: str, field: str, errors: dict[str, str], *, today: str, what: str) -> str | None:
    t = (text or "").strip()
    if not t:
        return None
    if not _DATE.fullmatch(t):
        errors[field] = f"Write the {what} as year-month-day, for example 2024-03-18."
        return None
    if cd.parse_date(t) is None:
        errors[field] = f"{t} is not a date on the calendar."
        return None
    if t > today:
        errors[field] = f"The {what} cannot be in the future."
        return None
    return t


def problem_new(patient_id: str, *, id: str, text: str, onset: str, today: str, now: str,
                author: Mapping[str, str], birth_date: str = "") -> dict[str, Any]:
    """A new active problem-list Condition: coded (SNOMED) when the text is one of :data:`COMMON_PROBLEMS`,
    free text otherwise; onset optional (not in the future, not before birth)."""
    errors: dict[str, str] = {}
    name = " ".join((text or "").split())
    if not name:
        errors["text"] = "Enter the problem, for example Hypertension."
    elif len(name) > 200:
        errors["text"] = "Keep the problem under 200 characters."
    onset_d = _date(onset, "onset", errors, today=today, what="onset date")
    if onset_d and birth_date and onset_d < birth_date[:10]:
        errors["onset"] = "The onset date is before the patient's birth date."
    if errors:
        raise ValidationFailed(FIX, fields=errors)
    coded = _BY_NAME.get(name.casefold())
    concept: dict[str, Any] = ({"coding": [{"system": SNOMED, "code": coded[0], "display": coded[1]}], "text": coded[1]}
                               if coded else {"text": name})
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item",
                                  "display": "Problem List Item"}]}],
        "code": concept, "subject": {"reference": f"Patient/{patient_id}"},
        "recordedDate": now, "recorder": dict(author),
    }
    if onset_d:
        res["onsetDateTime"] = onset_d
    return res


def problem_resolve(res: dict[str, Any], *, abatement: str, today: str) -> dict[str, Any]:
    """Resolve a problem (in place): clinicalStatus resolved and abatementDateTime (default today)."""
    status = code(res.get("clinicalStatus")) or "active"
    if status not in RESOLVABLE:
        raise ValidationFailed(f"This problem is already {status}.", fields={})
    errors: dict[str, str] = {}
    ended = _date(abatement, "abatement", errors, today=today, what="date it resolved") or (
        None if errors else today)
    onset = str(res.get("onsetDateTime") or "")[:10]
    if ended and onset and ended < onset:
        errors["abatement"] = f"The problem cannot resolve before it started ({onset})."
    if errors or ended is None:
        raise ValidationFailed(FIX, fields=errors)
    res["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved"}]}
    res["abatementDateTime"] = ended
    for key in ("abatementAge", "abatementPeriod", "abatementRange", "abatementString", "abatementBoolean"):
        res.pop(key, None)
    return res


def problem_rows(conditions: Sequence[Mapping[str, Any]], pending: Any) -> dict[str, Any]:
    """The problem list: active first (by name), then resolved/inactive newest first, with counts."""
    active: list[dict[str, Any]] = []
    past: list[dict[str, Any]] = []
    for c in conditions:
        if code(c.get("verificationStatus")) in ("entered-in-error", "refuted"):
            continue
        status = code(c.get("clinicalStatus")) or "active"
        row = {"id": c.get("id"), "text": plain_term(cc_text(c.get("code"))) or "Unnamed problem", "status": status,
               "onset": str(c.get("onsetDateTime") or (c.get("onsetPeriod") or {}).get("start") or "")[:10],
               "resolved": str(c.get("abatementDateTime") or (c.get("abatementPeriod") or {}).get("end") or "")[:10],
               "coded": bool(code(c.get("code"))), "resolvable": status in RESOLVABLE, "pending": bool(pending(c))}
        (active if status in RESOLVABLE else past).append(row)
    active.sort(key=lambda r: str(r["text"]).casefold())
    past.sort(key=lambda r: (str(r["resolved"]) or str(r["onset"])), reverse=True)
    return {"active": active, "past": past, "counts": {"active": len(active), "past": len(past)}}


def vitals_effective(raw: Any, *, now: str, tz_offset_min: int = 0) -> str:
    """When the vitals were taken, as a FHIR dateTime with the device's offset.

    ``raw``: the form's local "YYYY-MM-DDTHH:MM" (empty: now). ``tz_offset_min``: JS getTimezoneOffset()
    (minutes to ADD to local time to get UTC). Not in the future (one minute of clock slack), not older than
    :data:`MAX_BACKDATE`."""
    now_s = cd.parse_instant(now)
    if now_s is None:
        raise ValueError(f"now is not an ISO instant: {now!r}")
    text = str(raw or "").strip()
    if not text:
        return now
    m = _LOCAL.fullmatch(text)
    if not -14 * 60 <= tz_offset_min <= 14 * 60:
        tz_offset_min = 0
    east = -tz_offset_min  # getTimezoneOffset() is west-positive
    local = f"{m.group(1)}T{m.group(2)}:{m.group(3)}:{m.group(4) or '00'}" if m else ""
    taken_s = cd.parse_instant(local, default_offset_min=east) if m else None
    if taken_s is None:
        raise ValidationFailed(FIX, fields={"taken_at": "Enter the date and time the vitals were taken."})
    if taken_s > now_s + 60:
        raise ValidationFailed(FIX, fields={"taken_at": "The time the vitals were taken cannot be in the future."})
    if now_s - taken_s > MAX_BACKDATE_S:
        raise ValidationFailed(FIX, fields={"taken_at": "Vitals taken more than 7 days ago cannot be entered here."})
    sign = "+" if east >= 0 else "-"
    return f"{local}{sign}{abs(east) // 60:02d}:{abs(east) % 60:02d}"


ALLERGY_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def no_known_allergies(patient_id: str, *, id: str, banner_state: str, now: str,
                       author: Mapping[str, str]) -> dict[str, Any]:
    """The recorded assertion "no known allergies" (SNOMED 716186003), as US Core records it: an
    AllergyIntolerance, confirmed and active. Refused while the patient has active allergies (they would
    contradict it) or when it is already recorded."""
    if banner_state == "allergies":
        raise ValidationFailed("This patient has recorded allergies. Mark each one inactive or resolved first, "
                               "if they no longer apply.", fields={})
    if banner_state == "nka":
        raise ValidationFailed("No known allergies is already recorded for this patient.", fields={})
    return {"resourceType": "AllergyIntolerance", "id": id,
            "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": ALLERGY_VERIFICATION, "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": "716186003", "display": "No known allergy"}],
                     "text": "No known allergies"},
            "patient": {"reference": f"Patient/{patient_id}"}, "recordedDate": now, "recorder": dict(author)}
