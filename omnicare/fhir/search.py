"""Search parameters: the ONE table of what is indexed and searchable, the extraction on write, the query on read.

The CapabilityStatement is generated from ``SEARCH_PARAMS`` and ``COMPARTMENT``, so what we advertise cannot
drift from what we index.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from django.db.models import Q, QuerySet

from omnicare.core.errors import BadRequest
from omnicare.core.references import parse_reference  # the syntax lives in core (access reads it too)

from . import r4
from .models import Resource, SearchDate, SearchReference, SearchString, SearchToken


@dataclass(frozen=True)
class Param:
    """A search parameter: ``kind`` (token/string/date/reference) and the element paths it is built from."""

    kind: str
    paths: tuple[str, ...]
    target: str | None = None  # reference params restricted to one target type (``patient`` → Patient)
    doc: str = ""


def _load() -> tuple[dict[str, dict[str, Param]], dict[str, tuple[str, ...]]]:
    """Every R4 type's search parameters and Patient-compartment paths, from the official definitions."""
    defs = r4.definitions()
    params: dict[str, dict[str, Param]] = {t: {} for t in defs["types"]}
    for rtype, table in defs["search"].items():
        for name, (kind, paths, targets) in table.items():
            target = targets[0] if len(targets) == 1 else None
            params[rtype][name] = Param(kind, tuple(paths), target, doc="")
    compartment: dict[str, tuple[str, ...]] = {t: () for t in defs["types"]}
    for rtype, names in defs["compartment"].items():
        if rtype == "Patient":
            continue  # a Patient is in its own compartment (by id)
        in_compartment: list[str] = []
        for n in names:
            param = params.get(rtype, {}).get(n)
            if param is not None and param.kind == "reference":
                in_compartment += [p.split("@")[0] for p in param.paths if "@" not in p or p.endswith("@Patient")]
        compartment[rtype] = tuple(dict.fromkeys(in_compartment))
    return params, compartment


SEARCH_PARAMS, COMPARTMENT = _load()

# Types the store holds: every R4 resource type except AuditEvent, which the audit trail owns (hash-chained,
# append-only; read at /api/audit/events).
NOT_STORED = frozenset({"AuditEvent"})
SUPPORTED_TYPES: tuple[str, ...] = tuple(sorted(t for t in SEARCH_PARAMS if t not in NOT_STORED))

# Result parameters understood everywhere (not per-type filters).
CONTROL_PARAMS = frozenset(
    {"_count", "_cursor", "_total", "_format", "_pretty", "_summary", "_elements", "_sort", "_include",
     "_revinclude"}
)
# _sort keys we can page by keyset (model field, then pk as the tie-breaker).
SORTS = {"_lastUpdated": "last_updated", "_id": "resource_id"}
COMMON_PARAMS = {"_id": "token", "_lastUpdated": "date"}

MIN_DT = datetime(1, 1, 1, tzinfo=UTC)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------------
# Extraction on write
# ---------------------------------------------------------------------------------------------------------------


Step = tuple[str, bool, tuple[str, str] | None]  # (element name, any choice type, [key=value] filter)


@cache
def _compile(path: str) -> tuple[tuple[Step, ...], str]:
    """A path's steps and ``@Type`` target, parsed once per path (it was parsed again for every resource
    and parameter: with the walk itself ~15 % of an import's own CPU, pyinstrument)."""
    path, _, target = path.partition("@")
    steps: list[Step] = []
    for part in path.split("."):
        flt: tuple[str, str] | None = None
        choice = False
        if part.endswith("]"):
            part, _, cond = part[:-1].partition("[")
            if cond == "x":
                choice = True
            else:
                k, _, v = cond.partition("=")
                flt = (k, v)
        steps.append((part, choice, flt))
    return tuple(steps), target


def _step(values: list[Any], step: Step) -> list[Any]:
    """One compiled path step: ``name``, ``name[x]`` (any choice type) or ``name[key=value]`` (a filter)."""
    part, choice, flt = step
    nxt: list[Any] = []
    for v in values:
        if not isinstance(v, dict):
            continue
        if choice:
            items = [val for key, val in v.items() if key.startswith(part) and key[len(part):len(part) + 1].isupper()]
        elif part in v:
            items = [v[part]]
        else:
            continue
        for item in items:
            for x in item if isinstance(item, list) else [item]:
                if flt is None or (isinstance(x, dict) and str(x.get(flt[0])) == flt[1]):
                    nxt.append(x)
    return nxt


def walk(node: Any, path: str) -> Iterator[Any]:
    """Yield every value at compiled ``path`` (lists flattened at every step; ``@Type`` keeps only
    references to that type)."""
    steps, target = _compile(path)
    values: list[Any] = [node]
    for step in steps:
        values = _step(values, step)
        if not values:  # most paths are absent from a given resource: stop at the first missing element
            return
    if target:
        prefix = target + "/"
        values = [
            v for v in values
            if isinstance(v, dict) and (str(v.get("reference") or "").startswith(prefix)
                                        or f"/{prefix}" in str(v.get("reference") or "")
                                        or v.get("type") == target)
        ]
    yield from values


def normalize(text: str) -> str:
    """Lowercase without diacritics ("Müller" → "muller"): what string search compares."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


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


# The string parts of HumanName and Address that a string search matches (FHIR search, "string").
_STRING_PARTS = ("family", "given", "text", "prefix", "suffix", "line", "city", "district", "state",
                 "postalCode", "country")


def _strings_of(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in _STRING_PARTS:
            part = value.get(key)
            for x in part if isinstance(part, list) else [part]:
                if isinstance(x, str) and x:
                    yield x


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
                if param.kind in ("token", "uri"):
                    for system, code in _tokens_of(value):
                        key = (name, system[:255], code[:255])
                        if key not in seen:
                            seen.add(key)
                            rows.tokens.append(key)
                elif param.kind == "string":
                    for text in _strings_of(value):
                        skey = (name, normalize(text)[:255])
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


# A value's shape: which branch of the query it takes (the SQL's structure), apart from the values bound into it.
# ``_value_parts`` decides the branch from the raw text; ``_value_q`` builds the filter from the shape and the
# values alone, so two searches of the same shapes compile to the same SQL (``fhir/sqlcache.py``).
Shape = tuple[Any, ...]


def _value_parts(name: str, param: Param, modifier: str, raw: str) -> tuple[Shape, list[Any]]:
    """The shape and the values of ONE value of a parameter (values separated by commas are ORed by the caller)."""
    if param.kind in ("token", "uri"):
        if modifier not in ("", "not"):
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        if "|" in raw:
            system, code = raw.split("|", 1)  # "|code" means: no system
            return ("token", modifier, "system", bool(code)), ([system, code] if code else [system])
        return ("token", modifier, "code", False), [raw]
    if param.kind == "string":
        if modifier not in ("", "exact", "contains"):
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        return ("string", modifier), [normalize(raw)]
    if param.kind == "date":
        if modifier:
            raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
        prefix, lo, hi = _date_arg(name, raw)
        return ("date", prefix), [lo, hi]
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
    return ("reference", bool(target_type)), ([target_id, target_type] if target_type else [target_id])


def _value_q(resource_type: str, name: str, shape: Shape, values: list[Any]) -> Q:
    """The filter for ONE value, from its shape and its (possibly placeholder) values."""
    kind = shape[0]
    if kind == "_id":
        return Q(resource_id__in=values)
    base = {"resource_type": resource_type, "param": name}
    if kind == "token":
        _, modifier, form, has_code = shape
        if form == "system":
            filt: dict[str, Any] = {**base, "system": values[0]}
            if has_code:
                filt["code"] = values[1]
        else:
            filt = {**base, "code": values[0]}
        sub = SearchToken.objects.filter(**filt).values("resource_id")
        return ~Q(pk__in=sub) if modifier == "not" else Q(pk__in=sub)
    if kind == "string":
        lookup = {"": "value__startswith", "exact": "value", "contains": "value__contains"}[shape[1]]
        return Q(pk__in=SearchString.objects.filter(**base, **{lookup: values[0]}).values("resource_id"))
    if kind == "date":
        prefix = shape[1]
        cond = _range_q("eq" if prefix == "ne" else prefix, values[0], values[1], "start", "end")
        sub = SearchDate.objects.filter(Q(**base) & cond).values("resource_id")
        return ~Q(pk__in=sub) if prefix == "ne" else Q(pk__in=sub)
    filt = {**base, "target_id": values[0]}
    if shape[1]:
        filt["target_type"] = values[1]
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


# Cost limits of one search (each is a clear 400 ``too-costly`` above it).
MAX_SEARCH_PARAMS = 50
MAX_OR_VALUES = 100
MAX_ID_VALUES = 1000


#: One parameter of a search as parsed: (key, per-value shapes and values) or, for what has no shape (a
#: ``_lastUpdated`` filter), the finished filter.
_Term = tuple[str, list[tuple[Shape, list[Any]]] | Q]


@dataclass
class ParsedSearch:
    resource_type: str
    terms: list[_Term]
    used: list[tuple[str, str]]  # the parameters applied (echoed in self/next links)
    unknown: list[str]
    patient_ids: list[str]  # patients named by patient/subject filters (for the access check)

    def filters(self, bind: Any = None) -> list[Q]:
        """One filter per parameter; ``bind`` maps each value to what goes into the filter (a placeholder when
        the SQL is compiled for reuse, see ``fhir/sqlcache.py``)."""
        out = []
        for key, term in self.terms:
            if isinstance(term, Q):
                out.append(term)
                continue
            name = key.partition(":")[0]
            cond = Q()
            for shape, values in term:
                cond |= _value_q(self.resource_type, name, shape,
                                 values if bind is None else [bind(v) for v in values])
            out.append(cond)
        return out

    @property
    def queryset(self) -> QuerySet[Resource]:
        """The filtered current-state queryset (the ORM path: any shape, any caller)."""
        qs = Resource.objects.filter(resource_type=self.resource_type, deleted=False)
        for cond in self.filters():
            qs = qs.filter(cond)
        return qs

    def shape(self) -> Shape | None:
        """What determines the SQL apart from bound values; None when some filter binds no placeholder
        (dates are compared as datetimes: those searches take the ORM path)."""
        out: list[Any] = [self.resource_type]
        for key, term in self.terms:
            if isinstance(term, Q):
                return None
            for shape, values in term:
                if shape[0] == "date":
                    return None
                out.append((key, shape, len(values)))
            out.append(None)  # the end of one parameter's OR group
        return tuple(out)

    def values(self) -> list[Any]:
        return [v for _, term in self.terms if not isinstance(term, Q) for _, values in term for v in values]

    def matches(self, resource_id: str, last_updated: datetime, rows: IndexRows) -> bool:
        """The same search evaluated in memory against one resource's index rows (``index_rows`` of any
        version's body, not only the stored current one): what a subscription needs for the state before an
        update (SubscriptionTopic ``queryCriteria.previous``) and for each version of a batch. Mirrors
        ``_value_q`` / ``_common_q`` branch for branch; ``tests/omnicare/subscriptions/test_matcher.py`` holds
        the two to the same answers."""
        for (key, term), (used_key, raw) in zip(self.terms, self.used, strict=True):
            assert key == used_key
            if isinstance(term, Q):  # a _lastUpdated filter: its values, ORed
                if not any(_last_updated_holds(last_updated, v) for v in raw.split(",") if v != ""):
                    return False
                continue
            name = key.partition(":")[0]
            if not any(_value_holds(name, shape, values, resource_id, rows) for shape, values in term):
                return False
        return True


def _value_holds(name: str, shape: Shape, values: list[Any], resource_id: str, rows: IndexRows) -> bool:
    """``_value_q`` in memory: does ONE value of a parameter hold for these index rows."""
    kind = shape[0]
    if kind == "_id":
        return resource_id in values
    if kind == "token":
        _, modifier, form, has_code = shape
        if form == "system":
            found = any(p == name and s == values[0] and (not has_code or c == values[1]) for p, s, c in rows.tokens)
        else:
            found = any(p == name and c == values[0] for p, _, c in rows.tokens)
        return not found if modifier == "not" else found
    if kind == "string":
        q, modifier = str(values[0]), shape[1]
        texts = [v for p, v in rows.strings if p == name]
        if modifier == "exact":
            return q in texts
        return any((q in v) if modifier == "contains" else v.startswith(q) for v in texts)
    if kind == "date":
        prefix, lo, hi = shape[1], values[0], values[1]
        found = any(p == name and _range_holds("eq" if prefix == "ne" else prefix, lo, hi, start, end)
                    for p, start, end in rows.dates)
        return not found if prefix == "ne" else found
    return any(p == name and t_id == values[0] and (not shape[1] or t_type == values[1])
               for p, t_type, t_id in rows.refs)


def _range_holds(prefix: str, lo: datetime, hi: datetime, start: datetime, end: datetime) -> bool:
    """``_range_q`` in memory."""
    if prefix == "eq":
        return start >= lo and end <= hi
    if prefix == "gt":
        return end > hi
    if prefix == "ge":
        return end > lo
    if prefix == "lt":
        return start < lo
    return start < hi  # le


def _last_updated_holds(last_updated: datetime, raw: str) -> bool:
    """``_common_q`` for ``_lastUpdated`` in memory (an instant: the range [t, t+1µs))."""
    prefix, lo, hi = _date_arg("_lastUpdated", raw)
    if prefix in ("eq", "ne"):
        inside = lo <= last_updated < hi
        return not inside if prefix == "ne" else inside
    return {"gt": last_updated >= hi, "ge": last_updated >= lo, "lt": last_updated < lo,
            "le": last_updated < hi}[prefix]


def build_query(resource_type: str, params: list[tuple[str, str]]) -> ParsedSearch:
    """Parse ``params`` (query pairs in order, control params skipped) into the filters of a current-state search."""
    table = SEARCH_PARAMS[resource_type]
    terms: list[_Term] = []
    used: list[tuple[str, str]] = []
    unknown: list[str] = []
    patients: list[str] = []
    filters = [k for k, _ in params if k.partition(":")[0] not in CONTROL_PARAMS]
    if len(filters) > MAX_SEARCH_PARAMS:
        raise BadRequest(f"At most {MAX_SEARCH_PARAMS} search parameters per search", code="too-costly")
    for key, raw in params:
        name, _, modifier = key.partition(":")
        if name in CONTROL_PARAMS:
            continue
        values = [v for v in raw.split(",") if v != ""]
        if not values:
            continue
        limit = MAX_ID_VALUES if name == "_id" else MAX_OR_VALUES
        if len(values) > limit:
            # Each value is one OR term (SQLite refuses expression trees deeper than 1,000): a clear 400.
            raise BadRequest(f"At most {limit} values for {name[:40]} in one search", code="too-costly",
                             expression=[name[:40]])
        if name == "_id" and not modifier:
            terms.append((key, [(("_id",), values)]))  # one IN list, not an OR chain
        elif name in COMMON_PARAMS:
            if modifier:
                raise BadRequest(f"Unsupported modifier :{modifier} on {name}", code="not-supported")
            cond = Q()
            for v in values:
                cond |= _common_q(name, modifier, v)
            terms.append((key, cond))
        elif name in table:
            param = table[name]
            parts = []
            for v in values:
                parts.append(_value_parts(name, param, modifier, v))
                if param.kind == "reference" and name in ("patient", "subject"):
                    ref = parse_reference(v)
                    if ref is None or ref[0] == "Patient":
                        patients.append(ref[1] if ref else v)
            terms.append((key, parts))
        else:
            unknown.append(key)
            continue
        used.append((key, raw))
    return ParsedSearch(resource_type, terms, used, unknown, patients)
