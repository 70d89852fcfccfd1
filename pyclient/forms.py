"""The clinical forms: validate what the clinician typed and build the FHIR resource that is queued.

Pure: the adapter passes the time (``now``, ISO 8601 UTC; ``today``, YYYY-MM-DD), the new record's ``id``
and the ``author`` reference. A form that does not validate raises :class:`ValidationFailed` with a plain
sentence per field, which the screen shows next to the field.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

from pyclient import choices as ch
from pyclient import dosage as dz
from pyclient.chart import code
from pyclient.errors import ValidationFailed
from pyclient.systems import LOINC, UCUM
from pyclient.views.caldate import valid_date

__all__ = [
    "ALLERGY_CRITICALITIES",
    "ALLERGY_STATUSES",
    "GENDERS",
    "VITALS_LOINC",
    "allergy_new",
    "allergy_update",
    "check_new_dosage",
    "contact_update",
    "medication_change",
    "medication_new",
    "medication_order_check",
    "medication_stop",
    "note_new",
    "vitals",
]

FIX = "Please correct the highlighted fields."
VITALS_LOINC = {
    "hr": ("8867-4", "Heart rate", "/min", 20, 250, 0),
    "rr": ("9279-1", "Respiratory rate", "/min", 4, 60, 0),
    "temp": ("8310-5", "Body temperature", "Cel", 30, 43, 1),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 50, 100, 0),
    "weight": ("29463-7", "Body weight", "kg", 0.3, 400, 1),
}
BP = ("85354-9", "Blood pressure panel with all children optional")
SBP = ("8480-6", "Systolic blood pressure")
DBP = ("8462-4", "Diastolic blood pressure")
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ALLERGY_CRITICALITIES = ch.codes(ch.ALLERGY_CRITICALITY)  # the lists and their words: pyclient.choices
ALLERGY_STATUSES = ch.codes(ch.ALLERGY_STATUS)
GENDERS = ch.codes(ch.GENDER)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _number(values: Mapping[str, Any], key: str, label: str, lo: float, hi: float,
            errors: dict[str, str]) -> float | None:
    raw = values.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = float(str(raw).replace(",", "."))
    except ValueError:
        errors[key] = f"{label} must be a number."
        return None
    if not math.isfinite(value) or not lo <= value <= hi:
        errors[key] = f"{label} must be between {lo:g} and {hi:g}."
        return None
    return value


def _quantity(value: float, unit: str, decimals: int) -> dict[str, Any]:
    v: float | int = round(value, decimals) if decimals else int(round(value))
    return {"value": v, "unit": unit, "system": UCUM, "code": unit}


def _raise_if(errors: Mapping[str, str]) -> None:
    if errors:
        raise ValidationFailed(FIX, fields=errors)


def vitals(patient_id: str, values: Mapping[str, Any], *, now: str, author: Mapping[str, str],
           recorded: str | None = None) -> list[dict[str, Any]]:
    """Vital signs: one Observation per measurement (no ``id`` yet), blood pressure as a panel. ``now``: when they
    were taken (effectiveDateTime); ``recorded``: when they were entered (``issued``), which orders two sets taken
    in the same minute (:func:`pyclient.chart.recorded_order`)."""
    errors: dict[str, str] = {}
    sbp = _number(values, "sbp", "Systolic pressure", 40, 300, errors)
    dbp = _number(values, "dbp", "Diastolic pressure", 20, 200, errors)
    if (sbp is None) != (dbp is None) and "sbp" not in errors and "dbp" not in errors:
        errors["sbp" if sbp is None else "dbp"] = "Enter both systolic and diastolic pressure."
    if sbp is not None and dbp is not None and dbp >= sbp:
        errors["dbp"] = "Diastolic pressure must be lower than systolic."
    measured = {k: _number(values, k, spec[1], spec[3], spec[4], errors) for k, spec in VITALS_LOINC.items()}
    if not errors and sbp is None and all(v is None for v in measured.values()):
        errors["form"] = "Enter at least one measurement."
    _raise_if(errors)
    common = {"status": "final", "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": now,
              "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs",
                                        "display": "Vital Signs"}], "text": "Vital Signs"}],
              "performer": [dict(author)], **({"issued": recorded} if recorded else {})}
    created: list[dict[str, Any]] = []
    if sbp is not None and dbp is not None:
        created.append({"resourceType": "Observation", **common,
                        "code": {"coding": [{"system": LOINC, "code": BP[0], "display": BP[1]}],
                                 "text": "Blood pressure"},
                        "component": [
                            {"code": {"coding": [{"system": LOINC, "code": SBP[0], "display": SBP[1]}]},
                             "valueQuantity": _quantity(sbp, "mm[Hg]", 0)},
                            {"code": {"coding": [{"system": LOINC, "code": DBP[0], "display": DBP[1]}]},
                             "valueQuantity": _quantity(dbp, "mm[Hg]", 0)}]})
    for k, v in measured.items():
        if v is None:
            continue
        loinc, display, unit, _lo, _hi, dec = VITALS_LOINC[k]
        created.append({"resourceType": "Observation", **common,
                        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}],
                                 "text": display}, "valueQuantity": _quantity(v, unit, dec)})
    return created


def _allergy_choices(criticality: str | None, status: str | None, errors: dict[str, str]) -> None:
    if criticality is not None and criticality not in ALLERGY_CRITICALITIES:
        errors["criticality"] = ch.choose(ch.ALLERGY_CRITICALITY)
    if status is not None and status not in ALLERGY_STATUSES:
        errors["status"] = ch.choose(ch.ALLERGY_STATUS)


def allergy_new(patient_id: str, *, id: str, substance: str, criticality: str, reaction: str, status: str,
                now: str, author: Mapping[str, str]) -> dict[str, Any]:
    """A new AllergyIntolerance (confirmed)."""
    errors: dict[str, str] = {}
    substance = (substance or "").strip()
    if not substance:
        errors["substance"] = "Enter the substance the patient is allergic to."
    elif len(substance) > 200:
        errors["substance"] = "Keep the substance under 200 characters."
    _allergy_choices(criticality, status, errors)
    _raise_if(errors)
    res: dict[str, Any] = {
        "resourceType": "AllergyIntolerance", "id": id,
        "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": ALLERGY_VERIFICATION, "code": "confirmed"}]},
        "type": "allergy", "criticality": criticality, "code": {"text": substance},
        "patient": {"reference": f"Patient/{patient_id}"}, "recordedDate": now,
        "recorder": dict(author),
    }
    if reaction.strip():
        res["reaction"] = [{"manifestation": [{"text": reaction.strip()[:200]}]}]
    return res


def allergy_update(res: dict[str, Any], *, criticality: str | None, status: str | None) -> dict[str, Any]:
    """Change criticality and/or clinical status of an allergy (in place; returned for chaining)."""
    errors: dict[str, str] = {}
    _allergy_choices(criticality, status, errors)
    _raise_if(errors)
    if criticality is not None and criticality != res.get("criticality"):
        res["criticality"] = criticality
    if status is not None and status != code(res.get("clinicalStatus")):
        res["clinicalStatus"] = {"coding": [{"system": ALLERGY_CLINICAL, "code": status}]}
    return res


#: A dosage from the form: its fields (dose_value, dose_unit, route, frequency, duration_value, duration_unit,
#: as_needed: :func:`pyclient.dosage.dosage_from_values`), or a free-text line from older callers.
DosageInput = str | Mapping[str, Any]  # noqa: UP040 - a plain alias (Pyodide runs 3.12 too)


def _dosage_errors(dosage: DosageInput, previous: Any = None) -> dict[str, str]:
    if isinstance(dosage, Mapping):
        try:
            dz.dosage_from_values(dosage, previous)
        except ValidationFailed as exc:
            return dict(exc.fields)
        return {}
    if not (dosage or "").strip():
        return {"dosage": "Enter the dose and frequency, e.g. 500 mg twice daily."}
    return {}


def _instruction(dosage: DosageInput, previous: Any = None) -> list[dict[str, Any]]:
    """``dosageInstruction``: structured (issue 18 item 4) from the form's fields, else one line of text."""
    if isinstance(dosage, Mapping):
        return [dz.dosage_from_values(dosage, previous)]
    return [{"text": dosage.strip()[:500]}]


def medication_order_check(name: str, dosage: DosageInput, *, need_name: bool = True,
                           previous: Any = None) -> None:
    """A medication order names the drug (unless it changes an existing order) and says the dose."""
    errors: dict[str, str] = {}
    if need_name and not (name or "").strip():
        errors["name"] = "Enter the medication."
    errors.update(_dosage_errors(dosage, previous))
    _raise_if(errors)


def medication_new(patient_id: str, *, id: str, name: str, dosage: DosageInput, now: str,
                   author: Mapping[str, str]) -> dict[str, Any]:
    """A new active MedicationRequest (the order-time checks review this same resource)."""
    medication_order_check(name, dosage)
    return {"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": name.strip()[:200]},
            "subject": {"reference": f"Patient/{patient_id}"}, "authoredOn": now,
            "requester": dict(author), "dosageInstruction": _instruction(dosage)}


def check_new_dosage(dosage: DosageInput) -> None:
    """Checked before the record is even read (the form is wrong whatever the record holds)."""
    if isinstance(dosage, Mapping):
        errors = _dosage_errors({**dosage, "frequency": dosage.get("frequency") or "daily"}
                                if dosage.get("frequency") == dz.KEEP_TIMING else dosage)
        _raise_if(errors)
        return
    if not (dosage or "").strip():
        raise ValidationFailed(FIX, fields={"dosage": "Enter the new dose and frequency."})


def medication_change(res: dict[str, Any], dosage: DosageInput) -> dict[str, Any]:
    """A new dosage instruction for an existing order (in place); a structured one keeps the old instruction's
    sequence, extra instructions and (for "keep current") its timing."""
    res["dosageInstruction"] = _instruction(dosage, res.get("dosageInstruction"))
    return res


def medication_stop(res: dict[str, Any], reason: str) -> dict[str, Any]:
    """Stop a medication (status stopped, with the reason)."""
    if res.get("status") == "stopped":
        raise ValidationFailed("This medication is already stopped.", fields={})
    res["status"] = "stopped"
    if reason.strip():
        res["statusReason"] = {"text": reason.strip()[:200]}
    return res


def note_new(patient_id: str, *, id: str, title: str, text: str, now: str,
             author: Mapping[str, str]) -> dict[str, Any]:
    """A clinical note: a DocumentReference with a text/plain attachment."""
    errors: dict[str, str] = {}
    if not (text or "").strip():
        errors["text"] = "Write the note before saving."
    elif len(text) > 20000:
        errors["text"] = "Notes are limited to 20,000 characters."
    _raise_if(errors)
    title = (title or "").strip()[:200] or f"Note {now[:10]}"
    return {"resourceType": "DocumentReference", "id": id, "status": "current", "docStatus": "final",
            "type": {"coding": [{"system": LOINC, "code": "11506-3", "display": "Progress note"}],
                     "text": "Progress note"},
            "subject": {"reference": f"Patient/{patient_id}"}, "date": now, "author": [dict(author)],
            "description": title,
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                                        "title": title, "creation": now}}]}


def _valid_date(text: str) -> bool:
    """A FHIR date YYYY-MM-DD that exists on the calendar (no datetime here: pyclient reads no clock)."""
    m = _DATE.fullmatch(text)
    if not m:
        return False

    y, mo, d = (int(g) for g in m.groups())
    return y >= 1 and valid_date(y, mo, d)


def contact_update(res: dict[str, Any], *, phone: str | None, birth_date: str | None, gender: str | None,
                   today: str) -> dict[str, Any]:
    """Demographics: phone, birth date (not after ``today``), gender (in place)."""
    errors: dict[str, str] = {}
    if birth_date is not None:
        if not _valid_date(birth_date):
            errors["birth_date"] = "Use the format YYYY-MM-DD."
        elif birth_date > today:
            errors["birth_date"] = "Birth date cannot be in the future."
    if gender is not None and gender not in GENDERS:
        errors["gender"] = ch.choose(ch.GENDER)
    if phone is not None and phone.strip() and not re.fullmatch(r"[+0-9 ()./-]{5,30}", phone.strip()):
        errors["phone"] = "Use digits, spaces and + ( ) - only."
    _raise_if(errors)
    if phone is not None:
        telecom = [t for t in res.get("telecom") or [] if t.get("system") != "phone"]
        old: dict[str, Any] = next((t for t in res.get("telecom") or [] if t.get("system") == "phone"), {})
        if phone.strip():
            telecom.insert(0, {**old, "system": "phone", "value": phone.strip()})
        res["telecom"] = telecom
    if birth_date is not None:
        res["birthDate"] = birth_date
    if gender is not None:
        res["gender"] = gender
    return res
