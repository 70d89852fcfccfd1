"""Pharmacy interface, inbound half: RDS^O13 (dispense) -> MedicationDispense linked to the order.

The order link: ORC-2 (placer order number) carries the MedicationRequest id that our RDE^O11 sent
(``<id>^OMNICARE``). A dispense for an order we do not know is still recorded (linked by identifier only).
"""

from __future__ import annotations

from typing import Any

from .message import MessageError, rep_get
from .segments import Ctx, cwe, fhir_datetime, parse_number, patient_from_pid, practitioner, rid, slugify


def rds(ctx: Ctx) -> None:
    pid = ctx.parsed.first("PID")
    orc = ctx.parsed.first("ORC")
    assert pid is not None and orc is not None
    rxds = ctx.parsed.all("RXD")
    if not rxds:
        raise MessageError("Required segment RXD is missing", code="100", location="RXD")
    patient_id = patient_from_pid(ctx, pid, update=False)
    placer, placer_ns = orc.get(2), orc.get(2, 2)
    order_id = placer if placer and placer_ns.upper() == "OMNICARE" else ""
    order = ctx.current("MedicationRequest", order_id) if order_id else None
    for rxd in rxds:
        key = rxd.get(7) or f"{orc.get(3) or placer}|{rxd.get(1)}"
        body: dict[str, Any] = {
            "status": "completed",
            "identifier": [{"system": f"urn:omnicare:hl7:{slugify(ctx.sender)}:dispense", "value": key}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "medicationCodeableConcept": cwe(rxd.reps(2)[0] if rxd.reps(2) else None, ctx.sender)
            or {"text": "medication"},
        }
        if order is not None:
            body["authorizingPrescription"] = [{"reference": f"MedicationRequest/{order_id}"}]
        elif placer:
            body["authorizingPrescription"] = [{"identifier": {"value": placer}}]
        when = fhir_datetime(rxd.get(3))
        if when:
            body["whenHandedOver"] = when
        amount = parse_number(rxd.get(4))
        if amount is not None:
            units = rxd.reps(5)[0] if rxd.reps(5) else None
            q: dict[str, Any] = {"value": amount}
            if units and rep_get(units, 1):
                q["unit"] = rep_get(units, 2) or rep_get(units, 1)
            body["quantity"] = q
        performer = practitioner(ctx, rxd.reps(10)[0]) if rxd.reps(10) else None
        if performer:
            body["performer"] = [{"actor": performer}]
        ctx.upsert("MedicationDispense", rid("MedicationDispense", ctx.sender, key), body)
