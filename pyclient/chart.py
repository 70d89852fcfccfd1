"""What the patient list, the search results and the chart screen show: plain view models built from FHIR.

Pure (no store, no keys): the browser adapter decrypts and verifies the records, then hands them here.
``pending(resource)`` tells whether a record has an edit waiting to sync (the machine knows).
"""

from __future__ import annotations

import base64
import calendar
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pyclient import blindindex as bi
from pyclient import dosage as dz
from pyclient import integrity as ig
from pyclient.choices import form_choices
from pyclient.views import caldate as cd

__all__ = [
    "CRITICAL_FLAGS",
    "FLAG_WORDS",
    "DateOrder",
    "cc_text",
    "chart_view",
    "code",
    "flag_words",
    "normalize_query",
    "obs_value",
    "patient_summary",
    "quantity_text",
    "record_sections",
    "recorded_order",
    "ref_patient",
    "search_kind",
    "short_name",
    "sort_key",
    "when",
]

Pending = Callable[[Mapping[str, Any]], bool]

#: Interpretation codes (v3 ObservationInterpretation, HL7 v2 table 0078) that mean a critical result.
CRITICAL_FLAGS = frozenset({"HH", "LL", "AA", "HU", "LU"})
#: Those codes in plain words (the chart's flag badge; pyclient.views.fullchart's flagged vitals).
FLAG_WORDS = {"H": "high", "L": "low", "HH": "critical high", "LL": "critical low", "HU": "critical high",
              "LU": "critical low", "A": "abnormal", "AA": "critical", ">": "above range", "<": "below range",
              "R": "resistant", "S": "susceptible"}
SBP_CODE = "8480-6"
DBP_CODE = "8462-4"
_UNITS = {"Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg"}


def flag_words(flag: str) -> str:
    """An interpretation code in words ("" when normal or absent; an unknown code is "abnormal")."""
    if flag in ("", "N"):
        return ""
    return FLAG_WORDS.get(flag) or ("critical" if flag in CRITICAL_FLAGS else "abnormal")


def note_text(doc: Mapping[str, Any]) -> str:
    """A DocumentReference's text: its first attachment with inline data, decoded (bad base64 reads as none)."""
    for c in doc.get("content") or []:
        data = (c.get("attachment") or {}).get("data")
        if data:
            try:
                return base64.b64decode(data).decode("utf-8", "replace")
            except ValueError:
                return ""
    return ""


def cc_text(cc: Any) -> str:
    """A CodeableConcept as words: its text, else the first coding's display or code."""
    if not isinstance(cc, Mapping):
        return ""
    if cc.get("text"):
        return str(cc["text"])
    for c in cc.get("coding") or []:
        if isinstance(c, Mapping) and (c.get("display") or c.get("code")):
            return str(c.get("display") or c.get("code"))
    return ""


_NOISE = re.compile(r"\s*\[[^\]]*\]|\s+in (Serum or Plasma|Blood|Arterial blood)|\s+by Pulse oximetry", re.I)


def short_name(name: str) -> str:
    """'Glucose [Mass/volume] in Serum or Plasma' -> 'Glucose' (LOINC long names do not fit a tablet row)."""
    short = _NOISE.sub("", name).strip()
    return {"Oxygen saturation": "SpO2"}.get(short, short) or name


def code(cc: Any) -> str:
    """The first coding's code of a CodeableConcept ('' when none)."""
    if isinstance(cc, Mapping):
        for c in cc.get("coding") or []:
            if isinstance(c, Mapping) and c.get("code"):
                return str(c["code"])
    return ""


def ref_patient(resource: Mapping[str, Any]) -> str | None:
    """The patient a (non-Patient) record belongs to; one rule with the integrity check's patient binding."""
    return None if resource.get("resourceType") == "Patient" else ig.patient_ref(resource)


def when(resource: Mapping[str, Any], *keys: str) -> str:
    """The first date among ``keys`` (a dateTime, or a Period's start) as 'YYYY-MM-DD HH:MM'."""
    for key in keys:
        v = resource.get(key)
        if isinstance(v, Mapping):
            v = v.get("start") or v.get("end")
        if v:
            return str(v)[:16].replace("T", " ")
    return ""


def _instant(text: Any, missing: float) -> float:
    secs = cd.parse_instant(text) if text else None
    return missing if secs is None else secs


def recorded_order(o: Mapping[str, Any]) -> tuple[float, float, float, int, str]:
    """Sort key, oldest first, of a measurement: a total order, so the chart's "latest" is never a coin toss when
    two sets carry the same minute. When it was taken (as an instant: offsets and seconds count), then when it was
    recorded (``issued``), then when the server stored it (``meta.lastUpdated``; none yet = written on this
    device after the last pull, so newest), then the version, then the id."""
    eff: Any = o.get("effectiveDateTime")
    if not eff and isinstance(o.get("effectivePeriod"), Mapping):
        eff = o["effectivePeriod"].get("start") or o["effectivePeriod"].get("end")
    meta = o.get("meta") if isinstance(o.get("meta"), Mapping) else {}
    version = str((meta or {}).get("versionId") or "")
    return (_instant(eff, -math.inf), _instant(o.get("issued"), -math.inf),
            _instant((meta or {}).get("lastUpdated"), math.inf), int(version) if version.isdigit() else 0,
            str(o.get("id") or ""))


def _quantity_text(q: Mapping[str, Any]) -> str:
    unit = _UNITS.get(str(q.get("unit") or ""), q.get("unit") or "")
    return f"{q.get('value')} {unit}".strip()


def quantity_text(q: Mapping[str, Any]) -> str:
    """A Quantity as the chart shows it ('38.4 °C', '120 mmHg'): one rule for every screen (issue 18)."""
    return _quantity_text(q)


def obs_value(o: Mapping[str, Any]) -> str:
    """An Observation's value as words ('7.1 mmol/L', 'Positive')."""
    q = o.get("valueQuantity")
    if isinstance(q, Mapping) and q.get("value") is not None:
        return _quantity_text(q)
    if o.get("valueCodeableConcept"):
        return cc_text(o.get("valueCodeableConcept"))
    return str(o.get("valueString") or "")


def patient_summary(p: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the patient list (and the chart's header)."""
    names = [n for n in p.get("name") or [] if isinstance(n, Mapping)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = " ".join(str(g) for g in name.get("given") or [])
    family = str(name.get("family") or "")
    mrn = ""
    for ident in p.get("identifier") or []:
        if isinstance(ident, Mapping) and (code(ident.get("type")) == "MR" or not mrn):
            mrn = str(ident.get("value") or "")
    phone = next((str(t.get("value")) for t in p.get("telecom") or []
                  if isinstance(t, Mapping) and t.get("system") == "phone"), "")
    addr = next((a for a in p.get("address") or [] if isinstance(a, Mapping)), {})
    return {
        "id": p.get("id"),
        "version": (p.get("meta") or {}).get("versionId"),
        "given": given,
        "family": family,
        "display": (f"{family}, {given}" if family and given else family or given or "(no name)"),
        "mrn": mrn,
        "birthDate": p.get("birthDate") or "",
        "gender": p.get("gender") or "",
        "phone": phone,
        "address": ", ".join([*[str(x) for x in addr.get("line") or []], str(addr.get("city") or ""),
                              str(addr.get("state") or "")]).strip(", "),
        "active": p.get("active", True),
    }


def sort_key(s: Mapping[str, Any]) -> tuple[str, str]:
    """Family then given name, accents and case folded (Émile sorts with Emile)."""
    def fold(t: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c)).casefold()

    return (fold(str(s["family"])), fold(str(s["given"])))


#: Patients a list shows at first, and how many more each "Show more" adds (issue 13: a device may hold
#: thousands; the list draws a page, its count and search still cover every patient held).
PATIENT_PAGE = 50
SHOW_MORE = "Show more patients"


class PatientPage:
    """The first ``limit`` patients in name order (:func:`sort_key`, then id) out of batches fed with
    :meth:`add`, and how many were fed: memory is the page and one batch, never every patient held."""

    __slots__ = ("_best", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.total = 0
        self._best: list[tuple[tuple[str, str], str, dict[str, Any]]] = []

    def add(self, summaries: Sequence[dict[str, Any]]) -> None:
        self.total += len(summaries)
        merged = self._best + [(sort_key(s), str(s["id"]), s) for s in summaries]
        merged.sort(key=lambda t: (t[0], t[1]))
        self._best = merged[:self.limit]

    @property
    def results(self) -> list[dict[str, Any]]:
        return [s for _k, _i, s in self._best]

    @property
    def more(self) -> bool:
        """Patients left out of the page (the screen offers "Show more")."""
        return self.total > len(self._best)


#: How a locale writes a numeric date (issue 18 item 11): the browser tells it (Intl), pyclient reads no locale.
DateOrder = Literal["dmy", "mdy", "ymd"]
_SLASHED = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})")
_ISO_LIKE = re.compile(r"\d{4}([-/.]\d{1,2}([-/.]\d{1,2})?)?")  # also 2002/04/18 (year first)
_DIGITS = re.compile(r"\d+")
# Fixed names: calendar.month_name follows the process locale, and pyclient reads no environment.
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def search_kind(text: str) -> bi.Kind:
    """What a search box entry is: a birth date, an identifier (has a digit) or a name prefix."""
    t = text.strip()
    if (_ISO_LIKE.fullmatch(t) and not t.startswith("0")) or _SLASHED.fullmatch(t):  # "0021" is an MRN's digits
        return "birthdate"
    if any(ch.isdigit() for ch in t):
        return "identifier"
    return "name"


def _not_a_date(text: str, why: str) -> bi.InvalidQuery:
    return bi.InvalidQuery(f"“{text}” is not a date this app can read: {why}. "
                           "Type a birth date as day/month/year or year-month-day, for example 18/04/2002 or 2002-04-18.")


def _checked_date(text: str, year: int, month: int | None, day: int | None) -> str:
    """ISO form of a (partial) date, or a plain sentence saying what is wrong with it."""
    if year < 1:
        raise _not_a_date(text, "there is no year 0")
    if month is not None and not 1 <= month <= 12:
        raise _not_a_date(text, "a month is 1 to 12")
    if day is not None and month is not None:
        if not 1 <= day <= calendar.monthrange(year, month)[1]:
            raise _not_a_date(text, f"{_MONTHS[month - 1]} {year} has no day {day}")
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{year:04d}" if month is None else f"{year:04d}-{month:02d}"


def normalize_query(kind: bi.Kind, text: str, date_order: DateOrder = "mdy") -> str:
    """The search box entry in the form the blind index looks up.

    Dates: '18/04/2002' -> '2002-04-18'. A slashed (or dotted) date is read in the device locale's order
    (``date_order``: 'dmy' in most of the world, 'mdy' in the US); a part above 12 can only be the day, so
    '18/04/2002' is the 18th of April whatever the locale. A date that cannot be one (month 18, 31 February)
    raises :class:`blindindex.InvalidQuery` with a sentence the clinician reads.
    Identifiers: digits alone ('000021', '21') look up the number of an MRN-style identifier ('MRN-000021').
    """
    t = text.strip()
    if kind == "birthdate":
        m = _SLASHED.fullmatch(t)
        if m:
            a, b, y = (int(g) for g in m.groups())
            if a > 12 >= b or (date_order == "dmy" and b <= 12):
                day, month = a, b
            else:  # 'mdy', or a second part above 12 (then it can only be the day)
                month, day = a, b
            return _checked_date(t, y, month, day)
        parts = [int(g) for g in _DIGITS.findall(t)]
        if _ISO_LIKE.fullmatch(t):
            return _checked_date(t, parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None)
        raise _not_a_date(t, "it is not in a form a birth date is written")
    if kind == "identifier" and t.isdigit():
        return bi.identifier_number(t)
    return text


def _flag(o: Mapping[str, Any]) -> str:
    return code((o.get("interpretation") or [None])[0]) if o.get("interpretation") else ""


def chart_view(patient: Mapping[str, Any], resources: Sequence[Mapping[str, Any]], pending: Pending) -> dict[str, Any]:
    """Everything the chart screen shows for one patient, from its verified records."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in resources:
        by.setdefault(str(r.get("resourceType")), []).append(r)
    problems = [{"id": c["id"], "text": cc_text(c.get("code")), "status": code(c.get("clinicalStatus")),
                 "onset": str(c.get("onsetDateTime") or "")[:10], "pending": pending(c)}
                for c in by.get("Condition", [])]
    problems.sort(key=lambda p: (p["status"] != "active", p["text"]))
    allergies = [{"id": a["id"], "version": (a.get("meta") or {}).get("versionId"),
                  "substance": cc_text(a.get("code")), "criticality": a.get("criticality") or "",
                  "status": code(a.get("clinicalStatus")) or "active",
                  "reaction": ", ".join(cc_text(m) for r in a.get("reaction") or []
                                        for m in (r.get("manifestation") or [])),
                  "pending": pending(a)} for a in by.get("AllergyIntolerance", [])]
    allergies.sort(key=lambda a: (a["status"] != "active", a["substance"]))
    # Pharmacy dispenses (HL7 RDS^O13 -> MedicationDispense), by the order they fill: the latest one.
    dispensed: dict[str, str] = {}
    for md in by.get("MedicationDispense", []):
        if md.get("status") not in ("completed", "in-progress"):
            continue
        for ref in md.get("authorizingPrescription") or []:
            order = str(ref.get("reference") or "").removeprefix("MedicationRequest/")
            handed = str(md.get("whenHandedOver") or md.get("whenPrepared") or "")[:10] or "yes"
            dispensed[order] = max(dispensed.get(order, ""), handed)
    meds = [{"id": m["id"], "name": cc_text(m.get("medicationCodeableConcept")), "status": m.get("status"),
             "dosage": dz.dosage_list_text(m.get("dosageInstruction")),  # issue 18 item 4: one rule
             "authoredOn": str(m.get("authoredOn") or "")[:10], "pending": pending(m),
             "reason": cc_text(m.get("statusReason")), "dispensed": dispensed.get(str(m["id"]), "")}
            for m in by.get("MedicationRequest", [])]
    meds.sort(key=lambda m: (m["status"] != "active", m["name"]))
    series: dict[str, dict[str, Any]] = {}
    vitals_latest: dict[str, dict[str, Any]] = {}
    labs_latest: dict[str, dict[str, Any]] = {}
    for o in sorted(by.get("Observation", []), key=recorded_order):
        cat = "laboratory" if any(code(c) == "laboratory" for c in o.get("category") or []) else "vital-signs"
        at = str(o.get("effectiveDateTime") or "")
        name = short_name(cc_text(o.get("code")))
        if o.get("component"):
            vals = {code(c.get("code")): (c.get("valueQuantity") or {}).get("value") for c in o["component"]}
            sbp, dbp = vals.get(SBP_CODE), vals.get(DBP_CODE)
            value_text = f"{sbp}/{dbp} mmHg"
            point: Any = sbp
            name = "Blood pressure"
        else:
            q = o.get("valueQuantity") or {}
            point = q.get("value")
            value_text = _quantity_text(q) if q else str(o.get("valueString", ""))
        flag = _flag(o)
        row = {"id": o["id"], "name": name, "value": value_text, "when": at[:16].replace("T", " "),
               "flag": flag, "pending": pending(o), "abnormal": flag not in ("", "N"),
               "critical": flag in CRITICAL_FLAGS, "status": str(o.get("status") or ""),
               "flagWords": flag_words(flag)}
        (labs_latest if cat == "laboratory" else vitals_latest)[name] = row
        if isinstance(point, (int, float)):
            s = series.setdefault(name, {"name": name, "category": cat, "points": []})
            s["points"].append([at[:10], point])
    notes = []
    for d in by.get("DocumentReference", []):
        text = note_text(d)
        notes.append({"id": d["id"], "title": d.get("description") or cc_text(d.get("type")) or "Note",
                      "date": str(d.get("date") or "")[:16].replace("T", " "), "text": text,
                      "pending": pending(d)})
    notes.sort(key=lambda n: n["date"], reverse=True)
    return {
        **record_sections(by, pending),
        "patient": {**patient_summary(patient), "pending": pending(patient)},
        "problems": problems,
        "allergies": allergies,
        "medications": meds,
        "vitals": sorted(vitals_latest.values(), key=lambda r: r["name"]),
        "labs": sorted(labs_latest.values(), key=lambda r: r["name"]),
        "series": [s for s in series.values() if len(s["points"]) >= 1],
        "notes": notes[:20],
        "choices": form_choices(),  # the pick lists the chart and its forms show (pyclient.choices)
        "counts": {k: len(v) for k, v in by.items()},
    }


#: The chart's words for the status of an immunization or procedure, and of an appointment (the browser shows
#: ``statusText``; it spells none of them). A status not listed is shown as its code.
EVENT_STATUS_WORDS: dict[str, str] = {"completed": "given", "not-done": "not given", "entered-in-error": "entered in error"}
APPOINTMENT_STATUS_WORDS: dict[str, str] = {
    "booked": "booked", "arrived": "arrived", "fulfilled": "attended", "cancelled": "cancelled",
    "noshow": "did not attend", "proposed": "proposed", "pending": "pending"}


def _status(res: Mapping[str, Any], words: Mapping[str, str]) -> dict[str, str]:
    code = str(res.get("status") or "")
    return {"status": code, "statusText": words.get(code, code)}


def record_sections(by: Mapping[str, Sequence[Mapping[str, Any]]], pending: Pending) -> dict[str, Any]:
    """Immunizations, procedures, lab reports (each with its results), appointments and encounters."""
    obs = {str(o.get("id")): o for o in by.get("Observation", [])}
    immunizations = [{"id": i["id"], "vaccine": cc_text(i.get("vaccineCode")), **_status(i, EVENT_STATUS_WORDS),
                      "date": when(i, "occurrenceDateTime")[:10], "pending": pending(i)}
                     for i in by.get("Immunization", [])]
    immunizations.sort(key=lambda i: i["date"], reverse=True)
    procedures = [{"id": x["id"], "name": cc_text(x.get("code")), **_status(x, EVENT_STATUS_WORDS),
                   "date": when(x, "performedDateTime", "performedPeriod")[:10], "pending": pending(x)}
                  for x in by.get("Procedure", [])]
    procedures.sort(key=lambda x: x["date"], reverse=True)
    reports = []
    for d in by.get("DiagnosticReport", []):
        results = []
        for ref in d.get("result") or []:
            rid = str((ref or {}).get("reference") or "").rpartition("/")[2]
            o = obs.get(rid)
            if o is not None:
                results.append({"id": rid, "name": short_name(cc_text(o.get("code"))), "value": obs_value(o),
                                "flag": _flag(o)})
            else:  # a result this device does not hold (yet)
                results.append({"id": rid, "name": str((ref or {}).get("display") or "Result"),
                                "value": "not on this device", "flag": ""})
        reports.append({"id": d["id"], "name": cc_text(d.get("code")), "status": d.get("status") or "",
                        "date": when(d, "effectiveDateTime", "effectivePeriod", "issued"),
                        "conclusion": str(d.get("conclusion") or ""), "results": results,
                        "pending": pending(d)})
    reports.sort(key=lambda r: r["date"], reverse=True)
    appointments = [{"id": a["id"], **_status(a, APPOINTMENT_STATUS_WORDS),
                     "what": a.get("description") or cc_text((a.get("serviceType") or [None])[0])
                     or cc_text(a.get("appointmentType")) or "Appointment",
                     "start": when(a, "start"), "pending": pending(a)} for a in by.get("Appointment", [])]
    appointments.sort(key=lambda a: a["start"], reverse=True)
    encounters = [{"id": e["id"], "status": e.get("status") or "",
                   "type": cc_text((e.get("type") or [None])[0]) or str((e.get("class") or {}).get("code") or ""),
                   "date": when(e, "period")[:10], "pending": pending(e)} for e in by.get("Encounter", [])]
    encounters.sort(key=lambda e: e["date"], reverse=True)
    return {"immunizations": immunizations, "procedures": procedures[:50], "reports": reports[:30],
            "appointments": appointments, "encounters": encounters[:30]}
