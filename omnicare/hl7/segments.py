"""HL7 v2 datatypes and the segments every message map shares (CX, XPN, XAD, XTN, CWE, XCN, TS; PID; the
per-message ``Ctx``), used by ``mapping`` (ADT, ORU, SIU) and ``pharmacy`` (RDS) alike.

Split from ``mapping`` so that the pharmacy map builds on them without importing ``mapping`` (which
dispatches to it). The datatype maps follow the HL7 v2-to-FHIR IG (see ``mapping``'s docstring).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q

from omnicare.fhir.models import Resource, SearchToken
from pyclient.merge import merge

from .message import MessageError, Parsed, Rep, Seg, rep_get
from .models import InboundMessage, MappedResource

NS = uuid.UUID("6f1c2a8e-3b7d-5e0f-9a41-0c6d2b9e7a15")
V2 = "http://terminology.hl7.org/CodeSystem/v2-"

CODE_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "UCUM": "http://unitsofmeasure.org",
    "CVX": "http://hl7.org/fhir/sid/cvx",
}


def rid(*parts: str) -> str:
    return str(uuid.uuid5(NS, "|".join(parts)))


# -------------------------------------------------------------------------------------------------------------
# Datatypes
# -------------------------------------------------------------------------------------------------------------


def _tz() -> str:
    return "Z"


def fhir_datetime(v: str) -> str | None:
    """TS/DTM ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`` -> FHIR dateTime (None when unreadable)."""
    m = re.fullmatch(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?", v.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if not mo:
        return y
    if not d:
        return f"{y}-{mo}"
    if not h:
        return f"{y}-{mo}-{d}"
    zone = f"{tz[:3]}:{tz[3:]}" if tz else _tz()
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{frac or ''}{zone}"


def fhir_date(v: str) -> str | None:
    out = fhir_datetime(v)
    return out[:10] if out else None


def code_system(name: str, sender: str) -> str:
    """A coding system name from CWE.3 -> FHIR system URI (HL7 tables, common vocabularies, local codes)."""
    key = name.strip().upper()
    if not key:
        return ""
    if key in CODE_SYSTEMS:
        return CODE_SYSTEMS[key]
    if re.fullmatch(r"HL7\d{4}", key):
        return V2 + key[3:]
    if key.startswith(("HTTP://", "HTTPS://", "URN:")):
        return name.strip()
    # 99zzz / L / local names: the sender's own code system
    return f"urn:omnicare:hl7:{slugify(sender)}:codes:{slugify(name)}"


def slugify(v: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", v.strip()).strip("-").lower() or "local"


def cwe(rep: Rep | None, sender: str) -> dict[str, Any] | None:
    """CWE/CE/CNE -> CodeableConcept (primary and alternate coding; CWE.9 or the display as text)."""
    if not rep:
        return None
    codings = []
    for c, d, s in ((1, 2, 3), (4, 5, 6)):
        code, display, system = rep_get(rep, c), rep_get(rep, d), rep_get(rep, s)
        if code:
            coding: dict[str, Any] = {"code": code}
            if system:
                coding["system"] = code_system(system, sender)
            if display:
                coding["display"] = display
            codings.append(coding)
    text = rep_get(rep, 9) or rep_get(rep, 2) or (rep_get(rep, 1) if not codings else "")
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    if text:
        out["text"] = text
    return out or None


def authority_system(rep: Rep, c: int, sender: str) -> str:
    """HD (namespace^universal id^type) in component ``c`` -> an identifier system URI."""
    ns = rep_get(rep, c, 1)
    uid = rep_get(rep, c, 2)
    kind = rep_get(rep, c, 3).upper()
    if uid and kind == "ISO":
        return f"urn:oid:{uid}"
    if uid and kind in ("URI", "URL", "UUID"):
        return uid if kind != "UUID" else f"urn:uuid:{uid}"
    return f"urn:omnicare:hl7:aa:{slugify(ns or sender)}"


def cx(rep: Rep, sender: str) -> dict[str, Any] | None:
    value = rep_get(rep, 1)
    if not value:
        return None
    ident: dict[str, Any] = {"system": authority_system(rep, 4, sender), "value": value}
    if rep_get(rep, 5):
        ident["type"] = {"coding": [{"system": V2 + "0203", "code": rep_get(rep, 5)}]}
    return ident


NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "B": "old",
            "C": "old", "U": "temp", "S": "anonymous", "T": "temp", "P": "usual"}


def xpn(rep: Rep) -> dict[str, Any] | None:
    name: dict[str, Any] = {}
    if rep_get(rep, 1):
        name["family"] = rep_get(rep, 1)
    given = [g for g in (rep_get(rep, 2), *rep_get(rep, 3).split(" ")) if g]
    if given:
        name["given"] = given
    if rep_get(rep, 5):
        name["prefix"] = [rep_get(rep, 5)]
    if rep_get(rep, 4):
        name["suffix"] = [rep_get(rep, 4)]
    if not name:
        return None
    use = NAME_USE.get(rep_get(rep, 7).upper())
    if use:
        name["use"] = use
    return name


ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "billing", "M": "home"}


def xad(rep: Rep) -> dict[str, Any] | None:
    addr: dict[str, Any] = {}
    lines = [v for v in (rep_get(rep, 1), rep_get(rep, 2)) if v]
    if lines:
        addr["line"] = lines
    for key, c in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if rep_get(rep, c):
            addr[key] = rep_get(rep, c)
    if rep_get(rep, 9):
        addr["district"] = rep_get(rep, 9)
    if not addr:
        return None
    kind = rep_get(rep, 7).upper()
    if kind in ADDRESS_USE:
        addr["use"] = ADDRESS_USE[kind]
    if kind == "M":
        addr["type"] = "postal"
    return addr


TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "home", "ASN": "work", "EMR": "home",
               "PRS": "mobile", "BPN": "work"}


def xtn(rep: Rep, default_use: str = "home") -> dict[str, Any] | None:
    equip = rep_get(rep, 3).upper()
    email = rep_get(rep, 4)
    number = rep_get(rep, 1)
    if rep_get(rep, 7):
        number = "".join(p for p in (
            f"+{rep_get(rep, 5)} " if rep_get(rep, 5) else "",
            f"({rep_get(rep, 6)}) " if rep_get(rep, 6) else "", rep_get(rep, 7),
            f" ext. {rep_get(rep, 8)}" if rep_get(rep, 8) else "",
        ))
    if equip in ("INTERNET", "X.400") or (email and not number):
        if not email:
            return None
        return {"system": "email", "value": email}
    if not number:
        return None
    cp: dict[str, Any] = {"system": {"FX": "fax", "BP": "pager"}.get(equip, "phone"), "value": number}
    use = "mobile" if equip == "CP" else TELECOM_USE.get(rep_get(rep, 2).upper(), default_use)
    cp["use"] = use
    return cp


GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}


# -------------------------------------------------------------------------------------------------------------
# The context of one message: pending writes, merge bases, what to audit
# -------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    resources: list[str]
    conflicts: list[str]
    patients: list[str]


@dataclass
class Ctx:
    parsed: Parsed
    message: InboundMessage
    now: datetime
    sender: str = ""
    writes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    mapped: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    patient_id: str = ""

    rows: dict[tuple[str, str], Resource | None] = field(default_factory=dict)
    sent_at: datetime | None = None  # MSH-7: when the sender says it created the message
    stale: list[str] = field(default_factory=list)

    def current(self, rtype: str, rid_: str) -> Resource | None:
        """The live record (memoised: every round trip counts when a lab sends hundreds a minute)."""
        key = (rtype, rid_)
        if key not in self.rows:
            row = Resource.objects.filter(resource_type=rtype, resource_id=rid_).first()
            self.rows[key] = row if row is not None and not row.deleted else None
        return self.rows[key]

    def prefetch(self, keys: list[tuple[str, str]]) -> None:
        """Load several records in one query (ids are deterministic, so a mapper knows them up front)."""
        wanted = [k for k in keys if k not in self.rows]
        if not wanted:
            return
        cond = Q()
        for rtype, rid_ in wanted:
            cond |= Q(resource_type=rtype, resource_id=rid_)
        found = {(r.resource_type, r.resource_id): r for r in Resource.objects.filter(cond)}
        for k in wanted:
            row = found.get(k)
            self.rows[k] = row if row is not None and not row.deleted else None

    def upsert(self, rtype: str, rid_: str, theirs: dict[str, Any]) -> dict[str, Any]:
        """Queue ``theirs`` for ``rtype/rid_``: created as is, or merged into the current record."""
        theirs = {"resourceType": rtype, "id": rid_, **{k: v for k, v in theirs.items() if v not in (None, [], {})}}
        key = (rtype, rid_)
        self.mapped[key] = theirs
        pending = self.writes.get(key)
        row = self.current(rtype, rid_)
        ours = pending if pending is not None else (row.body if row is not None else None)
        if ours is None:
            self.writes[key] = theirs
            return theirs
        base_row = MappedResource.objects.filter(resource_type=rtype, resource_id=rid_).first()
        if (pending is None and base_row is not None and base_row.source_time is not None
                and self.sent_at is not None and self.sent_at < base_row.source_time):
            # An older message than the one this record was last mapped from (a late retry, a replay, a
            # feed resent out of order): it must not undo newer information. Left as it is.
            del self.mapped[key]
            self.stale.append(f"{rtype}/{rid_}")
            return ours
        base = base_row.body if base_row is not None and pending is None else None
        if pending is not None:
            base = pending
        result = merge(base, ours, theirs)
        self.conflicts += [f"{rtype}/{rid_}:{c.path}" for c in result.conflicts]
        self.writes[key] = result.merged
        return result.merged

    def patch(self, rtype: str, rid_: str, change: dict[str, Any]) -> None:
        """Change a few elements of an existing record (cancel, discharge, link) without re-mapping it."""
        key = (rtype, rid_)
        body = self.writes.get(key)
        if body is None:
            row = self.current(rtype, rid_)
            if row is None:
                return
            body = dict(row.body)
        body = {**body, **change}
        for k in [k for k, v in change.items() if v is None]:
            body.pop(k, None)
        self.writes[key] = body


# -------------------------------------------------------------------------------------------------------------
# Segments
# -------------------------------------------------------------------------------------------------------------


def find_patient(identifiers: list[dict[str, Any]], ctx: Ctx | None = None) -> str | None:
    """The live Patient carrying any of these identifiers (the first one listed wins), in one query.

    With ``ctx`` the Patient row comes along (one round trip instead of two)."""
    if not identifiers:
        return None
    cond = Q()
    for ident in identifiers:
        cond |= Q(system=ident["system"][:255], code=ident["value"][:255])
    hits = {
        f"{t.system}|{t.code}": t.resource
        for t in SearchToken.objects.filter(cond, resource_type="Patient", param="identifier",
                                            resource__deleted=False).select_related("resource")
    }
    for ident in identifiers:
        hit = hits.get(f"{ident['system'][:255]}|{ident['value'][:255]}")
        if hit is not None:
            if ctx is not None:
                ctx.rows[("Patient", hit.resource_id)] = hit
            return str(hit.resource_id)
    return None


def practitioner(ctx: Ctx, rep: Rep | None) -> dict[str, Any] | None:
    """XCN -> a Practitioner (upserted when it carries an id) and the reference to it."""
    if not rep:
        return None
    pid = rep_get(rep, 1)
    name = {k: v for k, v in (("family", rep_get(rep, 2)),) if v}
    given = [g for g in (rep_get(rep, 3), rep_get(rep, 4)) if g]
    if given:
        name["given"] = given
    if rep_get(rep, 6):
        name["prefix"] = [rep_get(rep, 6)]
    display = " ".join([*name.get("prefix", []), *given, name.get("family", "")]).strip()
    if not pid:
        return {"display": display} if display else None
    system = authority_system(rep, 9, ctx.sender)
    prid = rid("Practitioner", system, pid)
    body: dict[str, Any] = {"identifier": [{"system": system, "value": pid}]}
    if name:
        body["name"] = [name]
    if ("Practitioner", prid) not in ctx.writes:
        ctx.upsert("Practitioner", prid, body)
    ref: dict[str, Any] = {"reference": f"Practitioner/{prid}"}
    if display:
        ref["display"] = display
    return ref


def patient_from_pid(ctx: Ctx, pid: Seg, *, update: bool = True) -> str:
    """PID (+ NK1) -> Patient; returns its id (found by identifier, else deterministic).

    ``update=False`` (results, schedules, dispenses): the PID only finds the patient, or registers one
    that is not known yet; only ADT messages change demographics.
    """
    identifiers = [i for i in (cx(r, ctx.sender) for r in pid.reps(3)) if i]
    if not identifiers:
        raise MessageError("PID-3 has no identifier value", code="101", location="PID^1^3")
    patient_id = find_patient(identifiers, ctx) or rid("Patient", identifiers[0]["system"], identifiers[0]["value"])
    ctx.patient_id = patient_id
    if not update and ctx.current("Patient", patient_id) is not None:
        return patient_id
    body: dict[str, Any] = {
        "identifier": identifiers,
        "name": [n for n in (xpn(r) for r in pid.reps(5)) if n],
        "telecom": [t for t in [*(xtn(r) for r in pid.reps(13)), *(xtn(r, "work") for r in pid.reps(14))] if t],
        "address": [a for a in (xad(r) for r in pid.reps(11)) if a],
        "active": True,
    }
    if pid.get(7) and fhir_date(pid.get(7)):
        body["birthDate"] = fhir_date(pid.get(7))
    if pid.get(8).upper() in GENDER:
        body["gender"] = GENDER[pid.get(8).upper()]
    if pid.get(29) and fhir_datetime(pid.get(29)):
        body["deceasedDateTime"] = fhir_datetime(pid.get(29))
    elif pid.get(30).upper() == "Y":
        body["deceasedBoolean"] = True
    marital = cwe(pid.reps(16)[0] if pid.reps(16) else None, ctx.sender)
    if marital:
        for coding in marital.get("coding", []):
            coding["system"] = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
        body["maritalStatus"] = marital
    contacts = []
    for nk1 in ctx.parsed.all("NK1"):
        contact: dict[str, Any] = {}
        names = [n for n in (xpn(r) for r in nk1.reps(2)) if n]
        if names:
            contact["name"] = names[0]
        rel = cwe(nk1.reps(3)[0] if nk1.reps(3) else None, ctx.sender)
        if rel:
            for coding in rel.get("coding", []):
                coding.setdefault("system", V2 + "0063")
            contact["relationship"] = [rel]
        addrs = [a for a in (xad(r) for r in nk1.reps(4)) if a]
        if addrs:
            contact["address"] = addrs[0]
        tel = [t for t in [*(xtn(r) for r in nk1.reps(5)), *(xtn(r, "work") for r in nk1.reps(6))] if t]
        if tel:
            contact["telecom"] = tel
        if contact:
            contacts.append(contact)
    if contacts:
        body["contact"] = contacts
    ctx.upsert("Patient", patient_id, body)
    ctx.patient_id = patient_id
    return patient_id



def parse_number(v: str) -> float | int | None:
    try:
        f = float(v.strip())
    except ValueError:
        return None
    return int(f) if re.fullmatch(r"[+-]?\d+", v.strip()) else f

