"""Search parameters: the ONE table of what is indexed and searchable, the extraction on write, the query on read.

The CapabilityStatement is generated from ``SEARCH_PARAMS`` and ``COMPARTMENT``, so what we advertise cannot
drift from what we index.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet

from omnicare.core.errors import BadRequest

from .models import Resource, SearchDate, SearchReference, SearchString, SearchToken


@dataclass(frozen=True)
class Param:
    """A search parameter: ``kind`` (token/string/date/reference) and the element paths it is built from."""

    kind: str
    paths: tuple[str, ...]
    target: str | None = None  # reference params restricted to one target type (``patient`` → Patient)
    doc: str = ""


def _p(kind: str, *paths: str, target: str | None = None, doc: str = "") -> Param:
    return Param(kind, paths, target, doc)


_NAME = ("name.family", "name.given", "name.text", "name.prefix", "name.suffix")

SEARCH_PARAMS: dict[str, dict[str, Param]] = {
    "Patient": {
        "name": _p("string", *_NAME, doc="Any part of a name (prefix match, case and accent insensitive)"),
        "family": _p("string", "name.family"),
        "given": _p("string", "name.given"),
        "identifier": _p("token", "identifier", doc="system|value"),
        "birthdate": _p("date", "birthDate"),
        "gender": _p("token", "gender"),
        "active": _p("token", "active"),
        "general-practitioner": _p("reference", "generalPractitioner"),
    },
    "Practitioner": {
        "name": _p("string", *_NAME),
        "family": _p("string", "name.family"),
        "given": _p("string", "name.given"),
        "identifier": _p("token", "identifier"),
        "active": _p("token", "active"),
    },
    "CareTeam": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "participant": _p("reference", "participant.member"),
        "status": _p("token", "status"),
        "category": _p("token", "category"),
    },
    "Encounter": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "status": _p("token", "status"),
        "class": _p("token", "class"),
        "type": _p("token", "type"),
        "date": _p("date", "period"),
        "participant": _p("reference", "participant.individual"),
    },
    "Observation": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "encounter"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "status": _p("token", "status"),
        "date": _p("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
    },
    "Condition": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "encounter"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "clinical-status": _p("token", "clinicalStatus"),
        "verification-status": _p("token", "verificationStatus"),
        "onset-date": _p("date", "onsetDateTime", "onsetPeriod"),
        "recorded-date": _p("date", "recordedDate"),
    },
    "AllergyIntolerance": {
        "patient": _p("reference", "patient", target="Patient"),
        "code": _p("token", "code"),
        "clinical-status": _p("token", "clinicalStatus"),
        "verification-status": _p("token", "verificationStatus"),
        "criticality": _p("token", "criticality"),
        "date": _p("date", "recordedDate"),
    },
    "MedicationRequest": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "encounter"),
        "status": _p("token", "status"),
        "intent": _p("token", "intent"),
        "code": _p("token", "medicationCodeableConcept"),
        "authoredon": _p("date", "authoredOn"),
        "requester": _p("reference", "requester"),
    },
    "DocumentReference": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "context.encounter"),
        "status": _p("token", "status"),
        "type": _p("token", "type"),
        "category": _p("token", "category"),
        "date": _p("date", "date"),
        "author": _p("reference", "author"),
    },
    "Communication": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "encounter"),
        "status": _p("token", "status"),
        "category": _p("token", "category"),
        "sent": _p("date", "sent"),
        "recipient": _p("reference", "recipient"),
        "sender": _p("reference", "sender"),
    },
    # CDS (omnicare/cds): a medication-safety finding and the clinician's decision about it.
    "DetectedIssue": {
        "patient": _p("reference", "patient", target="Patient"),
        "implicated": _p("reference", "implicated"),
        "code": _p("token", "code"),
        "identifier": _p("token", "identifier"),
        "status": _p("token", "status"),
        "identified": _p("date", "identifiedDateTime"),
    },
}

# HL7 v2 interface (issue 12): the types lab, scheduling and pharmacy feeds write (added only if absent).
for _rt, _params in {
    "DiagnosticReport": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "encounter": _p("reference", "encounter"),
        "identifier": _p("token", "identifier"),
        "code": _p("token", "code"),
        "category": _p("token", "category"),
        "status": _p("token", "status"),
        "date": _p("date", "effectiveDateTime", "effectivePeriod"),
        "result": _p("reference", "result"),
    },
    "Appointment": {
        "patient": _p("reference", "participant.actor", target="Patient"),
        "actor": _p("reference", "participant.actor"),
        "identifier": _p("token", "identifier"),
        "status": _p("token", "status"),
        "date": _p("date", "start"),
    },
    "MedicationDispense": {
        "patient": _p("reference", "subject", target="Patient"),
        "subject": _p("reference", "subject"),
        "identifier": _p("token", "identifier"),
        "status": _p("token", "status"),
        "prescription": _p("reference", "authorizingPrescription"),
        "whenhandedover": _p("date", "whenHandedOver"),
    },
}.items():
    SEARCH_PARAMS.setdefault(_rt, _params)

SUPPORTED_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMS)

# Patient compartment: which elements of a resource make it belong to a Patient (only Patient targets count).
COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Patient": (),  # itself
    "Practitioner": (),
    "CareTeam": ("subject", "participant.member"),
    "Encounter": ("subject",),
    "Observation": ("subject", "performer"),
    "Condition": ("subject", "asserter"),
    "AllergyIntolerance": ("patient", "recorder", "asserter"),
    "MedicationRequest": ("subject",),
    "DocumentReference": ("subject", "author"),
    "Communication": ("subject", "sender", "recipient"),
    "DetectedIssue": ("patient",),
}
# HL7 v2 interface (issue 12)
COMPARTMENT.setdefault("DiagnosticReport", ("subject",))
COMPARTMENT.setdefault("Appointment", ("participant.actor",))
COMPARTMENT.setdefault("MedicationDispense", ("subject", "receiver"))

# Result parameters understood everywhere (not per-type filters).
CONTROL_PARAMS = frozenset(
    {"_count", "_cursor", "_total", "_format", "_pretty", "_summary", "_elements", "_sort"}
)
# _sort keys we can page by keyset (model field, then pk as the tie-breaker).
SORTS = {"_lastUpdated": "last_updated", "_id": "resource_id"}
COMMON_PARAMS = {"_id": "token", "_lastUpdated": "date"}

MIN_DT = datetime(1, 1, 1, tzinfo=UTC)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# Extraction on write
# ---------------------------------------------------------------------------------------------------------------


def walk(node: Any, path: str) -> Iterator[Any]:
    """Yield every value at dotted ``path`` (lists flattened at every step)."""
    values: list[Any] = [node]
    for part in path.split("."):
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, dict) and part in v:
                item = v[part]
                if isinstance(item, list):
                    nxt.extend(item)
                else:
                    nxt.append(item)
        values = nxt
    yield from values


def normalize(text: str) -> str:
    """Lowercase without diacritics ("Müller" → "muller"): what string search compares."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def parse_reference(ref: str) -> tuple[str, str] | None:
    """``"Patient/123"`` or ``"https://x/fhir/Patient/123[/_history/2]"`` → ("Patient", "123")."""
    if not ref or ref.startswith(("#", "urn:")):
        return None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        return None
    return parts[-2], parts[-1]


def _plus(start: datetime, delta: timedelta) -> datetime:
    """``start + delta``, clamped at the last representable instant (9999-12-31 has no "next day")."""
    try:
        return start + delta
    except OverflowError:
        return MAX_DT


def parse_date_range(value: str) -> tuple[datetime, datetime]:
    """A FHIR date/dateTime/instant (possibly partial) as the half-open range [start, end)."""
    v = value.strip()
    try:
        if len(v) == 4:
            y = int(v)
            return datetime(y, 1, 1, tzinfo=UTC), (datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else MAX_DT)
        if len(v) == 7:
            y, m = int(v[:4]), int(v[5:7])
            start = datetime(y, m, 1, tzinfo=UTC)
            end = MAX_DT if (y, m) == (9999, 12) else datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            return start, end
        if len(v) == 10:
            d = date.fromisoformat(v)
            start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return start, _plus(start, timedelta(days=1))
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        dt = dt.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a FHIR date: {value!r}") from exc
    # The precision of the given value is the width of the range.
    if "." in v.split("T", 1)[-1]:
        return dt, _plus(dt, timedelta(microseconds=1))
    return dt, _plus(dt, timedelta(seconds=1))  # FHIR dateTime with a time always has seconds


@dataclass
class IndexRows:
    tokens: list[tuple[str, str, str]]  # (param, system, code)
    strings: list[tuple[str, str]]  # (param, value)
    dates: list[tuple[str, datetime, datetime]]
    refs: list[tuple[str, str, str]]  # (param, target_type, target_id)


def _tokens_of(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        if "coding" in value or "text" in value:  # CodeableConcept
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and coding.get("code"):
                    yield str(coding.get("system") or ""), str(coding["code"])
        elif "value" in value:  # Identifier
            yield str(value.get("system") or ""), str(value["value"])
        elif "code" in value:  # Coding
            yield str(value.get("system") or ""), str(value["code"])


def _dates_of(value: Any) -> Iterator[tuple[datetime, datetime]]:
    try:
        if isinstance(value, str):
            yield parse_date_range(value)
        elif isinstance(value, dict) and (
            "start" in value or "end" in value
        ):  # Period; open ends are unbounded
            start = parse_date_range(value["start"])[0] if value.get("start") else MIN_DT
            end = parse_date_range(value["end"])[1] if value.get("end") else MAX_DT
            yield start, end
    except (ValueError, TypeError):
        return  # validation already rejected real garbage; never fail a write over the index


def index_rows(resource_type: str, body: dict[str, Any]) -> IndexRows:
    """Everything the search index stores for one resource's current state."""
    rows = IndexRows([], [], [], [])
    for name, param in SEARCH_PARAMS.get(resource_type, {}).items():
        seen: set[Any] = set()
        for path in param.paths:
            for value in walk(body, path):
                if param.kind == "token":
                    for system, code in _tokens_of(value):
                        key = (name, system[:255], code[:255])
                        if key not in seen:
                            seen.add(key)
                            rows.tokens.append(key)
                elif param.kind == "string" and isinstance(value, str):
                    skey = (name, normalize(value)[:255])
                    if skey not in seen:
                        seen.add(skey)
                        rows.strings.append(skey)
                elif param.kind == "date":
                    for start, end in _dates_of(value):
                        rows.dates.append((name, start, end))
                elif param.kind == "reference" and isinstance(value, dict):
                    parsed = parse_reference(str(value.get("reference") or ""))
                    if parsed and (name, *parsed) not in seen:
                        seen.add((name, *parsed))
                        rows.refs.append((name, parsed[0][:64], parsed[1][:64]))
    return rows


def compartment_patients(resource_type: str, resource_id: str, body: dict[str, Any]) -> list[str]:
    """Patient ids whose compartment holds this resource (sorted, unique)."""
    if resource_type == "Patient":
        return [resource_id]
    found: set[str] = set()
    for path in COMPARTMENT.get(resource_type, ()):
        for value in walk(body, path):
            if isinstance(value, dict):
                parsed = parse_reference(str(value.get("reference") or ""))
                if parsed and parsed[0] == "Patient":
                    found.add(parsed[1])
    return sorted(found)


# ---------------------------------------------------------------------------------------------------------------
# Query on read
# ---------------------------------------------------------------------------------------------------------------

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")


def _split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in DATE_PREFIXES and value[2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _range_q(prefix: str, lo: datetime, hi: datetime, start: str, end: str) -> Q:
    """Resource range [start, end) against search range [lo, hi) per the FHIR prefix rules."""
    if prefix == "eq":
        return Q(**{f"{start}__gte": lo, f"{end}__lte": hi})
    if prefix == "ne":
        return ~Q(**{f"{start}__gte": lo, f"{end}__lte": hi})
    if prefix == "gt":
        return Q(**{f"{end}__gt": hi})
    if prefix == "ge":
        return Q(**{f"{end}__gt": lo})
    if prefix == "lt":
        return Q(**{f"{start}__lt": lo})
    return Q(**{f"{start}__lt": hi})  # le


def _date_arg(param: str, raw: str) -> tuple[str, datetime, datetime]:
    prefix, value = _split_prefix(raw)
    try:
        lo, hi = parse_date_range(value)
    except ValueError as exc:
        raise BadRequest(f"Invalid date for search parameter {param}", expression=[param]) from exc
    return prefix, lo, hi


def _value_q(resource_type: str, name: str, param: Param, modifier: str, raw: str) -> Q:
    """The filter for ONE value of a parameter (values separated by commas are ORed by the caller)."""
    base = {"resource_type": resource_type, "param": name}
    if param.kind == "token":
        if modifier not in ("", "not"):
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        if "|" in raw:
            system, code = raw.split("|", 1)
            filt: dict[str, Any] = dict(base)
            if code:
                filt["code"] = code
            filt["system"] = system  # "|code" means: no system
            if not code:
                filt.pop("code", None)
        else:
            filt = {**base, "code": raw}
        sub = SearchToken.objects.filter(**filt).values("resource_id")
        return ~Q(pk__in=sub) if modifier == "not" else Q(pk__in=sub)
    if param.kind == "string":
        needle = normalize(raw)
        if modifier == "":
            sub = SearchString.objects.filter(**base, value__startswith=needle)
        elif modifier == "exact":
            sub = SearchString.objects.filter(**base, value=needle)
        elif modifier == "contains":
            sub = SearchString.objects.filter(**base, value__contains=needle)
        else:
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        return Q(pk__in=sub.values("resource_id"))
    if param.kind == "date":
        if modifier:
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        prefix, lo, hi = _date_arg(name, raw)
        cond = _range_q("eq" if prefix == "ne" else prefix, lo, hi, "start", "end")
        sub = SearchDate.objects.filter(Q(**base) & cond).values("resource_id")
        return ~Q(pk__in=sub) if prefix == "ne" else Q(pk__in=sub)
    # reference
    target_type = param.target
    if modifier and modifier not in SUPPORTED_TYPES:
        raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
    if modifier:
        target_type = modifier
    parsed = parse_reference(raw)
    if parsed:
        target_type, target_id = parsed
    else:
        target_id = raw
    filt = {**base, "target_id": target_id}
    if target_type:
        filt["target_type"] = target_type
    return Q(pk__in=SearchReference.objects.filter(**filt).values("resource_id"))


def _common_q(name: str, modifier: str, raw: str) -> Q:
    if name == "_id":
        return Q(resource_id=raw)
    prefix, lo, hi = _date_arg(name, raw)
    # last_updated is an instant: the range [t, t+1µs).
    if prefix in ("eq", "ne"):
        q = Q(last_updated__gte=lo, last_updated__lt=hi)
        return ~q if prefix == "ne" else q
    return {
        "gt": Q(last_updated__gte=hi),
        "ge": Q(last_updated__gte=lo),
        "lt": Q(last_updated__lt=lo),
        "le": Q(last_updated__lt=hi),
    }[prefix]


@dataclass
class ParsedSearch:
    queryset: QuerySet[Resource]
    used: list[tuple[str, str]]  # the parameters applied (echoed in self/next links)
    unknown: list[str]
    patient_ids: list[str]  # patients named by patient/subject filters (for the access check)


def build_query(resource_type: str, params: list[tuple[str, str]]) -> ParsedSearch:
    """Turn ``params`` (query pairs in order, control params excluded) into a filtered current-state queryset."""
    qs = Resource.objects.filter(resource_type=resource_type, deleted=False)
    table = SEARCH_PARAMS[resource_type]
    used: list[tuple[str, str]] = []
    unknown: list[str] = []
    patients: list[str] = []
    for key, raw in params:
        name, _, modifier = key.partition(":")
        if name in CONTROL_PARAMS:
            continue
        values = [v for v in raw.split(",") if v != ""]
        if not values:
            continue
        if name in COMMON_PARAMS:
            if modifier:
                raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
            cond = Q()
            for v in values:
                cond |= _common_q(name, modifier, v)
        elif name in table:
            param = table[name]
            cond = Q()
            for v in values:
                cond |= _value_q(resource_type, name, param, modifier, v)
                if param.kind == "reference" and name in ("patient", "subject"):
                    ref = parse_reference(v)
                    if ref is None or ref[0] == "Patient":
                        patients.append(ref[1] if ref else v)
        else:
            unknown.append(key)
            continue
        qs = qs.filter(cond)
        used.append((key, raw))
    return ParsedSearch(qs, used, unknown, patients)
