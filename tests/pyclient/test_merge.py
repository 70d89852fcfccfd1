"""Three-way merge of FHIR resources: the clinical rules, one scenario each."""

from __future__ import annotations

import copy
import json
from typing import Any

from pyclient.merge import Conflict, MergeResult, merge

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"


def edit(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``resource`` with top-level fields replaced (None removes)."""
    out = copy.deepcopy(resource)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def paths(result: MergeResult) -> set[str]:
    return {c.path for c in result.conflicts}


def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "obs-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:00:00Z"},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-20T09:30:00Z",
        "valueQuantity": {
            "value": 120,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }


def medication_request() -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "meta": {"versionId": "7", "lastUpdated": "2026-11-20T10:00:00Z"},
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}]
        },
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [
            {
                "text": "5 mg once daily",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}],
            }
        ],
    }


def allergy() -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": "al-1",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "confirmed",
                }
            ]
        },
        "code": {"coding": [{"system": SCT, "code": "91936005", "display": "Penicillin allergy"}]},
        "patient": {"reference": "Patient/p1"},
        "reaction": [
            {"manifestation": [{"coding": [{"system": SCT, "code": "271807003", "display": "Rash"}]}]}
        ],
    }


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-01T08:00:00Z"},
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
        ],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "address": [
            {"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}
        ],
    }


def status_concept(code: str, kind: str) -> dict[str, Any]:
    return {
        "coding": [
            {"system": f"http://terminology.hl7.org/CodeSystem/allergyintolerance-{kind}", "code": code}
        ]
    }


# --- trivial cases and API --------------------------------------------------------


def test_one_sided_edits_apply_and_result_is_a_copy() -> None:
    base = patient()
    ours = edit(base, gender="female")
    result = merge(base, ours, base)
    assert result.clean and result.merged == ours
    result.merged["gender"] = "other"
    assert ours["gender"] == "female"  # mutating the result must not touch the inputs
    assert merge(base, base, ours).merged == ours


def test_conflict_to_json_uses_none_for_absent_values() -> None:
    base = patient()
    ours = edit(base, birthDate=None)
    theirs = edit(base, birthDate="1974-12-24")
    result = merge(base, ours, theirs)
    assert result.conflicts == (Conflict("birthDate", "1974-12-25", None, "1974-12-24"),)
    assert result.conflicts[0].to_json() == {
        "path": "birthDate",
        "base": "1974-12-25",
        "ours": None,
        "theirs": "1974-12-24",
    }
    assert "birthDate" not in result.merged  # ours' value (absent) at the conflicting path
    json.dumps([c.to_json() for c in result.conflicts])


def test_no_base_means_both_created_independently() -> None:
    ours = {"resourceType": "Patient", "id": "p9", "telecom": [{"system": "phone", "value": "1"}]}
    theirs = {"resourceType": "Patient", "id": "p9", "telecom": [{"system": "email", "value": "a@b"}]}
    result = merge(None, ours, theirs)
    assert result.clean
    # both added at the same place: sorted by identity so that ours/theirs does not matter
    assert result.merged["telecom"] == [
        {"system": "email", "value": "a@b"},
        {"system": "phone", "value": "1"},
    ]
    assert merge(None, theirs, ours).merged == result.merged
    clash = merge(None, edit(ours, gender="male"), edit(theirs, gender="female"))
    assert paths(clash) == {"gender"}


# --- Observation ----------------------------------------------------------------


def test_observation_value_changed_differently_is_a_conflict() -> None:
    base = observation()
    ours = edit(base, valueQuantity={**base["valueQuantity"], "value": 126})
    theirs = edit(base, valueQuantity={**base["valueQuantity"], "value": 112})
    result = merge(base, ours, theirs)
    assert paths(result) == {"valueQuantity"}
    assert result.merged["valueQuantity"]["value"] == 126
    assert result.conflicts[0].theirs["value"] == 112


def test_observation_value_and_unit_edited_on_different_sides_is_still_a_conflict() -> None:
    # value 120 -> 6.7 on one side, unit mg/dL -> mmol/L on the other: combining
    # them would record a value nobody entered.
    base = observation()
    ours = edit(base, valueQuantity={**base["valueQuantity"], "unit": "mmol/L", "code": "mmol/L"})
    theirs = edit(base, valueQuantity={**base["valueQuantity"], "value": 6.7})
    assert paths(merge(base, ours, theirs)) == {"valueQuantity"}


def test_observation_value_type_change_is_one_conflict_not_two_values() -> None:
    base = observation()
    ours = edit(base, valueQuantity={**base["valueQuantity"], "value": 130})
    theirs = edit(base, valueQuantity=None, valueString="sample haemolysed")
    result = merge(base, ours, theirs)
    assert paths(result) == {"value[x]"}
    assert result.conflicts[0].theirs == {"valueString": "sample haemolysed"}
    assert "valueString" not in result.merged and result.merged["valueQuantity"]["value"] == 130


def test_observation_value_on_one_side_note_on_the_other_merge() -> None:
    base = observation()
    ours = edit(base, valueQuantity={**base["valueQuantity"], "value": 126})
    theirs = edit(base, note=[{"text": "fasting", "time": "2026-11-20T09:31:00Z"}])
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["valueQuantity"]["value"] == 126 and result.merged["note"][0]["text"] == "fasting"


def test_observation_code_recoded_on_both_sides_is_a_conflict() -> None:
    base = observation()
    ours = edit(base, code={"coding": [*base["code"]["coding"], {"system": SCT, "code": "33747003"}]})
    theirs = edit(base, code={"coding": [{"system": LOINC, "code": "2345-7"}]})
    assert paths(merge(base, ours, theirs)) == {"code"}


# --- MedicationRequest ------------------------------------------------------------


def _dose(text: str, value: float) -> list[dict[str, Any]]:
    return [{"text": text, "doseAndRate": [{"doseQuantity": {"value": value, "unit": "mg"}}]}]


def test_medication_dosage_changed_differently_is_a_conflict() -> None:
    base = medication_request()
    ours = edit(base, dosageInstruction=_dose("10 mg once daily", 10))
    theirs = edit(base, dosageInstruction=_dose("5 mg twice daily", 5))
    result = merge(base, ours, theirs)
    assert paths(result) == {"dosageInstruction"}
    assert result.merged["dosageInstruction"] == ours["dosageInstruction"]


def test_dosage_subfields_edited_on_different_sides_still_conflict() -> None:
    base = medication_request()
    ours = copy.deepcopy(base)
    ours["dosageInstruction"][0]["text"] = "5 mg once daily with food"
    theirs = copy.deepcopy(base)
    theirs["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 10
    assert paths(merge(base, ours, theirs)) == {"dosageInstruction"}


def test_stopped_order_wins_and_other_side_note_merges() -> None:
    base = medication_request()
    stopped = edit(base, status="stopped", statusReason={"text": "bleeding"})
    noted = edit(
        base, note=[{"text": "patient asked about timing", "authorString": "RN Lee", "time": "2026-11-21"}]
    )
    for ours, theirs in ((stopped, noted), (noted, stopped)):
        result = merge(base, ours, theirs)
        assert result.clean
        assert result.merged["status"] == "stopped"
        assert result.merged["note"] == noted["note"]


def test_dosage_change_on_a_stopped_order_is_a_conflict_either_way_round() -> None:
    base = medication_request()
    stopped = edit(base, status="stopped")
    changed = edit(base, dosageInstruction=_dose("10 mg once daily", 10))
    server_stopped = merge(base, stopped, changed)
    assert paths(server_stopped) == {"dosageInstruction"}
    assert server_stopped.merged["status"] == "stopped"
    assert server_stopped.merged["dosageInstruction"] == base["dosageInstruction"]  # ours' value
    client_stopped = merge(base, changed, stopped)
    assert paths(client_stopped) == {"dosageInstruction"}
    assert client_stopped.merged["status"] == "stopped"  # the stop is never undone


def test_entered_in_error_vs_reactivation_is_a_status_conflict() -> None:
    base = edit(medication_request(), status="on-hold")
    result = merge(base, edit(base, status="entered-in-error"), edit(base, status="active"))
    assert paths(result) == {"status"}
    assert result.merged["status"] == "entered-in-error"


def test_stop_with_identical_dosage_edit_on_both_sides_is_clean() -> None:
    base = medication_request()
    new_dose = _dose("2.5 mg once daily", 2.5)
    result = merge(
        base, edit(base, status="stopped", dosageInstruction=new_dose), edit(base, dosageInstruction=new_dose)
    )
    assert result.clean and result.merged["status"] == "stopped"


# --- AllergyIntolerance -----------------------------------------------------------


def test_allergy_reaction_on_one_side_note_on_the_other_merge_cleanly() -> None:
    base = allergy()
    anaphylaxis = {
        "manifestation": [{"coding": [{"system": SCT, "code": "39579001", "display": "Anaphylaxis"}]}],
        "severity": "severe",
    }
    ours = edit(base, reaction=[*base["reaction"], anaphylaxis])
    theirs = edit(base, note=[{"text": "reported by daughter", "time": "2026-11-21T12:00:00Z"}])
    for o, t in ((ours, theirs), (theirs, ours)):
        result = merge(base, o, t)
        assert result.clean
        assert result.merged["reaction"] == ours["reaction"]
        assert result.merged["note"] == theirs["note"]


def test_allergy_entered_in_error_vs_new_reaction_is_a_conflict() -> None:
    base = allergy()
    retracted = edit(
        base, verificationStatus=status_concept("entered-in-error", "verification"), clinicalStatus=None
    )
    extra = {"manifestation": [{"coding": [{"system": SCT, "code": "39579001"}]}]}
    more = edit(base, reaction=[*base["reaction"], extra])
    for o, t in ((retracted, more), (more, retracted)):
        result = merge(base, o, t)
        assert paths(result) == {"reaction"}
        assert result.merged["verificationStatus"] == retracted["verificationStatus"]
    noted = edit(base, note=[{"text": "checked with GP"}])
    clean = merge(base, retracted, noted)
    assert clean.clean and clean.merged["note"] == noted["note"]


def test_allergy_resolved_vs_criticality_change_is_a_conflict() -> None:
    base = allergy()
    resolved = edit(base, clinicalStatus=status_concept("resolved", "clinical"))
    result = merge(base, edit(base, criticality="high"), resolved)
    assert paths(result) == {"criticality"}
    assert result.merged["clinicalStatus"] == resolved["clinicalStatus"]


def test_same_reaction_severity_changed_differently_is_a_conflict_inside_the_reaction() -> None:
    base = allergy()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    ours["reaction"][0]["severity"] = "mild"
    theirs["reaction"][0]["severity"] = "severe"
    result = merge(base, ours, theirs)
    assert paths(result) == {f"reaction[manifestation={SCT}|271807003].severity"}


# --- Patient demographics -------------------------------------------------------


def test_patient_fields_merge_field_by_field() -> None:
    base = patient()
    ours = edit(base, birthDate="1974-12-24")
    theirs = copy.deepcopy(base)
    theirs["name"][0]["family"] = "Chalmers-Smith"
    theirs["telecom"].append({"system": "email", "value": "p.chalmers@example.org"})
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["birthDate"] == "1974-12-24"
    assert result.merged["name"][0] == {
        "use": "official",
        "family": "Chalmers-Smith",
        "given": ["Peter", "James"],
    }
    assert [t["system"] for t in result.merged["telecom"]] == ["phone", "email"]


def test_same_name_part_changed_differently_is_a_conflict_at_its_identity_path() -> None:
    base = patient()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    ours["name"][0]["family"] = "Chalmer"
    theirs["name"][0]["family"] = "Chalmers-Smith"
    theirs["name"][1]["given"] = ["Jimmy"]
    result = merge(base, ours, theirs)
    assert paths(result) == {"name[use=official].family"}
    assert result.merged["name"][0]["family"] == "Chalmer"
    assert result.merged["name"][1]["given"] == ["Jimmy"]


def test_given_names_have_no_identity_and_conflict_as_one_value() -> None:
    base = patient()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    ours["name"][0]["given"] = ["Peter"]
    theirs["name"][0]["given"] = ["Peter", "Jim"]
    assert paths(merge(base, ours, theirs)) == {"name[use=official].given"}


def test_both_sides_adding_telecoms_and_identifiers_keep_all() -> None:
    base = patient()
    ours = edit(
        base,
        telecom=[*base["telecom"], {"system": "phone", "value": "0400 000 001", "use": "mobile"}],
        identifier=[*base["identifier"], {"system": "urn:medicare", "value": "999"}],
    )
    theirs = edit(
        base,
        telecom=[{"system": "email", "value": "pc@example.org"}, *base["telecom"]],
        identifier=[*base["identifier"], {"system": "urn:dva", "value": "111"}],
    )
    result = merge(base, ours, theirs)
    assert result.clean
    assert [t["value"] for t in result.merged["telecom"]] == [
        "pc@example.org",
        "(03) 5555 6473",
        "0400 000 001",
    ]
    assert {i["value"] for i in result.merged["identifier"]} == {"12345", "999", "111"}
    assert merge(base, theirs, ours).merged == result.merged


def test_same_phone_number_corrected_differently_is_a_conflict_not_two_numbers() -> None:
    base = patient()
    ours = edit(base, telecom=[{"system": "phone", "value": "(03) 5555 6474", "use": "work"}])
    theirs = edit(base, telecom=[{"system": "phone", "value": "(03) 5555 6437", "use": "work"}])
    result = merge(base, ours, theirs)
    assert paths(result) == {"telecom"}
    assert result.merged["telecom"] == ours["telecom"]
    mrn = merge(
        base,
        edit(base, identifier=[{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12346"}]),
        edit(base, identifier=[{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12354"}]),
    )
    assert paths(mrn) == {"identifier"}
    # one side corrects the number, the other only adds an email: clean
    other = edit(base, telecom=[*base["telecom"], {"system": "email", "value": "pc@example.org"}])
    assert merge(base, ours, other).clean


def test_removal_of_an_untouched_item_is_a_removal_and_removal_vs_edit_a_conflict() -> None:
    base = edit(patient(), telecom=[*patient()["telecom"], {"system": "email", "value": "old@example.org"}])
    removed = edit(base, telecom=[base["telecom"][0]])
    added_address = edit(base, address=[*base["address"], {"use": "work", "city": "Melbourne"}])
    result = merge(base, removed, added_address)
    assert result.clean and result.merged["telecom"] == removed["telecom"]
    assert len(result.merged["address"]) == 2
    edited = copy.deepcopy(base)
    edited["telecom"][1]["use"] = "home"
    clash = merge(base, removed, edited)
    assert paths(clash) == {"telecom[system=email,value=old@example.org]"}
    assert clash.merged["telecom"] == removed["telecom"]  # ours: removed


def test_address_edited_by_identity_not_position() -> None:
    base = edit(patient(), address=[{"use": "home", "city": "A"}, {"use": "work", "city": "B"}])
    ours = edit(
        base, address=[{"use": "work", "city": "B", "postalCode": "3000"}, {"use": "home", "city": "A"}]
    )
    theirs = edit(base, address=[{"use": "home", "city": "A2"}, {"use": "work", "city": "B"}])
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["address"] == [
        {"use": "work", "city": "B", "postalCode": "3000"},
        {"use": "home", "city": "A2"},
    ]


def test_items_sharing_one_identity_make_the_list_atomic() -> None:
    base = edit(patient(), name=[{"family": "A"}, {"family": "B"}])  # two names without use
    result = merge(
        base, edit(base, name=[{"family": "A"}]), edit(base, name=[{"family": "A"}, {"family": "C"}])
    )
    assert paths(result) == {"name"}


# --- notes, codings, extensions, unknown elements --------------------------------


def test_same_note_edited_differently_is_a_conflict_and_new_notes_survive() -> None:
    note = {"authorString": "Dr A", "time": "2026-11-20T10:00:00Z", "text": "BP high"}
    base = edit(observation(), note=[note])
    ours = edit(base, note=[{**note, "text": "BP high, repeat"}])
    theirs = edit(base, note=[{**note, "text": "BP high, recheck"}, {"text": "called patient"}])
    result = merge(base, ours, theirs)
    assert paths(result) == {"note[time=2026-11-20T10:00:00Z,author=Dr A].text"}
    assert result.merged["note"] == [ours["note"][0], {"text": "called patient"}]
    one_sided = merge(base, ours, edit(base, note=[note, {"text": "called patient"}]))
    assert one_sided.clean and one_sided.merged["note"] == [ours["note"][0], {"text": "called patient"}]


def test_codings_added_on_both_sides_combine_but_recoding_conflicts() -> None:
    base = {"resourceType": "Basic", "code": {"coding": [{"system": SCT, "code": "1"}]}}
    icd = {"system": "http://hl7.org/fhir/sid/icd-10", "code": "X"}
    loinc = {"system": LOINC, "code": "Y"}
    added = merge(
        base,
        edit(base, code={"coding": [*base["code"]["coding"], icd]}),
        edit(base, code={"coding": [*base["code"]["coding"], loinc]}),
    )
    assert added.clean and added.merged["code"]["coding"] == [base["code"]["coding"][0], icd, loinc]
    recoded = merge(base, edit(base, code={"coding": [icd]}), edit(base, code={"coding": [loinc]}))
    assert paths(recoded) == {"code.coding"}


def test_extensions_merge_by_url_and_unknown_elements_are_preserved() -> None:
    race = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    bsex = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
    base = edit(
        patient(),
        extension=[{"url": bsex, "valueCode": "M"}],
        _birthDate={"extension": [{"url": "x", "valueString": "approx"}]},
    )
    ours = edit(base, extension=[{"url": bsex, "valueCode": "F"}], vendorThing={"a": [1, {"b": None}]})
    theirs = edit(
        base,
        extension=[*base["extension"], {"url": race, "extension": [{"url": "text", "valueString": "Asian"}]}],
    )
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["extension"] == [{"url": bsex, "valueCode": "F"}, theirs["extension"][1]]
    assert result.merged["vendorThing"] == {"a": [1, {"b": None}]}
    assert result.merged["_birthDate"] == base["_birthDate"]
    clash = merge(base, ours, edit(base, extension=[{"url": bsex, "valueCode": "UNK"}]))
    assert paths(clash) == {f"extension[url={bsex}].valueCode"}


def test_repeated_extension_urls_are_matched_by_content() -> None:
    url = "http://example.org/alias"
    base = {
        "resourceType": "Patient",
        "extension": [{"url": url, "valueString": "a"}, {"url": url, "valueString": "b"}],
    }
    ours = edit(base, extension=[*base["extension"], {"url": url, "valueString": "c"}])
    theirs = edit(base, extension=[base["extension"][1]])
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["extension"] == [{"url": url, "valueString": "b"}, {"url": url, "valueString": "c"}]


# --- meta and narrative -------------------------------------------------------------


def test_server_meta_and_narrative_never_conflict_and_tags_merge_as_sets() -> None:
    base = edit(patient(), text={"status": "generated", "div": "<div>v1</div>"})
    ours = edit(
        base,
        meta={
            "versionId": "2",
            "lastUpdated": "2026-11-21T08:00:00Z",
            "tag": [{"system": "s", "code": "vip"}],
        },
        text={"status": "generated", "div": "<div>server</div>"},
    )
    theirs = edit(
        base,
        meta={
            "versionId": "9",
            "lastUpdated": "2026-11-22T08:00:00Z",
            "security": [{"system": "t", "code": "R"}],
        },
        text={"status": "generated", "div": "<div>client</div>"},
    )
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["meta"] == {
        "versionId": "2",
        "lastUpdated": "2026-11-21T08:00:00Z",
        "tag": [{"system": "s", "code": "vip"}],
        "security": [{"system": "t", "code": "R"}],
    }
    assert result.merged["text"]["div"] == "<div>server</div>"


def condition() -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": status_concept("active", "condition-clinical"),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Type 2 diabetes"}]},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2020-03-01",
    }


def test_condition_resolved_on_one_side_note_on_the_other_merge() -> None:
    base = condition()
    ours = edit(base, clinicalStatus=status_concept("resolved", "condition-clinical"))
    theirs = edit(base, note=[{"text": "diet controlled"}])
    result = merge(base, ours, theirs)
    assert result.clean
    assert result.merged["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert result.merged["note"] == [{"text": "diet controlled"}]


def test_condition_diagnosis_recoded_differently_on_both_sides_is_a_conflict() -> None:
    base = condition()
    type1 = {"coding": [{"system": "http://snomed.info/sct", "code": "46635009", "display": "Type 1 diabetes"}]}
    gest = {"coding": [{"system": "http://snomed.info/sct", "code": "11687002", "display": "Gestational diabetes"}]}
    result = merge(base, edit(base, code=type1), edit(base, code=gest))
    assert paths(result) == {"code"}
    assert result.merged["code"] == type1  # ours shown until a person decides


# --- The rest of the record (issue 15): immunizations, procedures, lab reports, appointments -----------------


def immunization() -> dict[str, Any]:
    return {
        "resourceType": "Immunization", "id": "imm-1", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": "2026-10-01",
        "doseQuantity": {"value": 0.5, "unit": "mL"}, "lotNumber": "A1",
    }


def test_immunization_lot_corrected_differently_is_a_conflict_and_a_note_merges() -> None:
    base = immunization()
    ours = edit(base, lotNumber="A2")
    theirs = edit(base, lotNumber="A3")
    assert paths(merge(base, ours, theirs)) == {"lotNumber"}
    noted = edit(base, note=[{"text": "no reaction after 15 min"}])
    result = merge(base, ours, noted)
    assert not result.conflicts and result.merged["lotNumber"] == "A2" and result.merged["note"]


def test_immunization_entered_in_error_vs_dose_edit_is_a_conflict() -> None:
    base = immunization()
    retracted = edit(base, status="entered-in-error")
    dosed = edit(base, doseQuantity={"value": 1.0, "unit": "mL"})
    for ours, theirs in ((retracted, dosed), (dosed, retracted)):
        result = merge(base, ours, theirs)
        assert "doseQuantity" in paths(result)  # conflict path names the concrete element


def procedure() -> dict[str, Any]:
    return {
        "resourceType": "Procedure", "id": "proc-1", "status": "completed",
        "code": {"coding": [{"system": SCT, "code": "80146002"}]},
        "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-10-02T09:00:00Z",
    }


def test_procedure_time_changed_differently_is_a_conflict_and_not_done_guards_the_code() -> None:
    base = procedure()
    assert paths(merge(base, edit(base, performedDateTime="2026-10-02T10:00:00Z"),
                       edit(base, performedDateTime="2026-10-02T11:00:00Z"))) == {"performedDateTime"}
    result = merge(base, edit(base, status="not-done"), edit(base, code={"text": "appendectomy"}))
    assert "code" in paths(result) and result.merged["status"] == "not-done"


def report() -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "id": "cbc-1", "status": "preliminary",
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]}, "subject": {"reference": "Patient/p1"},
        "result": [{"reference": "Observation/hb"}],
    }


def test_report_results_added_on_both_sides_are_all_kept() -> None:
    base = report()
    ours = edit(base, result=[*base["result"], {"reference": "Observation/wbc"}])
    theirs = edit(base, result=[*base["result"], {"reference": "Observation/plt"}], status="final")
    result = merge(base, ours, theirs)
    assert not result.conflicts
    assert {r["reference"] for r in result.merged["result"]} == {"Observation/hb", "Observation/wbc", "Observation/plt"}
    assert result.merged["status"] == "final"


def test_report_two_conclusions_conflict_and_retraction_guards_results() -> None:
    base = report()
    assert paths(merge(base, edit(base, conclusion="normal"), edit(base, conclusion="anaemia"))) == {"conclusion"}
    retracted = edit(base, status="entered-in-error")
    more = edit(base, result=[*base["result"], {"reference": "Observation/wbc"}])
    assert "result" in paths(merge(base, retracted, more))


def appointment() -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": "ap-1", "status": "booked",
        "start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:20:00Z",
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "needs-action"},
            {"actor": {"reference": "Practitioner/dr"}, "status": "needs-action"},
        ],
    }


def test_appointment_answers_per_participant_merge_and_cancel_vs_reschedule_conflicts() -> None:
    base = appointment()
    ours = copy.deepcopy(base)
    ours["participant"][0]["status"] = "accepted"
    theirs = copy.deepcopy(base)
    theirs["participant"][1]["status"] = "accepted"
    result = merge(base, ours, theirs)
    assert not result.conflicts
    assert [p["status"] for p in result.merged["participant"]] == ["accepted", "accepted"]
    cancelled = edit(base, status="cancelled")
    moved = edit(base, start="2026-12-02T09:00:00Z", end="2026-12-02T09:20:00Z")
    for a, b in ((cancelled, moved), (moved, cancelled)):
        got = merge(base, a, b)
        assert {"start", "end"} <= paths(got), paths(got)
    assert paths(merge(base, edit(base, status="arrived"), edit(base, status="cancelled"))) == {"status"}
