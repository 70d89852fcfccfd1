"""The full chart (issue 18 item 5): allergy banner, age, abnormal-vital flags, trends, notes' authors, the rest
of the record, grouped and newest first.

Pure: the adapter passes ``today`` (YYYY-MM-DD); nothing here reads a clock. The JS screen draws what these
view models say — every flag, range, axis tick and pixel position of a trend is decided here, once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyclient.chart import (
    CRITICAL_FLAGS,
    cc_text,
    code,
    flag_words,
    note_text,
    recorded_order,
    short_name,
    when,
)
from pyclient.views import caldate as cd

__all__ = [
    "NKA_CODES",
    "VITAL_RANGES",
    "VitalRange",
    "age_text",
    "allergy_banner",
    "author_text",
    "full_chart",
    "grouped_reports",
    "note_rows",
    "other_records",
    "plain_term",
    "trend_view",
    "vital_flag",
    "vitals_rows",
]

Pending = Callable[[Mapping[str, Any]], bool]

#: SNOMED CT "no known ..." findings: a recorded assertion that the patient has no allergies (of that kind).
NKA_CODES: Final[Mapping[str, str]] = {
    "716186003": "No known allergies",
    "409137002": "No known drug allergies",
    "429625007": "No known food allergies",
    "428607008": "No known environmental allergies",
}
ALLERGY_LIST_LOINC: Final = "48765-2"  # List "Allergies and adverse reactions"
SBP, DBP, BP_PANEL = "8480-6", "8462-4", "85354-9"


@dataclass(frozen=True)
class VitalRange:
    """An adult reference range for one vital sign: outside low..high is abnormal, outside the critical
    limits is critical. Used only when the Observation carries neither an interpretation nor a range."""

    name: str
    unit: str
    low: float | None
    high: float | None
    critical_low: float | None
    critical_high: float | None


#: The one place the device's vital-sign reference ranges live (adults; by LOINC code). Sources: NEWS2
#: bands (Royal College of Physicians 2017) rounded to the limits ward charts use.
VITAL_RANGES: Final[Mapping[str, VitalRange]] = {
    "8310-5": VitalRange("Temperature", "°C", 36.0, 37.9, 35.0, 39.5),
    "8867-4": VitalRange("Heart rate", "/min", 51, 100, 40, 130),
    "9279-1": VitalRange("Respiratory rate", "/min", 12, 20, 8, 25),
    "59408-5": VitalRange("SpO2", "%", 95, None, 91, None),
    "2708-6": VitalRange("SpO2", "%", 95, None, 91, None),
    SBP: VitalRange("Systolic", "mmHg", 91, 139, 80, 180),
    DBP: VitalRange("Diastolic", "mmHg", 50, 89, 40, 120),
}
ADULT_AGE: Final = 18

_UNITS: Final[Mapping[str, str]] = {"Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg", "/min": "/min", "%": "%"}


_TAG = re.compile(r"\s*\((disorder|finding|substance|organism|procedure|situation|qualifier value|observable entity|"
                  r"regime/therapy|morphologic abnormality|product|medicinal product|event|person|physical object)\)$")


def plain_term(text: str) -> str:
    """'Anemia (disorder)' -> 'Anemia': the SNOMED semantic tag helps coders, not a clinician reading a chart."""
    return _TAG.sub("", text).strip() or text


# -- age ------------------------------------------------------------------------------------------------------

def age_years(birth: str, today: str) -> int | None:
    b, t = cd.parse_date(birth), cd.parse_date(today)
    if b is None or t is None or b > t:
        return None
    return t[0] - b[0] - ((t[1], t[2]) < (b[1], b[2]))


def age_text(birth: str, today: str, deceased: Any = None) -> str:
    """'47 y', '8 mo', '12 d' (the way a chart header writes it); '' when the birth date is unknown."""
    b, t = cd.parse_date(birth), cd.parse_date(today)
    if b is None or t is None or b > t:
        return ""
    if deceased:
        died = cd.parse_date(deceased) if isinstance(deceased, str) else None
        t = died if died is not None and died >= b else t
    years = t[0] - b[0] - ((t[1], t[2]) < (b[1], b[2]))
    if years >= 2:
        text = f"{years} y"
    else:
        months = (t[0] - b[0]) * 12 + t[1] - b[1] - (t[2] < b[2])
        text = f"{months} mo" if months >= 1 else f"{cd.days(t) - cd.days(b)} d"
    return f"{text} (deceased)" if deceased else text


# -- allergy banner ---------------------------------------------------------------------------------------------

def _entered_in_error(a: Mapping[str, Any]) -> bool:
    return code(a.get("verificationStatus")) in ("entered-in-error", "refuted")


def allergy_banner(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the red strip at the top of every patient screen says.

    ``state``: "allergies" (active allergies, listed), "nka" (a recorded "no known allergies" assertion:
    an AllergyIntolerance coded 716186003 & co, or an allergy List whose emptyReason is nilknown) or
    "unassessed" (nothing recorded: nobody has asked, which is not the same as no allergies)."""
    active: list[dict[str, Any]] = []
    nka: list[str] = []
    assertion_ids: list[str] = []  # "no known allergy" records: an assertion, not an allergy row with a criticality
    asked_none = False
    for a in resources:
        rt = a.get("resourceType")
        if rt == "List" and code(a.get("code")) == ALLERGY_LIST_LOINC and not a.get("entry"):
            asked_none = asked_none or code(a.get("emptyReason")) == "nilknown"
            continue
        if rt != "AllergyIntolerance" or _entered_in_error(a):
            continue
        status = code(a.get("clinicalStatus")) or "active"
        c = code(a.get("code"))
        if c in NKA_CODES:
            assertion_ids.append(str(a.get("id")))
            if status == "active":
                nka.append(cc_text(a.get("code")) or NKA_CODES[c])
            continue
        if status != "active":
            continue
        reactions = [cc_text(m) for r in a.get("reaction") or [] for m in r.get("manifestation") or []]
        name = plain_term(cc_text(a.get("code"))) or "Unnamed substance"
        if any(x["substance"] == name for x in active):  # recorded twice (two sources): said once
            continue
        active.append({"substance": name,
                       "high": a.get("criticality") == "high", "reaction": ", ".join(x for x in reactions if x)})
    if active:
        active.sort(key=lambda x: (not x["high"], x["substance"].casefold()))
        names = [x["substance"] + (" (high risk)" if x["high"] else "") for x in active]
        return {"state": "allergies", "items": active, "assertionIds": assertion_ids,
                "text": f"Allergies ({len(active)}): " + ", ".join(names)}
    if nka or asked_none:
        return {"state": "nka", "items": [], "assertionIds": assertion_ids,
                "text": nka[0] if nka else "No known allergies"}
    return {"state": "unassessed", "items": [], "assertionIds": assertion_ids,
            "text": "Allergies not yet assessed: ask the patient before prescribing"}


# -- vital-sign flags --------------------------------------------------------------------------------------------

def _qty(q: Any) -> float | None:
    if isinstance(q, Mapping) and isinstance(q.get("value"), (int, float)) and not isinstance(q.get("value"), bool):
        v = float(q["value"])
        return v if math.isfinite(v) else None
    return None


def _own_range(item: Mapping[str, Any]) -> tuple[float | None, float | None] | None:
    for rr in item.get("referenceRange") or []:
        if isinstance(rr, Mapping) and (rr.get("low") or rr.get("high")):
            return _qty(rr.get("low")), _qty(rr.get("high"))
    return None


def _flag(value: float | None, lo: float | None, hi: float | None,
          clo: float | None = None, chi: float | None = None) -> str:
    if value is None:
        return ""
    if clo is not None and value < clo:
        return "LL"
    if chi is not None and value > chi:
        return "HH"
    if lo is not None and value < lo:
        return "L"
    if hi is not None and value > hi:
        return "H"
    return "N"


def vital_flag(item: Mapping[str, Any], loinc: str, *, adult: bool = True) -> dict[str, Any]:
    """The flag of one measured value (an Observation, or one of its components).

    Order: the Observation's own interpretation, then its own referenceRange, then :data:`VITAL_RANGES`
    (adults only: a child's heart rate of 120 is normal). Returns code, words and whether critical."""
    interp = item.get("interpretation") or []
    flag = code(interp[0]) if interp and isinstance(interp[0], Mapping) else ""
    source = "observation" if flag else ""
    value = _qty(item.get("valueQuantity"))
    if not flag:
        own = _own_range(item)
        if own is not None:
            flag, source = _flag(value, *own), "observation"
        elif adult and loinc in VITAL_RANGES:
            r = VITAL_RANGES[loinc]
            flag, source = _flag(value, r.low, r.high, r.critical_low, r.critical_high), "device"
    abnormal = flag not in ("", "N")
    return {"flag": flag, "words": flag_words(flag),
            "abnormal": abnormal, "critical": flag in CRITICAL_FLAGS, "source": source}


def _unit(q: Mapping[str, Any]) -> str:
    u = str(q.get("unit") or q.get("code") or "")
    return _UNITS.get(u, u)


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else str(v)


def _vital_name(o: Mapping[str, Any]) -> str:
    loinc = code(o.get("code"))
    if loinc == BP_PANEL or o.get("component") and any(code(c.get("code")) == SBP for c in o["component"]):
        return "Blood pressure"
    if loinc in VITAL_RANGES:
        return VITAL_RANGES[loinc].name
    return short_name(cc_text(o.get("code"))) or "Measurement"


def _is_vital(o: Mapping[str, Any]) -> bool:
    return any(code(c) == "vital-signs" for c in o.get("category") or []) or code(o.get("code")) in VITAL_RANGES \
        or code(o.get("code")) == BP_PANEL


def vitals_rows(observations: Sequence[Mapping[str, Any]], pending: Pending, *, adult: bool = True,
                ) -> list[dict[str, Any]]:
    """The latest value of each vital sign, flagged in words (newest measurement wins)."""
    latest: dict[str, dict[str, Any]] = {}
    for o in sorted((o for o in observations if _is_vital(o) and o.get("status") != "entered-in-error"),
                    key=recorded_order):  # same minute: the set recorded last wins, never by chance
        name = _vital_name(o)
        if name == "Blood pressure":
            parts: dict[str, tuple[float | None, dict[str, Any]]] = {}
            for c in o.get("component") or []:
                cc = code(c.get("code"))
                if cc in (SBP, DBP):
                    parts[cc] = (_qty(c.get("valueQuantity")), vital_flag(c, cc, adult=adult))
            s, d = parts.get(SBP, (None, vital_flag({}, ""))), parts.get(DBP, (None, vital_flag({}, "")))
            if s[0] is None and d[0] is None:
                continue
            value = f"{_num(s[0]) if s[0] is not None else '?'}/{_num(d[0]) if d[0] is not None else '?'} mmHg"
            worst = max((s[1], d[1]), key=lambda f: (f["critical"], f["abnormal"]))
            words = " · ".join(f"{lbl} {f['words']}" for lbl, f in (("systolic", s[1]), ("diastolic", d[1]))
                               if f["abnormal"])
            flag = {**worst, "words": words}
        else:
            q = o.get("valueQuantity")
            v = _qty(q)
            if v is None or not isinstance(q, Mapping):
                continue
            value = f"{_num(v)} {_unit(q)}".strip()
            flag = vital_flag(o, code(o.get("code")), adult=adult)
        latest[name] = {"id": o.get("id"), "name": name, "value": value,
                        "when": when(o, "effectiveDateTime", "effectivePeriod", "issued"),
                        "pending": pending(o), **flag}
    order = ["Blood pressure", "Heart rate", "Respiratory rate", "Temperature", "SpO2"]
    return sorted(latest.values(), key=lambda r: (order.index(r["name"]) if r["name"] in order else 99, r["name"]))


# -- trends -------------------------------------------------------------------------------------------------------

def _when_days(text: str) -> float | None:
    """Days since 1970 at the wall-clock time written (the offset is ignored: a chart's dates are local)."""
    secs = cd.parse_instant(text[:19])
    return None if secs is None else secs / 86400


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo or abs(hi) or 1.0
    raw = span / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks: list[float] = []
    v = start
    while len(ticks) < 12:  # from at or below lo to the first tick at or above hi
        ticks.append(round(v, 6))
        if v >= hi - 1e-9:
            break
        v += step
    return ticks


def _fmt_tick(v: float) -> str:
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


def _label_date(d: float) -> str:
    return cd.iso(cd.civil(math.floor(d)))


def trend_view(title: str, unit: str, series: Sequence[tuple[str, Sequence[tuple[str, float]]]],
               band: tuple[float | None, float | None] | None = None, *, width: int = 360,
               height: int = 190) -> dict[str, Any] | None:
    """Geometry of one trend chart: axes, ticks (>= 12 px text when drawn 1:1), one polyline per series, the
    normal band. ``series``: (label, [(iso datetime, value)]) — values in ``unit``. None when nothing to draw."""
    pts: list[tuple[str, list[tuple[str, float, float]]]] = []
    for lbl, raw in series:
        dated = [(t, v, d) for t, v in raw if (d := _when_days(t)) is not None]
        if dated:
            pts.append((lbl, sorted(dated, key=lambda x: x[2])))
    if not pts or sum(len(p) for _, p in pts) < 2 * len(pts):  # one value is not a trend: the table shows it
        return None
    pad_l, pad_r, pad_t, pad_b = 48, 14, 28, 44
    values = [v for _, p in pts for _, v, _ in p]
    days = [d for _, p in pts for _, _, d in p]
    lo, hi = min(values), max(values)
    if band:
        lo = min(lo, *(b for b in band if b is not None))
        hi = max(hi, *(b for b in band if b is not None))
    ticks = _nice_ticks(lo, hi)
    y0, y1 = ticks[0], ticks[-1] if ticks[-1] > ticks[0] else ticks[0] + 1
    d0, d1 = min(days), max(days)
    if d1 - d0 < 1:
        d0, d1 = d0 - 1, d1 + 1
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(d: float) -> float:
        return round(pad_l + (d - d0) / (d1 - d0) * plot_w, 1)

    def y(v: float) -> float:
        return round(pad_t + (1 - (v - y0) / (y1 - y0)) * plot_h, 1)

    lines: list[dict[str, Any]] = []
    for k, (lbl, p) in enumerate(pts):
        lines.append({"label": lbl, "class": f"s{k}",
                      "points": [{"x": x(d), "y": y(v), "value": _fmt_tick(v) if v == round(v) else f"{v:g}",
                                  "when": t[:16].replace("T", " ")} for t, v, d in p]})
    xt = sorted({min(days), max(days)})
    if len(set(days)) > 2 and max(days) - min(days) >= 2:
        xt.insert(1, (min(days) + max(days)) / 2)
    latest = ", ".join(f"{ln['label']} {ln['points'][-1]['value']}" for ln in lines)
    out: dict[str, Any] = {
        "title": title, "unit": unit, "width": width, "height": height,
        "plot": {"left": pad_l, "right": width - pad_r, "top": pad_t, "bottom": height - pad_b},
        "yTicks": [{"y": y(t), "label": _fmt_tick(t)} for t in ticks if y0 <= t <= y1],
        "xTicks": [{"x": x(d), "label": _label_date(d)} for d in xt],
        "yLabel": unit, "xLabel": "Date",
        "lines": lines,
        "summary": f"{title} ({unit}): {sum(len(p) for _, p in pts)} values from {_label_date(min(days))} to "
                   f"{_label_date(max(days))}; latest {latest}.",
    }
    if band and (band[0] is not None or band[1] is not None):
        blo = band[0] if band[0] is not None else y0
        bhi = band[1] if band[1] is not None else y1
        out["band"] = {"top": y(min(bhi, y1)), "bottom": y(max(blo, y0)), "label": "normal range"}
    return out


def _trends(observations: Sequence[Mapping[str, Any]], *, adult: bool) -> list[dict[str, Any]]:
    bp_s: list[tuple[str, float]] = []
    bp_d: list[tuple[str, float]] = []
    single: dict[str, tuple[str, list[tuple[str, float]]]] = {}
    for o in observations:
        if not _is_vital(o) or o.get("status") == "entered-in-error":
            continue
        t = str(o.get("effectiveDateTime") or "")
        if not t:
            continue
        if _vital_name(o) == "Blood pressure":
            for c in o.get("component") or []:
                v = _qty(c.get("valueQuantity"))
                if v is not None and code(c.get("code")) == SBP:
                    bp_s.append((t, v))
                elif v is not None and code(c.get("code")) == DBP:
                    bp_d.append((t, v))
            continue
        q = o.get("valueQuantity")
        v = _qty(q)
        if v is None or not isinstance(q, Mapping):
            continue
        single.setdefault(_vital_name(o), (_unit(q), []))[1].append((t, v))
    out = []
    if bp_s or bp_d:
        view = trend_view("Blood pressure", "mmHg", [("Systolic", bp_s), ("Diastolic", bp_d)])
        if view:
            out.append({**view, "id": "trend-bp"})
    codes = {r.name: c for c, r in VITAL_RANGES.items()}
    for name in ("Heart rate", "Temperature", "SpO2", "Respiratory rate", "Body weight"):
        if name in single:
            unit, points = single[name]
            r = VITAL_RANGES.get(codes.get(name, ""))
            band = (r.low, r.high) if r is not None and adult else None
            view = trend_view(name, unit, [(name, points)], band)
            if view:
                out.append({**view, "id": "trend-" + name.lower().replace(" ", "-")})
    return out


def _lab_trends(observations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One trend per lab test with two or more numeric results, its own reference range as the band."""
    by: dict[str, tuple[str, list[tuple[str, float]], tuple[float | None, float | None] | None]] = {}
    for o in observations:
        if _is_vital(o) or o.get("status") == "entered-in-error":
            continue
        if not any(code(c) == "laboratory" for c in o.get("category") or []):
            continue
        q, t = o.get("valueQuantity"), str(o.get("effectiveDateTime") or "")
        v = _qty(q)
        if v is None or not t or not isinstance(q, Mapping):
            continue
        name = short_name(cc_text(o.get("code"))) or "Result"
        entry = by.setdefault(name, (_unit(q), [], _own_range(o)))
        entry[1].append((t, v))
    out = []
    for name, (unit, points, band) in sorted(by.items()):
        if len(points) >= 2:
            view = trend_view(name, unit, [(name, points)], band)
            if view:
                out.append({**view, "id": "trend-lab-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())})
    return out


# -- notes --------------------------------------------------------------------------------------------------------

def author_text(ref: Any) -> str:
    """Who wrote it: a Reference's display (reg helper's Practitioner references), or a plain string."""
    if isinstance(ref, str):
        return ref.strip()
    if isinstance(ref, Mapping):
        if ref.get("display"):
            return str(ref["display"])
        ident = ref.get("identifier")
        if isinstance(ident, Mapping) and ident.get("value"):
            return str(ident["value"])
    return ""


def care_team_roles(resources: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """'Practitioner/x' -> 'Physician' from the patient's CareTeams: names the role of an author whose
    Practitioner record is not on this device (a device holds only its own user's)."""
    out: dict[str, str] = {}
    for ct in resources:
        if ct.get("resourceType") != "CareTeam":
            continue
        for p in ct.get("participant") or []:
            ref = str((p.get("member") or {}).get("reference") or "")
            role = cc_text((p.get("role") or [None])[0])
            if ref and role:
                out.setdefault(ref, role)
    return out


def note_author(ref: Any, roles: Mapping[str, str]) -> str:
    """A note's author in words, however it was recorded (display, plain string, or a bare reference)."""
    name = author_text(ref)
    if name:
        return name
    if isinstance(ref, Mapping) and ref.get("reference"):
        role = roles.get(str(ref["reference"]))
        return f"{role} of the care team" if role else "Author not named on this device"
    return ""


def note_rows(docs: Sequence[Mapping[str, Any]], pending: Pending,
              roles: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Title, author and time of each note, newest first (the date once, not in the title and again)."""
    rows = []
    for d in docs:
        if d.get("status") == "entered-in-error":
            continue
        text = note_text(d)
        at = when(d, "date") or when(d.get("context") or {}, "period")
        title = str(d.get("description") or cc_text(d.get("type")) or "Note").strip()
        if at and title.endswith(at[:10]):
            title = title[: -len(at[:10])].rstrip(" -·,") or "Note"
        authors = [a for a in (note_author(x, roles or {}) for x in d.get("author") or []) if a]
        rows.append({"id": d.get("id"), "title": title, "author": ", ".join(authors) or "Author not recorded",
                     "when": at, "text": text, "pending": pending(d)})
    rows.sort(key=lambda n: str(n["when"]), reverse=True)
    return rows


# -- lab reports ---------------------------------------------------------------------------------------------------

_LAB_CATEGORIES: Final = frozenset({"LAB", "laboratory", "HM", "CH", "MB", "SP", "SR", "IMM", "BLB", "CP"})


def _ref_id(ref: Any) -> str:
    r = str((ref or {}).get("reference") or "") if isinstance(ref, Mapping) else ""
    if r.startswith("urn:uuid:"):
        return r[len("urn:uuid:"):]
    return r.rpartition("/")[2]


def grouped_reports(resources: Sequence[Mapping[str, Any]], pending: Pending, *, adult: bool = True,
                    ) -> dict[str, Any]:
    """DiagnosticReports with their results (Observations found through ``DiagnosticReport.result``), newest
    first; the Observations not in any report are returned as ``ungrouped`` lab results.

    Lab reports: category LAB (v2-0074 and friends) or with results. Other reports (Synthea writes a
    "History and physical note" DiagnosticReport with the note's text for every visit) are ``other``."""
    obs = {str(o.get("id")): o for o in resources if o.get("resourceType") == "Observation"}
    grouped: set[str] = set()
    labs: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for d in resources:
        if d.get("resourceType") != "DiagnosticReport" or d.get("status") == "entered-in-error":
            continue
        results = []
        for ref in d.get("result") or []:
            rid = _ref_id(ref)
            o = obs.get(rid)
            if o is None:
                results.append({"id": rid, "name": str((ref or {}).get("display") or "Result"),
                                "value": "not on this device", "words": "", "abnormal": False, "critical": False,
                                "range": ""})
                continue
            grouped.add(rid)
            results.append(_result_row(o, adult=adult))
        cats = {code(c) for c in d.get("category") or []}
        row = {"id": d.get("id"), "name": cc_text(d.get("code")) or "Report", "status": d.get("status") or "",
               "when": when(d, "effectiveDateTime", "effectivePeriod", "issued"),
               "conclusion": str(d.get("conclusion") or ""), "results": results,
               "abnormal": sum(1 for r in results if r["abnormal"]),
               "performer": ", ".join(a for a in (author_text(p) for p in d.get("performer") or []) if a),
               "pending": pending(d)}
        (labs if results or cats & _LAB_CATEGORIES else other).append(row)
    labs.sort(key=lambda r: str(r["when"]), reverse=True)
    other.sort(key=lambda r: str(r["when"]), reverse=True)
    return {"reports": labs, "otherReports": other, "grouped": sorted(grouped)}


def _result_row(o: Mapping[str, Any], *, adult: bool) -> dict[str, Any]:
    q = o.get("valueQuantity")
    v = _qty(q)
    if v is not None and isinstance(q, Mapping):
        value = f"{_num(v)} {_unit(q)}".strip()
    else:
        value = cc_text(o.get("valueCodeableConcept")) or str(o.get("valueString") or "")
    flag = vital_flag(o, code(o.get("code")), adult=adult)
    own = _own_range(o)
    rng = ""
    if own is not None:
        lo, hi = own
        rng = f"{_num(lo)}–{_num(hi)}" if lo is not None and hi is not None else \
            f"≥ {_num(lo)}" if lo is not None else f"≤ {_num(hi)}" if hi is not None else ""
    else:
        texts = [str(r.get("text")) for r in o.get("referenceRange") or [] if isinstance(r, Mapping) and r.get("text")]
        rng = texts[0] if texts else ""
    return {"id": o.get("id"), "name": short_name(cc_text(o.get("code"))) or "Result", "value": value or "no value",
            "range": rng, **flag}


# -- the rest of the record: newest first, with counts -------------------------------------------------------------

def _dispenses(resources: Sequence[Mapping[str, Any]], pending: Pending) -> list[dict[str, Any]]:
    rows = []
    for md in resources:
        if md.get("resourceType") != "MedicationDispense":
            continue
        qty = md.get("quantity") or {}
        amount = f"{_num(float(qty['value']))} {qty.get('unit') or ''}".strip() if _qty(qty) is not None else ""
        rows.append({"id": md.get("id"), "what": cc_text(md.get("medicationCodeableConcept"))
                     or str((md.get("medicationReference") or {}).get("display") or "Medication"),
                     "status": md.get("status") or "", "amount": amount,
                     "when": when(md, "whenHandedOver", "whenPrepared"), "pending": pending(md)})
    rows.sort(key=lambda r: str(r["when"]), reverse=True)
    return rows


#: Types the chart already shows in their own sections (or that are not clinical content for this screen).
_SHOWN: Final = frozenset({
    "Patient", "Condition", "AllergyIntolerance", "MedicationRequest", "MedicationDispense", "Observation",
    "DocumentReference", "DiagnosticReport", "Immunization", "Procedure", "Appointment", "Encounter", "CareTeam",
    "Practitioner", "PractitionerRole", "Organization", "Location", "Provenance", "List", "AuditEvent",
    "Medication", "Subscription"})
#: Plain names for the rest of a US Core record, with the fields that name one record and date it.
_OTHER: Final[Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...]]]] = {
    "MedicationStatement": ("Medications reported", ("medicationCodeableConcept",), ("effectiveDateTime", "effectivePeriod", "dateAsserted")),
    "MedicationAdministration": ("Medications given", ("medicationCodeableConcept",), ("effectiveDateTime", "effectivePeriod")),
    "ServiceRequest": ("Orders and referrals", ("code",), ("authoredOn", "occurrenceDateTime")),
    "CarePlan": ("Care plans", ("category",), ("period", "created")),
    "Goal": ("Goals", ("description",), ("startDate", "statusDate")),
    "Device": ("Devices", ("type",), ("manufactureDate",)),
    "Flag": ("Alerts", ("code",), ("period",)),
    "Specimen": ("Specimens", ("type",), ("receivedTime",)),
    "Coverage": ("Insurance", ("type",), ("period",)),
    "DetectedIssue": ("Detected issues", ("code",), ("identifiedDateTime",)),
    "EpisodeOfCare": ("Episodes of care", ("type",), ("period",)),
    "RelatedPerson": ("Related people", ("relationship",), ("period",)),
    "QuestionnaireResponse": ("Questionnaires", ("questionnaire",), ("authored",)),
    "Communication": ("Messages", ("category",), ("sent",)),
}


def _label(r: Mapping[str, Any], keys: Sequence[str]) -> str:
    for k in keys:
        v = r.get(k)
        if isinstance(v, list):
            v = v[0] if v else None
        text = cc_text(v) if isinstance(v, Mapping) else str(v or "")
        if text:
            return plain_term(text)
    names = r.get("deviceName") or []
    if names and isinstance(names[0], Mapping) and names[0].get("name"):
        return str(names[0]["name"])
    return ""


def other_records(resources: Sequence[Mapping[str, Any]], pending: Pending) -> list[dict[str, Any]]:
    """Every other kind of record the patient's chart holds, by kind, newest first, so nothing on the device
    is invisible to the clinician (whatever the record issue brings in)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        rt = str(r.get("resourceType") or "")
        if rt in _SHOWN or not rt:
            continue
        title, name_keys, date_keys = _OTHER.get(rt, (rt, ("code", "type", "category"), ("date", "period")))
        by.setdefault(title, []).append({
            "id": r.get("id"), "text": _label(r, name_keys) or title.rstrip("s"), "status": str(r.get("status") or ""),
            "when": when(r, *date_keys), "pending": pending(r)})
    out = []
    for title, rows in sorted(by.items()):
        rows.sort(key=lambda x: str(x["when"]), reverse=True)
        out.append({"title": title, "id": "other-" + "".join(ch if ch.isalnum() else "-" for ch in title.lower()),
                    "rows": rows})
    return out


def full_chart(patient: Mapping[str, Any], resources: Sequence[Mapping[str, Any]], pending: Pending, *,
               today: str) -> dict[str, Any]:
    """Everything item 5 adds to the chart view model (merged into :func:`pyclient.chart.chart_view`'s)."""
    years = age_years(str(patient.get("birthDate") or ""), today)
    adult = years is None or years >= ADULT_AGE
    observations = [r for r in resources if r.get("resourceType") == "Observation"]
    reports = grouped_reports(resources, pending, adult=adult)
    docs = [r for r in resources if r.get("resourceType") == "DocumentReference"]
    dispenses = _dispenses(resources, pending)
    return {
        "banner": {"age": age_text(str(patient.get("birthDate") or ""), today,
                                   patient.get("deceasedDateTime") or patient.get("deceasedBoolean")),
                   "allergies": allergy_banner(resources)},
        "flaggedVitals": vitals_rows(observations, pending, adult=adult),
        "rangesNote": "Flags use adult ranges unless the result gives its own." if adult else
                      "Child: only flags the measurement itself carries are shown (adult ranges do not apply).",
        "trends": _trends(observations, adult=adult),
        "labTrends": _lab_trends(observations),
        "labReports": reports["reports"],
        "otherReports": reports["otherReports"],
        "noteRows": note_rows(docs, pending, care_team_roles(resources)),
        "dispenses": dispenses,
        "otherRecords": other_records(resources, pending),
    }
