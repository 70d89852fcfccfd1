"""A medication's dosage as structured FHIR R4 ``Dosage`` (issue 18, item 4): the form's fields, and its words.

One rule, one place: :func:`dosage_text` is how every screen (chart, conflict screen, order review) says a
dosage, and :func:`dosage_from_values` writes ``Dosage.text`` with that same function, so the words stored and
the words shown cannot drift apart. The form edits dose (value + unit), route, frequency (a choice that maps to
``timing.repeat`` frequency/period/periodUnit/when), duration (``timing.repeat.boundsDuration``) and "as needed";
a dosage this form did not write (Synthea's, an HL7 interface's) is prefilled as closely as it maps, and parts
the form has no field for (``sequence``, ``additionalInstruction``, ``patientInstruction``) are kept.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pyclient.errors import ValidationFailed
from pyclient.systems import SNOMED, UCUM

__all__ = [
    "FREQUENCIES",
    "KEEP_TIMING",
    "ROUTES",
    "UNITS",
    "dosage_from_values",
    "dosage_list_text",
    "dosage_text",
    "form_spec",
    "form_values",
    "is_structured",
]

DRUG_FORM: Final = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
DOSE_RATE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/dose-rate-type"

#: (form key, words on the form, words in the instruction, SNOMED CT route code, its display)
ROUTES: Final = (
    ("oral", "By mouth", "by mouth", "26643006", "Oral route"),
    ("sublingual", "Under the tongue", "under the tongue", "37839007", "Sublingual route"),
    ("inhaled", "Inhaled", "inhaled", "447694001", "Respiratory tract route"),
    ("iv", "Into a vein (IV)", "into a vein", "47625008", "Intravenous route"),
    ("im", "Into a muscle (IM)", "into a muscle", "78421000", "Intramuscular route"),
    ("sc", "Under the skin (SC)", "under the skin", "34206005", "Subcutaneous route"),
    ("topical", "On the skin", "on the skin", "6064005", "Topical route"),
    ("eye", "In the eye", "in the eye", "54485002", "Ophthalmic route"),
    ("rectal", "Rectally", "rectally", "37161004", "Rectal route"),
)

#: (form key, singular, plural, system, code): UCUM for measures, the v3 drug forms for countable units.
UNITS: Final = (
    ("tablet", "tablet", "tablets", DRUG_FORM, "TAB"),
    ("capsule", "capsule", "capsules", DRUG_FORM, "CAP"),
    ("mg", "mg", "mg", UCUM, "mg"),
    ("g", "g", "g", UCUM, "g"),
    ("mcg", "mcg", "mcg", UCUM, "ug"),
    ("mL", "mL", "mL", UCUM, "mL"),
    ("unit", "unit", "units", UCUM, "[iU]"),
    ("puff", "puff", "puffs", UCUM, "{puff}"),
    ("drop", "drop", "drops", UCUM, "[drp]"),
    ("patch", "patch", "patches", DRUG_FORM, "PATCH"),
)

#: (form key, words, timing.repeat) — the usual choices; any other repeat is said by :func:`_repeat_text`.
FREQUENCIES: Final[tuple[tuple[str, str, dict[str, Any]], ...]] = (
    ("morning", "every morning", {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"]}),
    ("evening", "every evening", {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["EVE"]}),
    ("bedtime", "at bedtime", {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}),
    ("daily", "once a day", {"frequency": 1, "period": 1, "periodUnit": "d"}),
    ("bid", "twice a day", {"frequency": 2, "period": 1, "periodUnit": "d"}),
    ("tid", "three times a day", {"frequency": 3, "period": 1, "periodUnit": "d"}),
    ("qid", "four times a day", {"frequency": 4, "period": 1, "periodUnit": "d"}),
    ("q4h", "every 4 hours", {"frequency": 1, "period": 4, "periodUnit": "h"}),
    ("q6h", "every 6 hours", {"frequency": 1, "period": 6, "periodUnit": "h"}),
    ("q8h", "every 8 hours", {"frequency": 1, "period": 8, "periodUnit": "h"}),
    ("q12h", "every 12 hours", {"frequency": 1, "period": 12, "periodUnit": "h"}),
    ("weekly", "once a week", {"frequency": 1, "period": 1, "periodUnit": "wk"}),
    ("once", "once only", {"count": 1}),
)
#: The form's key for "keep the timing this dosage already has" (one the list above does not name).
KEEP_TIMING: Final = "current"

_UNIT_WORDS: Final = {"s": ("second", "seconds"), "min": ("minute", "minutes"), "h": ("hour", "hours"),
                      "d": ("day", "days"), "wk": ("week", "weeks"), "mo": ("month", "months"),
                      "a": ("year", "years")}
_DURATION_UNITS: Final = (("d", "days"), ("wk", "weeks"), ("mo", "months"))
_WHEN: Final = {"MORN": "in the morning", "AFT": "in the afternoon", "EVE": "in the evening", "NIGHT": "at night",
                "HS": "at bedtime", "WAKE": "on waking", "C": "with meals", "CM": "with breakfast",
                "CD": "with lunch", "CV": "with dinner", "AC": "before meals", "PC": "after meals"}
_TIMES: Final = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times"}
_QUALIFIER = re.compile(r"\s*\((qualifier value|finding|procedure)\)\s*$", re.I)


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _cc_words(cc: Any) -> str:
    if not isinstance(cc, Mapping):
        return ""
    if isinstance(cc.get("text"), str) and cc["text"].strip():
        return _QUALIFIER.sub("", cc["text"]).strip()
    for c in cc.get("coding") or []:
        if isinstance(c, Mapping) and (c.get("display") or c.get("code")):
            return _QUALIFIER.sub("", str(c.get("display") or c.get("code"))).strip()
    return ""


def _route_key(route: Any) -> str | None:
    if not isinstance(route, Mapping):
        return None
    codes = {str(c.get("code")) for c in route.get("coding") or [] if isinstance(c, Mapping)}
    words = _cc_words(route).casefold()
    for key, label, phrase, sct, display in ROUTES:
        if sct in codes or words in (label.casefold(), phrase.casefold(), display.casefold()):
            return key
    return None


def _route_text(route: Any) -> str:
    key = _route_key(route)
    if key is not None:
        return next(r[2] for r in ROUTES if r[0] == key)
    words = _cc_words(route)
    return words.lower() if words else ""


def _unit_key(q: Mapping[str, Any]) -> str | None:
    unit, code = str(q.get("unit") or "").casefold(), str(q.get("code") or "")
    for key, one, many, _system, ucode in UNITS:
        if code == ucode or unit in (one.casefold(), many.casefold(), key.casefold()):
            return key
    return None


def _quantity_text(q: Mapping[str, Any]) -> str:
    value = q.get("value")
    if value is None:
        return ""
    key = _unit_key(q)
    if key is not None:
        _k, one, many, _s, _c = next(u for u in UNITS if u[0] == key)
        unit = one if value == 1 else many
    else:
        unit = str(q.get("unit") or q.get("code") or "")
        if unit in ("", "1", "{dose}"):  # UCUM unity: a count with nothing counted
            unit = "dose" if value == 1 else "doses"
    return f"{_num(value)} {unit}"


def _dose(d: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for dr in d.get("doseAndRate") or []:
        if isinstance(dr, Mapping):
            q = dr.get("doseQuantity")
            if isinstance(q, Mapping):
                return q
            r = dr.get("doseRange")
            low = r.get("low") if isinstance(r, Mapping) else None
            if isinstance(low, Mapping):
                return low
    return None


def _dose_text(d: Mapping[str, Any]) -> str:
    for dr in d.get("doseAndRate") or []:
        if not isinstance(dr, Mapping):
            continue
        if isinstance(dr.get("doseQuantity"), Mapping):
            return _quantity_text(dr["doseQuantity"])
        r = dr.get("doseRange")
        if isinstance(r, Mapping):
            low, high = r.get("low") or {}, r.get("high") or {}
            if low.get("value") is not None and high.get("value") is not None:
                return f"{_num(low['value'])} to {_quantity_text(high)}"
    return ""


def _period_words(period: Any, unit: str) -> str:
    one, many = _UNIT_WORDS.get(unit, (unit, unit))
    return one if period in (1, 1.0) else f"{_num(period)} {many}"


def _repeat_text(rep: Mapping[str, Any]) -> str:
    """timing.repeat in words: 'twice a day', 'every 8 hours', 'three times a week', 'in the morning'."""
    for _key, words, shape in FREQUENCIES:
        if _same_repeat(rep, shape):
            return words
    parts: list[str] = []
    freq, period, unit = rep.get("frequency"), rep.get("period"), str(rep.get("periodUnit") or "")
    if period is not None and unit:
        freq_max, period_max = rep.get("frequencyMax"), rep.get("periodMax")
        if period_max is not None and (freq in (None, 1)):
            one, many = _UNIT_WORDS.get(unit, (unit, unit))
            parts.append(f"every {_num(period)} to {_num(period_max)} {many}")
        elif freq in (None, 1) and freq_max is None:
            parts.append(f"once a {_UNIT_WORDS.get(unit, (unit, unit))[0]}" if period in (1, 1.0)
                         else f"every {_period_words(period, unit)}")
        else:
            times = _TIMES.get(int(freq), f"{_num(freq)} times") if isinstance(freq, (int, float)) else "once"
            if freq_max is not None:
                times = f"{_num(freq)} to {_num(freq_max)} times"
            per = _period_words(period, unit)
            parts.append(f"{times} a {per}" if period in (1, 1.0) else f"{times} every {per}")
    for w in rep.get("when") or []:
        if str(w) in _WHEN:
            parts.append(_WHEN[str(w)])
    times_of_day = [str(t)[:5] for t in rep.get("timeOfDay") or []]
    if times_of_day:
        parts.append("at " + " and ".join(times_of_day))
    if rep.get("count") == 1 and not parts:
        parts.append("once only")
    return " ".join(parts)


def _same_repeat(rep: Mapping[str, Any], shape: Mapping[str, Any]) -> bool:
    keys = {k for k in rep if k not in ("boundsDuration", "boundsPeriod", "boundsRange")}
    if keys != set(shape):
        return False
    return all(rep[k] == v if not isinstance(v, (int, float)) else
               isinstance(rep[k], (int, float)) and float(rep[k]) == float(v) for k, v in shape.items())


#: HL7 v3 GTSAbbreviation codes (Timing.code) in words; others are said by their display or text.
_TIMING_CODES: Final = {"QD": "once a day", "BID": "twice a day", "TID": "three times a day",
                        "QID": "four times a day", "AM": "every morning", "QAM": "every morning",
                        "PM": "every evening", "QHS": "at bedtime", "Q4H": "every 4 hours", "Q6H": "every 6 hours",
                        "Q8H": "every 8 hours", "QOD": "every other day", "WK": "once a week"}


def _timing_code_text(cc: Any) -> str:
    if isinstance(cc, Mapping):
        for c in [*(cc.get("coding") or []), {"code": cc.get("text")}]:
            if isinstance(c, Mapping) and str(c.get("code") or "").upper() in _TIMING_CODES:
                return _TIMING_CODES[str(c["code"]).upper()]
    return _cc_words(cc)


def _duration_text(rep: Mapping[str, Any]) -> str:
    b = rep.get("boundsDuration")
    if isinstance(b, Mapping) and b.get("value") is not None:
        unit = str(b.get("code") or b.get("unit") or "d")
        one, many = _UNIT_WORDS.get(unit, (unit, unit))
        return f"for {_num(b['value'])} {one if b['value'] == 1 else many}"
    return ""


def _as_needed(d: Mapping[str, Any]) -> str:
    if isinstance(d.get("asNeededCodeableConcept"), Mapping):
        why = _cc_words(d["asNeededCodeableConcept"])
        return f"as needed for {why.lower()}" if why else "as needed"
    return "as needed" if d.get("asNeededBoolean") is True else ""


def is_structured(d: Mapping[str, Any]) -> bool:
    """Whether a Dosage says its dose, route or timing in fields (not only as free text)."""
    return bool(d.get("doseAndRate") or d.get("route") or d.get("timing"))


def dosage_text(d: Any) -> str:
    """One Dosage as the instruction a clinician reads: '1 tablet by mouth every morning for 7 days'.

    Structured parts are said from their fields; a Dosage that is only text is its text. Extra instructions
    (``additionalInstruction``, ``patientInstruction``) follow after a dash; "(qualifier value)" is dropped."""
    if not isinstance(d, Mapping):
        return ""
    text = str(d.get("text") or "").strip()
    if text and not d.get("doseAndRate"):  # without a dose the fields say less than the words: keep the words
        return text
    timing = _mapping(d.get("timing"))
    rep = _mapping(timing.get("repeat"))
    when = _repeat_text(rep) if rep else _timing_code_text(timing.get("code"))
    parts = [_dose_text(d), _route_text(d.get("route")), when, _duration_text(rep) if rep else "", _as_needed(d)]
    main = " ".join(p for p in parts if p)
    extra = [w for w in (_cc_words(a) for a in d.get("additionalInstruction") or []) if w]
    if isinstance(d.get("patientInstruction"), str) and d["patientInstruction"].strip():
        extra.append(d["patientInstruction"].strip())
    extra = [e for e in extra if e.casefold() not in main.casefold()]
    if not main:
        return "; ".join(extra) or str(d.get("text") or "").strip()
    text = main[:1].upper() + main[1:] if main[:1].isalpha() else main
    return " — ".join([text, *extra])


def dosage_list_text(ds: Any) -> str:
    """``dosageInstruction`` (a list of Dosage) in words, instructions separated by '; then '."""
    if isinstance(ds, Mapping):
        return dosage_text(ds)
    if not isinstance(ds, Sequence) or isinstance(ds, str):
        return ""
    return "; then ".join(t for t in (dosage_text(d) for d in ds) if t)


# -- the form ----------------------------------------------------------------------------------------------


def form_values(d: Any) -> dict[str, Any]:
    """The form's fields prefilled from an existing Dosage (a free-text one prefills what it can: nothing but
    its words, shown as the current instruction)."""
    d = d[0] if isinstance(d, Sequence) and not isinstance(d, str) and d else d
    out: dict[str, Any] = {"dose_value": "", "dose_unit": "", "route": "", "frequency": "", "duration_value": "",
                           "duration_unit": "d", "as_needed": False, "current": ""}
    if not isinstance(d, Mapping):
        return out
    out["current"] = dosage_text(d)
    q = _dose(d)
    if q is not None and q.get("value") is not None:
        out["dose_value"] = _num(q["value"])
        out["dose_unit"] = _unit_key(q) or ""
    out["route"] = _route_key(d.get("route")) or ""
    timing = _mapping(d.get("timing"))
    rep = _mapping(timing.get("repeat"))
    if rep:
        out["frequency"] = next((k for k, _w, shape in FREQUENCIES if _same_repeat(rep, shape)), KEEP_TIMING)
        b = rep.get("boundsDuration")
        if isinstance(b, Mapping) and b.get("value") is not None:
            out["duration_value"] = _num(b["value"])
            unit = str(b.get("code") or "d")
            out["duration_unit"] = unit if any(u == unit for u, _ in _DURATION_UNITS) else "d"
    elif timing:
        out["frequency"] = KEEP_TIMING
    out["as_needed"] = d.get("asNeededBoolean") is True or isinstance(d.get("asNeededCodeableConcept"), Mapping)
    return out


def form_spec(d: Any = None) -> dict[str, Any]:
    """What the dosage form offers (choices in words) and its prefilled values, for the JS to draw."""
    values = form_values(d)
    first = d[0] if isinstance(d, Sequence) and not isinstance(d, str) and d else d
    freqs = [[k, w[:1].upper() + w[1:]] for k, w, _ in FREQUENCIES]
    if values["frequency"] == KEEP_TIMING and isinstance(first, Mapping):
        timing = first.get("timing") or {}
        words = _repeat_text(timing.get("repeat") or {}) or _cc_words(timing.get("code")) or "as now"
        freqs.insert(0, [KEEP_TIMING, f"Keep current: {words}"])
    return {
        "values": values,
        "units": [[k, one if k in ("mg", "g", "mcg", "mL") else many] for k, one, many, _s, _c in UNITS],
        "routes": [[k, label] for k, label, *_ in ROUTES],
        "frequencies": freqs,
        "durationUnits": [list(u) for u in _DURATION_UNITS],
    }


def _field(values: Mapping[str, Any], key: str) -> str:
    v = values.get(key)
    return "" if v is None else str(v).strip()


def dosage_from_values(values: Mapping[str, Any], previous: Any = None) -> dict[str, Any]:
    """The FHIR R4 Dosage the form's fields make (``text`` from :func:`dosage_text`), or ValidationFailed with a
    plain sentence per field. ``previous``: the Dosage being changed (its timing is kept for "Keep current",
    its sequence and extra instructions are kept)."""
    prev = previous[0] if isinstance(previous, Sequence) and not isinstance(previous, str) and previous else previous
    prev = prev if isinstance(prev, Mapping) else {}
    errors: dict[str, str] = {}
    raw_value, unit_key = _field(values, "dose_value"), _field(values, "dose_unit")
    dose: float | None = None
    if not raw_value:
        errors["dose_value"] = "Enter the dose, e.g. 1 or 500."
    else:
        try:
            dose = float(raw_value.replace(",", "."))
        except ValueError:
            dose = None
        if dose is None or not math.isfinite(dose) or not 0 < dose <= 100000:
            errors["dose_value"] = "The dose must be a number above 0, e.g. 1 or 500."
            dose = None
    unit = next((u for u in UNITS if u[0] == unit_key), None)
    if unit is None:
        errors["dose_unit"] = "Choose the unit of the dose (tablet, mg, mL, …)."
    route_key = _field(values, "route")
    route = next((r for r in ROUTES if r[0] == route_key), None)
    if route is None:
        errors["route"] = "Choose how it is given (by mouth, into a vein, …)."
    freq_key = _field(values, "frequency")
    repeat: dict[str, Any] | None = None
    prev_timing = prev.get("timing") if isinstance(prev.get("timing"), Mapping) else None
    if freq_key == KEEP_TIMING and prev_timing is not None:
        repeat = dict(prev_timing.get("repeat") or {})
    else:
        shape = next((s for k, _w, s in FREQUENCIES if k == freq_key), None)
        if shape is None:
            errors["frequency"] = "Choose how often (every morning, twice a day, every 8 hours, …)."
        else:
            repeat = {k: (list(v) if isinstance(v, list) else v) for k, v in shape.items()}
    raw_days = _field(values, "duration_value")
    repeat_bounds: dict[str, Any] | None = None
    if raw_days:
        dunit = _field(values, "duration_unit") or "d"
        try:
            days = float(raw_days.replace(",", "."))
        except ValueError:
            days = float("nan")
        if not math.isfinite(days) or not 0 < days <= 3650 or not days.is_integer():
            errors["duration_value"] = "The duration must be a whole number above 0, or left empty."
        elif dunit not in {u for u, _ in _DURATION_UNITS}:
            errors["duration_value"] = "Choose days, weeks or months."
        else:
            words = _UNIT_WORDS[dunit]
            repeat_bounds = {"value": int(days), "unit": words[0] if days == 1 else words[1], "system": UCUM,
                             "code": dunit}
    if errors:
        raise ValidationFailed("Please correct the highlighted fields.", fields=errors)
    assert dose is not None and unit is not None and route is not None and repeat is not None
    key, one, many, system, ucode = unit
    value: int | float = int(dose) if dose.is_integer() else dose
    out: dict[str, Any] = {}
    if "sequence" in prev:
        out["sequence"] = prev["sequence"]
    timing: dict[str, Any] = {"repeat": repeat}
    repeat.pop("boundsDuration", None)
    if repeat_bounds is not None:
        repeat["boundsDuration"] = repeat_bounds
    out["timing"] = timing
    as_needed = values.get("as_needed")
    out["asNeededBoolean"] = as_needed is True or str(as_needed).lower() in ("true", "on", "yes", "1")
    if out["asNeededBoolean"] and isinstance(prev.get("asNeededCodeableConcept"), Mapping):
        del out["asNeededBoolean"]
        out["asNeededCodeableConcept"] = prev["asNeededCodeableConcept"]
    out["route"] = {"coding": [{"system": SNOMED, "code": route[3], "display": route[4]}], "text": route[1]}
    out["doseAndRate"] = [{"type": {"coding": [{"system": DOSE_RATE_TYPE, "code": "ordered", "display": "Ordered"}]},
                           "doseQuantity": {"value": value, "unit": one if value == 1 else many, "system": system,
                                            "code": ucode}}]
    for keep in ("additionalInstruction", "patientInstruction"):
        if keep in prev:
            out[keep] = prev[keep]
    out["text"] = dosage_text(out)[:500]
    return out
