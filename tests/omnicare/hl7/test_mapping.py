"""HL7 v2 -> FHIR: the project's fixture messages, mapped in one transaction each, audited as the sender."""

from __future__ import annotations

from typing import Any

import pytest

from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write
from omnicare.hl7 import services
from omnicare.hl7.message import MessageError, charset_of, decode, parse
from omnicare.hl7.models import InboundMessage

from .conftest import fixture

pytestmark = pytest.mark.django_db


def ingest(name: str, **replace: str) -> InboundMessage:
    accepted = services.inbound_accept(raw=fixture(name, **replace).encode("utf-8"))
    assert not isinstance(accepted, tuple), accepted[0].decode()
    stored = services.inbound_store(items=[accepted])[0]
    services.inbound_process(message_id=stored.id)
    return InboundMessage.objects.get(pk=stored.id)


def one(rtype: str, **match: Any) -> dict[str, Any]:
    rows = [r.body for r in Resource.objects.filter(resource_type=rtype, deleted=False)]
    found = [b for b in rows if all(b.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (rtype, len(found))
    return found[0]


def by_code(rtype: str, code: str) -> dict[str, Any]:
    rows = [r.body for r in Resource.objects.filter(resource_type=rtype, deleted=False)]
    found = [b for b in rows if any(c.get("code") == code for c in b.get("code", {}).get("coding", []))]
    assert len(found) == 1, (rtype, code, len(found))
    return found[0]


def test_escapes_encoding_characters_and_charset() -> None:
    p = parse(fixture("adt_a01_v251"))
    pid = p.first("PID")
    assert pid is not None
    assert pid.get(11, 1) == "14 Quay Street|Flat 2"  # \F\ decoded
    assert [pid.get(3, 1, r=i) for i in (1, 2)] == ["MRN7781", "900112233"]  # repeated field
    assert pid.get(3, 4, 2, r=2) == "2.16.840.1.113883.2.1.4.1"  # subcomponent
    # Other encoding characters declared in MSH-1/MSH-2 work the same.
    odd = fixture("adt_a28_person").replace("|", "#").replace("^", "!")
    q = parse(odd.replace("MSH#!~\\&#", "MSH#!~\\&#"))
    assert q.message_type == "ADT^A28" and q.first("PID").get(5, 2) == "Siobhan"  # type: ignore[union-attr]
    latin = fixture("adt_a28_person", **{"O'Neill": "Müller"}).replace("2.5.1", "2.5.1||||||8859/1")
    raw = latin.encode("latin-1")
    assert charset_of(raw) == "latin-1" and "Müller" in decode(raw)
    with pytest.raises(MessageError) as exc:
        decode(b"MSH|^~\\&|A|B|C|D|1||ADT^A28|X|P|2.5.1||||||KLINGON\r")
    assert exc.value.ack == "AR"


def test_adt_a01_registers_patient_encounter_allergies_conditions_and_is_audited_as_the_sender() -> None:
    row = ingest("adt_a01_v251")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    p = one("Patient")
    assert {(i["system"], i["value"]) for i in p["identifier"]} == {
        ("urn:omnicare:hl7:aa:northgate", "MRN7781"), ("urn:oid:2.16.840.1.113883.2.1.4.1", "900112233")}
    assert p["name"][0] == {"family": "Okonkwo-Brandt", "given": ["Adaeze", "Nneka"], "prefix": ["Dr"],
                            "use": "official"}
    assert p["name"][1]["use"] == "nickname"
    assert p["birthDate"] == "1972-03-14" and p["gender"] == "female"
    assert p["address"][0]["line"] == ["14 Quay Street|Flat 2", "Harbour Side"] and p["address"][0]["use"] == "home"
    assert p["address"][1]["type"] == "postal"
    assert {"system": "phone", "value": "+44 (131) 5550142", "use": "home"} in p["telecom"]
    assert {"system": "email", "value": "ada.okb@example.org"} in p["telecom"]
    assert {"system": "phone", "value": "+44 (131) 5550900 ext. 12", "use": "work"} in p["telecom"]
    assert p["contact"][0]["name"]["family"] == "Brandt"
    assert p["contact"][0]["relationship"][0]["coding"][0]["code"] == "SPO"
    assert p["contact"][0]["telecom"][0]["use"] == "mobile"
    enc = one("Encounter")
    assert enc["status"] == "in-progress" and enc["class"]["code"] == "IMP"
    assert enc["period"]["start"] == "2026-11-30T08:00:00+01:00"
    assert enc["location"][0]["location"]["display"] == "NORTHGATE / W4B / 12 / A"
    attending = enc["participant"][0]
    assert attending["type"][0]["coding"][0]["code"] == "ATND"
    doc = Resource.objects.get(resource_type="Practitioner",
                               resource_id=attending["individual"]["reference"].split("/")[1]).body
    assert doc["name"][0]["family"] == "Ferreira"
    pen = by_code("AllergyIntolerance", "70618")
    assert pen["criticality"] == "high" and pen["category"] == ["medication"]
    assert pen["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert [r["manifestation"][0]["text"] for r in pen["reaction"]] == ["Anaphylaxis", "Hives"]
    peanut = by_code("AllergyIntolerance", "LOCAL-PNT")  # a local code keeps the sender's own system
    assert peanut["code"]["coding"][0]["system"] == "urn:omnicare:hl7:northgate:codes:99nga"
    htn = by_code("Condition", "I10")
    assert htn["encounter"]["reference"] == f"Encounter/{enc['id']}"
    by_code("Condition", "LOC-CP77")
    ev = AuditEvent.objects.filter(detail__controlId="NG-A01-0001").get()
    assert ev.user_id is None and ev.username == "hl7:NORTHGATE" and ev.action == "create"
    assert ev.patient_ids == [p["id"]] and ev.detail["messageType"] == "ADT^A01"
    assert "Okonkwo" not in str(ev.detail)  # identifiers only, never content


def test_a08_merges_with_edits_made_in_omnicare_and_a_repeat_changes_nothing() -> None:
    ingest("adt_a01_v251")
    p = one("Patient")
    # A clinician adds a preferred language in OmniCare meanwhile.
    edited = {**p, "communication": [{"language": {"text": "Igbo"}}]}
    edited.pop("meta")
    FhirStore.system().apply([Write("Patient", p["id"], edited)])
    row = ingest("adt_a08_update")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    after = one("Patient")
    assert after["address"][0]["line"] == ["3 New Wynd"]  # the feed's change
    assert after["communication"] == [{"language": {"text": "Igbo"}}]  # OmniCare's edit kept
    assert after["meta"]["versionId"] == "3"
    enc = one("Encounter")
    assert enc["location"][0]["location"]["display"] == "NORTHGATE / W4B / 14 / B"  # moved bed
    again = ingest("adt_a08_update", **{"NG-A08-0002": "NG-A08-0002-R"})
    assert again.state == InboundMessage.PROCESSED and again.resources == []
    assert one("Patient")["meta"]["versionId"] == "3"


def test_discharge_cancel_discharge_and_cancel_admit() -> None:
    ingest("adt_a01_v251")
    ingest("adt_a03_discharge")
    enc = one("Encounter")
    assert enc["status"] == "finished" and enc["period"]["end"] == "2026-12-01T09:50:00+01:00"
    ingest("adt_a13_cancel_discharge")
    enc = one("Encounter")
    assert enc["status"] == "in-progress" and "end" not in enc["period"]
    ingest("adt_a04_v23")  # v2.3 header, outpatient
    clinic = [b for b in (r.body for r in Resource.objects.filter(resource_type="Encounter")) if b["class"]["code"] == "AMB"]
    assert len(clinic) == 1 and clinic[0]["status"] == "in-progress"
    ingest("adt_a11_cancel_admit")
    clinic = [b for b in (r.body for r in Resource.objects.filter(resource_type="Encounter")) if b["class"]["code"] == "AMB"]
    assert clinic[0]["status"] == "cancelled"


def test_a40_links_the_merged_patients_and_keeps_both() -> None:
    ingest("adt_a01_v251")
    ingest("adt_a28_person")
    survivor = next(b for b in (r.body for r in Resource.objects.filter(resource_type="Patient"))
                    if b["identifier"][0]["value"] == "MRN7781")
    prior = next(b for b in (r.body for r in Resource.objects.filter(resource_type="Patient"))
                 if b["identifier"][0]["value"] == "MRN7790")
    row = ingest("adt_a40_merge")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    s = Resource.objects.get(resource_type="Patient", resource_id=survivor["id"]).body
    p = Resource.objects.get(resource_type="Patient", resource_id=prior["id"]).body
    assert s["link"] == [{"other": {"reference": f"Patient/{prior['id']}"}, "type": "replaces"}]
    assert p["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert p["active"] is False and p["name"][0]["family"] == "O'Neill"  # nothing lost


def test_oru_preliminary_then_final_updates_the_same_resources() -> None:
    ingest("adt_a01_v251")
    row = ingest("oru_r01_prelim")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    glucose = by_code("Observation", "2345-7")
    assert glucose["status"] == "preliminary" and glucose["valueQuantity"] == {
        "value": 11.8, "unit": "millimole per litre", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["referenceRange"][0]["low"]["value"] == 3.9 and glucose["referenceRange"][0]["high"]["value"] == 7.8
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert by_code("Observation", "2823-3")["interpretation"][0]["coding"][0]["code"] == "HH"
    assert by_code("Observation", "NOTE-1")["valueString"] == "Slightly haemolysed & rechecked"
    report = one("DiagnosticReport")
    assert report["status"] == "preliminary" and len(report["result"]) == 3
    assert report["identifier"][0]["value"] == "FL-88123"
    patient = one("Patient")
    assert glucose["subject"]["reference"] == f"Patient/{patient['id']}"  # found by MRN, not duplicated
    row = ingest("oru_r01_final")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    assert Resource.objects.filter(resource_type="DiagnosticReport").count() == 1
    glucose2 = by_code("Observation", "2345-7")
    assert glucose2["id"] == glucose["id"] and glucose2["status"] == "final"
    assert glucose2["valueQuantity"]["value"] == 11.2 and glucose2["meta"]["versionId"] == "2"
    report = one("DiagnosticReport")
    assert report["status"] == "final" and len(report["result"]) == 9
    assert by_code("Observation", "600-7")["valueCodeableConcept"]["coding"][0] == {
        "code": "112283007", "system": "http://snomed.info/sct", "display": "Escherichia coli"}
    assert by_code("Observation", "5130-0")["valueQuantity"]["comparator"] == "<"
    assert by_code("Observation", "5196-1")["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 128}}
    assert by_code("Observation", "18769-0")["valueString"] == "Repeat potassium advised.\nClinician informed by phone."
    assert by_code("Observation", "LOC-DT")["valueDateTime"] == "2026-12-07"
    assert by_code("Observation", "LOC-FT")["valueString"] == "Line one\nLine two OK"
    assert one("Patient")["meta"]["versionId"] == "1"  # a result never rewrites demographics


def test_oru_for_an_unknown_patient_registers_them_and_v23_local_codes_work() -> None:
    row = ingest("oru_r01_v23_local")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    obs = by_code("Observation", "GLU-POC")
    assert obs["code"]["coding"][0]["system"] == "urn:omnicare:hl7:eastclinic:codes:l"
    assert obs["valueQuantity"]["value"] == 5.4 and obs["effectiveDateTime"] == "2026-11-30T10:00:00Z"
    assert one("Patient")["identifier"][0]["value"] == "EC100234"


def test_siu_books_reschedules_and_cancels_one_appointment() -> None:
    row = ingest("siu_s12_book")
    assert row.state == InboundMessage.PROCESSED, row.last_error
    appt = one("Appointment")
    assert appt["status"] == "booked" and appt["start"] == "2026-12-10T09:30:00+01:00"
    assert appt["end"] == "2026-12-10T10:00:00+01:00" and appt["minutesDuration"] == 30
    actors = [p["actor"]["reference"].split("/")[0] for p in appt["participant"]]
    assert actors == ["Patient", "Practitioner"]
    ingest("siu_s13_reschedule")
    appt = one("Appointment")
    assert appt["start"] == "2026-12-11T14:00:00+01:00" and appt["meta"]["versionId"] == "2"
    ingest("siu_s15_cancel")
    assert one("Appointment")["status"] == "cancelled"


def test_a_message_that_cannot_be_mapped_writes_nothing_and_goes_to_dead_letter() -> None:
    before = Resource.objects.count()
    row = ingest("oru_r01_prelim", **{"FL-88123^NGLAB": "", "PL-4410": ""})
    assert row.state == InboundMessage.DEAD and "OBR-3" in row.last_error and row.attempts == 1
    assert Resource.objects.count() == before  # not even the patient: one transaction
    assert not AuditEvent.objects.filter(detail__controlId="LAB-000917").exists()


def test_transient_failures_retry_with_backoff_then_dead_letter(settings: Any, monkeypatch: Any) -> None:
    from omnicare.hl7 import mapping

    settings.OMNICARE_HL7_MAX_ATTEMPTS = 3
    calls = {"n": 0}

    def boom(**kwargs: Any) -> Any:
        calls["n"] += 1
        raise ConnectionError("database went away")

    monkeypatch.setattr(mapping, "message_apply", boom)
    row = ingest("adt_a28_person")
    assert row.state == InboundMessage.FAILED and row.attempts == 1 and row.next_attempt_at is not None
    assert row.last_error == "ConnectionError"  # the reason, never the content
    first_delay = (row.next_attempt_at - row.received_at).total_seconds()
    assert 2.0 <= first_delay <= 6.0  # base 5 s, jitter in [d/2, d]
    services.inbound_process(message_id=row.pk)
    services.inbound_process(message_id=row.pk)
    row.refresh_from_db()
    assert row.state == InboundMessage.DEAD and row.attempts == 3 and calls["n"] == 3
    services.inbound_process(message_id=row.pk)  # dead letters are left alone
    assert calls["n"] == 3
    monkeypatch.undo()
    assert services.inbound_replay(message_ids=[row.pk]) == 1
    services.inbound_process(message_id=row.pk)
    row.refresh_from_db()
    assert row.state == InboundMessage.PROCESSED


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    delays = [services.backoff_delay(attempts=a, base=5, cap=60, rng=rng).total_seconds() for a in range(1, 8)]
    assert all(2.5 <= delays[0] <= 5 for _ in [0]) and 5 <= delays[1] <= 10 and 10 <= delays[2] <= 20
    assert all(30 <= d <= 60 for d in delays[4:])


def test_an_older_message_arriving_late_does_not_undo_newer_information() -> None:
    ingest("adt_a01_v251")
    ingest("adt_a08_update")  # MSH-7 12:00: the new address
    late = ingest("adt_a08_update", **{"NG-A08-0002": "NG-A08-OLD", "20261130120000+0100": "20261130090000+0100",
                                       "3 New Wynd": "99 Old Road"})
    assert late.state == InboundMessage.PROCESSED and late.resources == []
    assert one("Patient")["address"][0]["line"] == ["3 New Wynd"]
    ev = AuditEvent.objects.get(detail__controlId="NG-A08-OLD")
    assert any(k.startswith("Patient/") for k in ev.detail["olderThanRecord"])


def store(name: str, **replace: str) -> InboundMessage:
    accepted = services.inbound_accept(raw=fixture(name, **replace).encode("utf-8"))
    assert not isinstance(accepted, tuple), accepted[0].decode()
    return InboundMessage.objects.get(pk=services.inbound_store(items=[accepted])[0].id)


def test_a_batch_commits_each_good_message_and_a_bad_one_in_the_middle_writes_nothing() -> None:
    good = store("adt_a28_person")
    bad = store("oru_r01_prelim", **{"FL-88123^NGLAB": "", "PL-4410": ""})
    later = store("siu_s12_book")
    # One task named only the first: the batch takes the others that wait, in arrival order.
    states = services.inbound_process_batch(message_ids=[good.pk])
    assert states == {good.pk: InboundMessage.PROCESSED, bad.pk: InboundMessage.DEAD,
                      later.pk: InboundMessage.PROCESSED}
    rows = {r.pk: r for r in InboundMessage.objects.filter(pk__in=[good.pk, bad.pk, later.pk])}
    assert rows[good.pk].state == rows[later.pk].state == InboundMessage.PROCESSED
    assert rows[bad.pk].state == InboundMessage.DEAD and "OBR-3" in rows[bad.pk].last_error
    # The bad message rolled back to its savepoint: no DiagnosticReport, no audit event; the others' are there.
    assert not Resource.objects.filter(resource_type="DiagnosticReport").exists()
    assert one("Appointment")["status"] == "booked"
    audited = set(AuditEvent.objects.values_list("detail__controlId", flat=True))
    assert parse(rows[good.pk].raw).control_id in audited and parse(rows[later.pk].raw).control_id in audited
    assert parse(rows[bad.pk].raw).control_id not in audited
    # The tasks queued for the other two find them done: nothing is applied twice.
    versions, events = Resource.objects.count(), AuditEvent.objects.count()
    assert services.inbound_process_batch(message_ids=[bad.pk, later.pk]) == {
        bad.pk: InboundMessage.DEAD, later.pk: InboundMessage.PROCESSED}
    assert (Resource.objects.count(), AuditEvent.objects.count()) == (versions, events)


@pytest.mark.parametrize("name", ["adt_a01_v251", "adt_a04_v23", "adt_a40_merge", "oru_r01_final",
                                  "oru_r01_v23_local", "rds_o13_dispense", "siu_s13_reschedule"])
def test_the_listener_reads_enough_to_decide_exactly_like_the_full_parse(name: str) -> None:
    from omnicare.hl7.message import check, parse_for_ack

    text = decode(fixture(name).encode("utf-8"))
    light, full = parse_for_ack(text), parse(text)
    assert light.text == full.text
    assert [s.name for s in light.segments] == [s.name for s in full.segments]
    for attr in ("sender", "control_id", "message_type", "version", "separators", "processing_id"):
        assert getattr(light, attr) == getattr(full, attr)
    check(light)
    no_pid3 = "\r".join(line if not line.startswith("PID") else "PID|1||" for line in full.text.split("\r"))
    with pytest.raises(MessageError) as exc:
        check(parse_for_ack(no_pid3))
    assert exc.value.ack == "AE" and exc.value.location == "PID^1^3"


def test_a_batch_sends_one_hint_naming_every_message_s_versions(monkeypatch: Any,
                                                                 django_capture_on_commit_callbacks: Any) -> None:
    from omnicare.sync import notify

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(notify, "send_hint", sent.append)
    first, second = store("adt_a28_person"), store("siu_s12_book")
    with django_capture_on_commit_callbacks(execute=True):
        services.inbound_process_batch(message_ids=[first.pk, second.pk])
    assert len(sent) == 1
    types = {c["resourceType"] for c in sent[0]["changes"]}
    assert {"Patient", "Appointment"} <= types
