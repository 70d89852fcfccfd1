"""HL7 v2 -> FHIR R4, following the HL7 v2-to-FHIR IG's segment and datatype maps, in ONE transaction.

Segment maps (IG "Segment ... to FHIR" tables): PID -> Patient, NK1 -> Patient.contact, PV1 -> Encounter,
AL1 -> AllergyIntolerance, DG1 -> Condition, MRG -> Patient.link (A40), OBR -> DiagnosticReport,
OBX -> Observation, SCH/AIS/AIP -> Appointment, ORC/RXD -> MedicationDispense. Datatype maps: CX ->
Identifier, XPN -> HumanName, XAD -> Address, XTN -> ContactPoint, CWE/CE -> CodeableConcept, XCN ->
Practitioner, TS/DTM -> dateTime.

Resource ids are deterministic (UUIDv5 of the sender's business keys: MRN, visit number, filler order
number + OBX-3/OBX-4, appointment id), so a preliminary and then a final result, a repeated A08 or a
rescheduled appointment update the SAME resources instead of duplicating them. A patient already in
OmniCare is found by any of its PID-3 identifiers first.

Updates are merged, never overwritten: base = what the feed said last time (``MappedResource``), ours =
the record now (maybe edited in OmniCare since), theirs = the new message, merged with
``pyclient.merge`` (the same rules as sync). Where both changed the same element differently, OmniCare's
value is kept and the element path is recorded on the message (``InboundMessage.conflicts``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from omnicare.audit.services import audit_record
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write

from .message import MessageError, Parsed, Rep, Seg, rep_get
from .models import InboundMessage, MappedResource
from .pharmacy import rds
from .segments import (
    V2,
    Ctx,
    Result,
    authority_system,
    code_system,
    cwe,
    cx,
    fhir_datetime,
    find_patient,
    parse_number,
    patient_from_pid,
    practitioner,
    rid,
    slugify,
)

ENCOUNTER_CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"),
                   "E": ("EMER", "emergency"), "P": ("PRENC", "pre-admission"),
                   "R": ("AMB", "ambulatory"), "B": ("AMB", "ambulatory"), "N": ("AMB", "ambulatory")}
ENCOUNTER_STATUS = {"A01": "in-progress", "A04": "in-progress", "A05": "planned", "A08": None, "A31": None,
                    "A03": "finished", "A13": "in-progress", "A11": "cancelled", "A28": None}


def encounter_from_pv1(ctx: Ctx, pv1: Seg, patient_id: str, *, update: bool = True) -> str | None:
    visit = pv1.get(19)
    admit = pv1.get(44)
    if not visit and not admit:
        return None
    enc_id = rid("Encounter", ctx.sender, visit) if visit else rid("Encounter", patient_id, admit)
    if not update and ctx.current("Encounter", enc_id) is not None:
        return enc_id
    code, display = ENCOUNTER_CLASS.get(pv1.get(2).upper(), ("AMB", "ambulatory"))
    body: dict[str, Any] = {
        "status": ENCOUNTER_STATUS.get(ctx.parsed.trigger) or "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if visit:
        body["identifier"] = [{"system": authority_system(pv1.fields[19][0], 4, ctx.sender), "value": visit,
                               "type": {"coding": [{"system": V2 + "0203", "code": "VN"}]}}]
    period = {k: v for k, v in (("start", fhir_datetime(admit)), ("end", fhir_datetime(pv1.get(45)))) if v}
    if period:
        body["period"] = period
    loc = pv1.reps(3)
    if loc:
        parts = [rep_get(loc[0], 4), rep_get(loc[0], 1), rep_get(loc[0], 2), rep_get(loc[0], 3)]
        display_loc = " / ".join(p for p in parts if p)
        if display_loc:
            body["location"] = [{"location": {"display": display_loc}}]
    participants = []
    for n, kind in ((7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM")):
        for rep in pv1.reps(n):
            ref = practitioner(ctx, rep)
            if ref:
                participants.append({
                    "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                          "code": kind}]}],
                    "individual": ref,
                })
    if participants:
        body["participant"] = participants
    if ctx.parsed.trigger == "A03" and "end" not in period:
        evn = ctx.parsed.first("EVN")
        ended = fhir_datetime(evn.get(6) or evn.get(2)) if evn is not None else None
        body.setdefault("period", {})["end"] = ended or ctx.now.isoformat().replace("+00:00", "Z")
    ctx.upsert("Encounter", enc_id, body)
    return enc_id


ALLERGY_CATEGORY = {"DA": "medication", "MA": "medication", "FA": "food", "EA": "environment",
                    "AA": "environment", "PA": "environment", "LA": "environment", "MC": "medication"}
ALLERGY_CRITICALITY = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}


def allergies(ctx: Ctx, patient_id: str) -> None:
    for al1 in ctx.parsed.all("AL1"):
        code = cwe(al1.reps(3)[0] if al1.reps(3) else None, ctx.sender)
        if not code:
            continue
        key = al1.get(3, 1) or al1.get(3, 2)
        body: dict[str, Any] = {
            "patient": {"reference": f"Patient/{patient_id}"},
            "code": code,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                               "code": "confirmed"}]},
        }
        cat = ALLERGY_CATEGORY.get(al1.get(2, 1).upper())
        if cat:
            body["category"] = [cat]
        crit = ALLERGY_CRITICALITY.get(al1.get(4, 1).upper())
        if crit:
            body["criticality"] = crit
        reactions = [{"manifestation": [{"text": r[0][0]}]} for r in al1.reps(5) if r and r[0] and r[0][0]]
        if reactions:
            body["reaction"] = reactions
        if fhir_datetime(al1.get(6)):
            body["onsetDateTime"] = fhir_datetime(al1.get(6))
        ctx.upsert("AllergyIntolerance", rid("AllergyIntolerance", patient_id, key), body)


def diagnoses(ctx: Ctx, patient_id: str, encounter_id: str | None) -> None:
    for dg1 in ctx.parsed.all("DG1"):
        code = cwe(dg1.reps(3)[0] if dg1.reps(3) else None, ctx.sender)
        if not code:
            if dg1.get(4):
                code = {"text": dg1.get(4)}
            else:
                continue
        key = dg1.get(3, 1) or dg1.get(4)
        body: dict[str, Any] = {
            "subject": {"reference": f"Patient/{patient_id}"},
            "code": code,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "encounter-diagnosis"}]}],
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
        }
        if encounter_id:
            body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
        if fhir_datetime(dg1.get(5)):
            body["onsetDateTime"] = fhir_datetime(dg1.get(5))
        if fhir_datetime(dg1.get(19)):
            body["recordedDate"] = fhir_datetime(dg1.get(19))
        ctx.upsert("Condition", rid("Condition", encounter_id or patient_id, key), body)


def adt(ctx: Ctx) -> None:
    pid = ctx.parsed.first("PID")
    assert pid is not None
    trigger = ctx.parsed.trigger
    if trigger == "A40":
        return merge_patients(ctx, pid)
    patient_id = patient_from_pid(ctx, pid)
    pv1 = ctx.parsed.first("PV1")
    enc = encounter_from_pv1(ctx, pv1, patient_id) if pv1 is not None and trigger != "A28" else None
    if trigger == "A11" and enc:  # cancel admit / visit: the encounter was entered in error
        ctx.patch("Encounter", enc, {"status": "cancelled"})
    if trigger == "A13" and enc:  # cancel discharge: back in progress, no end
        body = ctx.writes.get(("Encounter", enc), {})
        period = {k: v for k, v in (body.get("period") or {}).items() if k != "end"}
        ctx.patch("Encounter", enc, {"status": "in-progress", "period": period or None})
    allergies(ctx, patient_id)
    diagnoses(ctx, patient_id, enc)


def merge_patients(ctx: Ctx, pid: Seg) -> None:
    """A40: the MRG patient is merged into the PID patient: both kept, linked (no data lost)."""
    survivor = patient_from_pid(ctx, pid)
    mrg = ctx.parsed.first("MRG")
    assert mrg is not None
    prior_ids = [i for i in (cx(r, ctx.sender) for r in mrg.reps(1)) if i]
    prior = find_patient(prior_ids) if prior_ids else None
    if prior is None or prior == survivor:
        raise MessageError("MRG-1 does not name a known other patient", code="204", location="MRG^1^1")
    ctx.patch("Patient", prior, {
        "active": False,
        "link": [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}],
    })
    body = ctx.writes[("Patient", survivor)]
    links = [link for link in body.get("link", []) if link.get("other", {}).get("reference") != f"Patient/{prior}"]
    ctx.writes[("Patient", survivor)] = {**body, "link": [*links, {"other": {"reference": f"Patient/{prior}"},
                                                                    "type": "replaces"}]}


RESULT_STATUS = {"F": "final", "P": "preliminary", "C": "corrected", "A": "partial", "R": "partial",
                 "X": "cancelled", "I": "registered", "O": "registered", "S": "registered", "Y": "unknown",
                 "Z": "unknown", "M": "corrected"}
OBX_STATUS = {"F": "final", "P": "preliminary", "C": "corrected", "X": "cancelled", "D": "entered-in-error",
              "W": "entered-in-error", "R": "preliminary", "I": "registered", "S": "preliminary", "U": "final",
              "A": "amended", "N": "unknown"}
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CRITICAL = frozenset({"HH", "LL", "AA", ">", "<"})



def quantity(value: float | int, units: Rep | None, sender: str) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if units:
        code, text, system = rep_get(units, 1), rep_get(units, 2), rep_get(units, 3)
        q["unit"] = text or code
        if code and (not system or system.upper() == "UCUM"):
            q["system"], q["code"] = "http://unitsofmeasure.org", code
        elif code:
            q["system"], q["code"] = code_system(system, sender), code
    return q


def reference_range(text: str, units: Rep | None, sender: str) -> list[dict[str, Any]]:
    text = text.strip()
    if not text:
        return []
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)", text)
    rr: dict[str, Any] = {}
    if m:
        rr["low"] = quantity(parse_number(m.group(1)) or 0, units, sender)
        rr["high"] = quantity(parse_number(m.group(2)) or 0, units, sender)
    elif (m := re.fullmatch(r"(<|<=)\s*([+-]?\d+(?:\.\d+)?)", text)):
        rr["high"] = quantity(parse_number(m.group(2)) or 0, units, sender)
    elif (m := re.fullmatch(r"(>|>=)\s*([+-]?\d+(?:\.\d+)?)", text)):
        rr["low"] = quantity(parse_number(m.group(2)) or 0, units, sender)
    rr["text"] = text
    return [rr]


def obx_value(ctx: Ctx, obx: Seg) -> dict[str, Any]:
    vtype = obx.get(2).upper()
    reps = obx.reps(5)
    if not reps:
        return {}
    units = obx.reps(6)[0] if obx.reps(6) else None
    first = reps[0]
    if vtype == "NM":
        num = parse_number(rep_get(first, 1))
        if num is None:
            return {"valueString": rep_get(first, 1)}
        return {"valueQuantity": quantity(num, units, ctx.sender)}
    if vtype in ("CWE", "CE", "CNE", "CF"):
        cc = cwe(first, ctx.sender)
        return {"valueCodeableConcept": cc} if cc else {}
    if vtype in ("ST", "TX", "FT"):
        text = "\n".join("^".join(c[0] for c in r if c) for r in reps).replace("\r", "\n")
        return {"valueString": text}
    if vtype == "SN":
        comparator, n1, sep, n2 = (rep_get(first, i) for i in (1, 2, 3, 4))
        a, b = parse_number(n1), parse_number(n2)
        if sep in (":", "/") and a is not None and b is not None:
            return {"valueRatio": {"numerator": {"value": a}, "denominator": {"value": b}}}
        if sep == "-" and a is not None and b is not None:
            return {"valueRange": {"low": quantity(a, units, ctx.sender), "high": quantity(b, units, ctx.sender)}}
        if a is not None:
            q = quantity(a, units, ctx.sender)
            if comparator in ("<", "<=", ">", ">="):
                q["comparator"] = comparator
            return {"valueQuantity": q}
        return {"valueString": "".join((comparator, n1, sep, n2))}
    if vtype in ("DT", "TS", "DTM"):
        dt = fhir_datetime(rep_get(first, 1))
        return {"valueDateTime": dt} if dt else {"valueString": rep_get(first, 1)}
    if vtype == "TM":
        m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?", rep_get(first, 1))
        if m:
            return {"valueTime": f"{m.group(1)}:{m.group(2) or '00'}:{m.group(3) or '00'}"}
    return {"valueString": "^".join(c[0] for c in first if c)}


def oru(ctx: Ctx) -> None:
    pid = ctx.parsed.first("PID")
    assert pid is not None
    patient_id = patient_from_pid(ctx, pid, update=False)
    pv1 = ctx.parsed.first("PV1")
    enc = encounter_from_pv1(ctx, pv1, patient_id, update=False) if pv1 is not None else None
    # OBR opens an order group; the OBX (and NTE) after it belong to it.
    groups: list[tuple[Seg, list[Seg]]] = []
    for seg in ctx.parsed.segments:
        if seg.name == "OBR":
            groups.append((seg, []))
        elif seg.name == "OBX" and groups:
            groups[-1][1].append(seg)
    keys: list[tuple[str, str]] = []
    for o, xs in groups:
        okey = f"{o.get(3, 2) or ctx.sender}|{o.get(3) or o.get(2)}"
        keys.append(("DiagnosticReport", rid("DiagnosticReport", ctx.sender, okey)))
        keys += [("Observation", rid("Observation", ctx.sender, okey, f"{x.get(3, 1) or x.get(3, 2)}|{x.get(4)}"))
                 for x in xs]
    ctx.prefetch(keys)  # one query for every record this message may update
    for obr, obxs in groups:
        filler = obr.get(3) or obr.get(2)
        if not filler:
            raise MessageError("OBR-3 filler order number (or OBR-2) is required", code="101",
                               location="OBR^1^3")
        order_key = f"{obr.get(3, 2) or ctx.sender}|{filler}"
        report_id = rid("DiagnosticReport", ctx.sender, order_key)
        effective = fhir_datetime(obr.get(7))
        results = []
        seen: dict[str, int] = {}
        for obx in obxs:
            code = cwe(obx.reps(3)[0] if obx.reps(3) else None, ctx.sender)
            if not code:
                raise MessageError("OBX-3 observation identifier is required", code="101", location="OBX^1^3")
            ident = f"{obx.get(3, 1) or obx.get(3, 2)}|{obx.get(4)}"
            seen[ident] = seen.get(ident, 0) + 1
            if seen[ident] > 1:  # the same test twice without a sub-id: keep them apart by position
                ident += f"#{seen[ident]}"
            obs_id = rid("Observation", ctx.sender, order_key, ident)
            body: dict[str, Any] = {
                "status": OBX_STATUS.get(obx.get(11).upper(), "final"),
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "laboratory"}]}],
                "code": code,
                "subject": {"reference": f"Patient/{patient_id}"},
                "identifier": [{"system": f"urn:omnicare:hl7:{slugify(ctx.sender)}:obx", "value": f"{filler}|{ident}"}],
                **obx_value(ctx, obx),
            }
            if enc:
                body["encounter"] = {"reference": f"Encounter/{enc}"}
            when = fhir_datetime(obx.get(14)) or effective
            if when:
                body["effectiveDateTime"] = when
            units = obx.reps(6)[0] if obx.reps(6) else None
            rr = reference_range(obx.get(7), units, ctx.sender)
            if rr:
                body["referenceRange"] = rr
            flags = [r[0][0] for r in obx.reps(8) if r and r[0] and r[0][0]]
            if flags:
                body["interpretation"] = [{"coding": [{"system": INTERP, "code": f.upper()}]} for f in flags]
            performer = practitioner(ctx, obx.reps(16)[0]) if obx.reps(16) else None
            if performer:
                body["performer"] = [performer]
            ctx.upsert("Observation", obs_id, body)
            results.append({"reference": f"Observation/{obs_id}"})
        report: dict[str, Any] = {
            "status": RESULT_STATUS.get(obr.get(25).upper(), "final"),
            "identifier": [{"system": authority_system(obr.fields[3][0] if obr.reps(3) else [], 2, ctx.sender),
                            "value": filler,
                            "type": {"coding": [{"system": V2 + "0203", "code": "FILL"}]}}],
            "category": [{"coding": [{"system": V2 + "0074", "code": obr.get(24) or "LAB"}]}],
            "code": cwe(obr.reps(4)[0] if obr.reps(4) else None, ctx.sender) or {"text": "Laboratory report"},
            "subject": {"reference": f"Patient/{patient_id}"},
        }
        if enc:
            report["encounter"] = {"reference": f"Encounter/{enc}"}
        if effective:
            report["effectiveDateTime"] = effective
        issued = fhir_datetime(obr.get(22))
        if issued and "T" in issued:
            report["issued"] = issued
        current = ctx.current("DiagnosticReport", report_id)
        old = [r for r in (current.body.get("result", []) if current else []) if r not in results]
        report["result"] = results + old  # a partial update keeps the results it does not repeat
        ctx.upsert("DiagnosticReport", report_id, report)


APPOINTMENT_STATUS = {"S12": "booked", "S13": "booked", "S14": "booked", "S15": "cancelled"}


def siu(ctx: Ctx) -> None:
    sch = ctx.parsed.first("SCH")
    pid = ctx.parsed.first("PID")
    assert sch is not None and pid is not None
    appt_key = sch.get(2) or sch.get(1)
    if not appt_key:
        raise MessageError("SCH-1 or SCH-2 appointment id is required", code="101", location="SCH^1^2")
    patient_id = patient_from_pid(ctx, pid, update=False)
    appt_id = rid("Appointment", ctx.sender, appt_key)
    participants: list[dict[str, Any]] = [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}]
    start = end = None
    ais = ctx.parsed.first("AIS")
    if ais is not None and fhir_datetime(ais.get(4)):
        start = fhir_datetime(ais.get(4))
    tq = sch.reps(11)
    if not start and tq:
        start, end = fhir_datetime(rep_get(tq[0], 4)), fhir_datetime(rep_get(tq[0], 5))
    minutes = None
    if ais is not None and parse_number(ais.get(7)) is not None:
        unit = (ais.get(8, 1) or "min").lower()
        minutes = float(parse_number(ais.get(7)) or 0) * (60 if unit.startswith(("h", "hr")) else 1)
    elif parse_number(sch.get(9)) is not None:
        minutes = float(parse_number(sch.get(9)) or 0)
    for aip in ctx.parsed.all("AIP"):
        for rep in aip.reps(3):
            ref = practitioner(ctx, rep)
            if ref:
                participants.append({"actor": ref, "status": "accepted"})
    for n in (12, 16):
        for rep in sch.reps(n):
            ref = practitioner(ctx, rep)
            if ref and ref not in [p["actor"] for p in participants]:
                participants.append({"actor": ref, "status": "accepted"})
    body: dict[str, Any] = {
        "status": APPOINTMENT_STATUS[ctx.parsed.trigger],
        "identifier": [{"system": f"urn:omnicare:hl7:{slugify(ctx.sender)}:appointment", "value": appt_key}],
        "participant": participants,
    }
    if start and "T" in start:
        body["start"] = start
        if end and "T" in end:
            body["end"] = end
        elif minutes:
            from datetime import datetime as _dt
            from datetime import timedelta

            body["end"] = (_dt.fromisoformat(start.replace("Z", "+00:00")) + timedelta(minutes=minutes)) \
                .isoformat().replace("+00:00", "Z")
        if minutes:
            body["minutesDuration"] = int(minutes)
    reason = cwe(sch.reps(7)[0] if sch.reps(7) else None, ctx.sender)
    if reason:
        body["reasonCode"] = [reason]
    kind = cwe(sch.reps(8)[0] if sch.reps(8) else None, ctx.sender)
    if kind:
        body["appointmentType"] = kind
    if ctx.parsed.trigger == "S15":
        body["cancelationReason"] = cwe(sch.reps(6)[0], ctx.sender) if sch.reps(6) else None
    ctx.upsert("Appointment", appt_id, body)


def message_time(parsed: Parsed) -> datetime | None:
    """MSH-7 as an aware datetime (UTC when it carries no offset), None when absent or unreadable."""
    msh = parsed.first("MSH")
    text = fhir_datetime(msh.get(7)) if msh is not None else None
    if not text or "T" not in text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


MAPPERS = {"ADT": adt, "ORU": oru, "SIU": siu}
PRIMARY = {"ADT": "Patient", "ORU": "DiagnosticReport", "SIU": "Appointment", "RDS": "MedicationDispense"}


def message_apply(*, parsed: Parsed, message: InboundMessage, now: datetime) -> Result:
    """Map and write one message (the caller holds the transaction). Raises on anything that is not clean."""
    ctx = Ctx(parsed=parsed, message=message, now=now, sender=parsed.sender, sent_at=message_time(parsed))
    mapper = MAPPERS.get(parsed.message_code)
    if mapper is None:
        if parsed.message_code != "RDS":
            raise MessageError(f"No mapping for {parsed.message_type}", code="200", ack="AR")
        mapper = rds
    mapper(ctx)
    writes = []
    for (rtype, rid_), body in ctx.writes.items():
        row = ctx.current(rtype, rid_)
        clean = {k: v for k, v in body.items() if k != "meta"}
        if row is not None and {k: v for k, v in row.body.items() if k != "meta"} == clean:
            continue  # nothing new (a repeated A08): no new version, no hint
        writes.append(Write.valid(rtype, rid_, clean, expected_version=row.version_id if row is not None else 0))
    # The interface is a system actor, not a clinician: trusted for every patient, like a bulk import.
    results = FhirStore.system().apply(writes) if writes else []
    MappedResource.objects.bulk_create(
        [MappedResource(resource_type=rt, resource_id=ri, body=body, message=message, source_time=ctx.sent_at)
         for (rt, ri), body in ctx.mapped.items()],
        update_conflicts=True, unique_fields=["resource_type", "resource_id"],
        update_fields=["body", "message", "source_time"],
    )
    written = [f"{r.resource_type}/{r.resource_id}" for r in results if r.version is not None]
    patients: set[str] = set()
    for r in results:
        if r.version is not None:
            patients.update(r.version.patient_ids or [])
    created = any(r.created for r in results)
    primary = PRIMARY.get(parsed.message_code, "Patient")
    main = next((k for k in written if k.startswith(primary + "/")), f"Patient/{ctx.patient_id}")
    audit_record(
        user=None,
        action="create" if created else "update",
        resource_type=main.split("/")[0],
        resource_id=main.split("/", 1)[1],
        patient_ids=sorted(patients),
        purpose="HOPERAT",
        detail={
            "username": f"hl7:{parsed.sender}"[:150],
            "agent": {"type": "hl7v2-interface", "sendingApplication": parsed.sending_app,
                      "sendingFacility": parsed.sending_facility},
            "messageType": parsed.message_type,
            "controlId": parsed.control_id,
            "resources": written[:200],
            "conflicts": len(ctx.conflicts),
            "olderThanRecord": ctx.stale[:50],
        },
    )
    return Result(resources=written, conflicts=ctx.conflicts[:200], patients=sorted(patients))
