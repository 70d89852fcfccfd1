"""Offline medication safety checks: the clinical scenario table (runs on CPython and inside Pyodide).

Each row is one bedside situation: the order being placed, what the chart holds, and the cards a
clinician must see (rule and indicator) - or must NOT see (negative controls).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pyclient.cds import Card, Context, KnowledgeBase, KnowledgeBaseError, check, default_kb, shipped_bytes

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CLIN = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VER = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def med(mid: str, text: str | None = None, *, rx: str | None = None, display: str | None = None,
        status: str = "active", rtype: str = "MedicationRequest") -> dict[str, Any]:
    cc: dict[str, Any] = {}
    if rx:
        cc["coding"] = [{"system": RX, "code": rx, "display": display or text or ""}]
    if text:
        cc["text"] = text
    return {"resourceType": rtype, "id": mid, "status": status, "intent": "order",
            "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": cc}


def allergy(aid: str, text: str | None = None, *, code: tuple[str, str] | None = None, clinical: str = "active",
            verification: str = "confirmed", category: str | None = "medication", kind: str = "allergy",
            criticality: str | None = None, reaction: str | None = None) -> dict[str, Any]:
    cc: dict[str, Any] = {}
    if code:
        cc["coding"] = [{"system": code[0], "code": code[1]}]
    if text:
        cc["text"] = text
    out: dict[str, Any] = {
        "resourceType": "AllergyIntolerance", "id": aid, "patient": {"reference": "Patient/p1"}, "type": kind,
        "clinicalStatus": {"coding": [{"system": CLIN, "code": clinical}]},
        "verificationStatus": {"coding": [{"system": VER, "code": verification}]}, "code": cc,
    }
    if category:
        out["category"] = [category]
    if criticality:
        out["criticality"] = criticality
    if reaction:
        out["reaction"] = [{"manifestation": [{"text": reaction}]}]
    return out


def lab(oid: str, loinc: str, value: float, unit: str, when: str = "2026-11-30T08:00:00Z",
        status: str = "final") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": status,
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


K, EGFR = "2823-3", "33914-3"
NOW = "2026-12-01T10:00:00Z"

# (scenario, drafts, chart, expected [(rule id, indicator)] exactly)
SCENARIOS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]] = [
    # ---- drug-allergy
    ("penicillin allergy (text) + amoxicillin (text)", [med("d", "Amoxicillin 500 mg three times daily")],
     [allergy("a", "Penicillin", criticality="high", reaction="Anaphylaxis")], [("allergy-direct", "critical")]),
    ("penicillin allergy (SNOMED) + amoxicillin (RxNorm SCD)", [med("d", rx="308192", display="Amoxicillin 500 MG Oral Tablet")],
     [allergy("a", code=(SCT, "764146007"))], [("allergy-direct", "critical")]),
    ("penicillin allergy + amoxicillin/clavulanate (Synthea SCD)",
     [med("d", rx="562251", display="Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet")],
     [allergy("a", code=(SCT, "764146007"))], [("allergy-direct", "critical")]),
    ("amoxicillin allergy (RxNorm ingredient) + penicillin V", [med("d", rx="834061", display="Penicillin V Potassium 250 MG Oral Tablet")],
     [allergy("a", code=(RX, "723"))], [("allergy-direct", "critical")]),
    ("penicillin allergy + cephalexin: cross-sensitivity caveat", [med("d", "Cephalexin 500 mg")],
     [allergy("a", "Penicillin")], [("allergy-xs-penicillin-cephalosporin", "warning")]),
    ("penicillin allergy + meropenem: low cross-reactivity", [med("d", "Meropenem 1 g IV")],
     [allergy("a", "Penicillin")], [("allergy-xs-penicillin-carbapenem", "info")]),
    ("penicillin anaphylaxis + meropenem: raised to warning", [med("d", "Meropenem 1 g IV")],
     [allergy("a", "Penicillin", criticality="high")], [("allergy-xs-penicillin-carbapenem", "warning")]),
    ("sulfonamide allergy + co-trimoxazole", [med("d", "Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet")],
     [allergy("a", code=(SCT, "387406002"))], [("allergy-direct", "critical")]),
    ("'sulfa' allergy + furosemide: non-antibiotic sulfonamide, info only", [med("d", "Furosemide 40 mg")],
     [allergy("a", "sulfa drugs")], [("allergy-xs-sulfa-nonantibiotic", "info")]),
    ("Synthea co-trimoxazole allergy (RxNorm 10831) + hydrochlorothiazide", [med("d", rx="310798", display="Hydrochlorothiazide 25 MG Oral Tablet")],
     [allergy("a", code=(RX, "10831"))], [("allergy-xs-sulfa-nonantibiotic", "info")]),
    ("aspirin allergy + ibuprofen: NSAID cross-sensitivity", [med("d", rx="206905", display="Ibuprofen 400 MG Oral Tablet [Ibu]")],
     [allergy("a", code=(RX, "1191"), reaction="Wheezing")], [("allergy-xs-aspirin-nsaid", "warning")]),
    ("aspirin allergy + celecoxib: COX-2 selective is tolerated", [med("d", "Celecoxib 200 mg")],
     [allergy("a", code=(SCT, "387458008"))], []),
    ("aspirin allergy + aspirin", [med("d", rx="243670", display="Aspirin 81 MG Oral Tablet")],
     [allergy("a", code=(SCT, "387458008"))], [("allergy-direct", "critical")]),
    ("ibuprofen intolerance + ibuprofen: warning, not critical", [med("d", "Ibuprofen 200 mg")],
     [allergy("a", "Ibuprofen", kind="intolerance")], [("allergy-direct", "warning")]),
    ("codeine allergy + morphine", [med("d", "Morphine sulfate 10 mg")], [allergy("a", code=(SCT, "387494007"))],
     [("allergy-xs-opiate", "warning")]),
    ("unconfirmed penicillin allergy still warns", [med("d", "Ampicillin 1 g")],
     [allergy("a", "Penicillin", verification="unconfirmed")], [("allergy-direct", "critical")]),
    # ---- negative controls for allergies
    ("NEG refuted penicillin allergy", [med("d", "Amoxicillin 500 mg")], [allergy("a", "Penicillin", verification="refuted")], []),
    ("NEG entered-in-error penicillin allergy", [med("d", "Amoxicillin 500 mg")],
     [allergy("a", "Penicillin", verification="entered-in-error")], []),
    ("NEG resolved penicillin allergy", [med("d", "Amoxicillin 500 mg")], [allergy("a", "Penicillin", clinical="resolved")], []),
    ("NEG inactive penicillin allergy", [med("d", "Amoxicillin 500 mg")], [allergy("a", "Penicillin", clinical="inactive")], []),
    ("NEG peanut (food) allergy + amoxicillin", [med("d", "Amoxicillin 500 mg")],
     [allergy("a", "Peanut", code=(SCT, "256349002"), category="food")], []),
    ("NEG latex (environment) allergy + lisinopril", [med("d", rx="314076", display="lisinopril 10 MG Oral Tablet")],
     [allergy("a", "Latex", code=(SCT, "111088007"), category="environment")], []),
    ("NEG penicillin allergy + azithromycin", [med("d", "Azithromycin 250 mg")], [allergy("a", "Penicillin")], []),
    # ---- drug-drug
    ("simvastatin (SCD 314231) + clarithromycin", [med("d", rx="314231", display="Simvastatin 10 MG Oral Tablet")],
     [med("m", "Clarithromycin 500 mg twice daily")], [("ddi-simva-lova-strong3a4", "critical")]),
    ("clarithromycin ordered on top of active simvastatin (reverse direction)", [med("d", "Clarithromycin 500 mg")],
     [med("m", rx="312961", display="Simvastatin 20 MG Oral Tablet")], [("ddi-simva-lova-strong3a4", "critical")]),
    ("sildenafil + nitroglycerin spray (Synthea SCD 705129)", [med("d", "Sildenafil 50 mg")],
     [med("m", rx="705129", display="Nitroglycerin 0.4 MG/ACTUAT Mucosal Spray")], [("ddi-pde5-nitrate", "critical")]),
    ("tizanidine + ciprofloxacin", [med("d", "Ciprofloxacin 500 mg")], [med("m", "Tizanidine 4 mg")],
     [("ddi-tizanidine-1a2", "critical")]),
    ("phenelzine + sertraline", [med("d", "Sertraline 50 MG Oral Tablet", rx="312940")], [med("m", "Phenelzine 15 mg")],
     [("ddi-maoi-serotonergic", "critical")]),
    ("warfarin + ibuprofen", [med("d", rx="206905", display="Ibuprofen 400 MG Oral Tablet [Ibu]")],
     [med("m", "Warfarin 5 mg")], [("ddi-anticoag-nsaid", "warning")]),
    ("apixaban (demo SCD) + naproxen (Synthea SCD)", [med("d", rx="849574", display="Naproxen sodium 220 MG Oral Tablet")],
     [med("m", rx="1364445", display="apixaban 5 MG Oral Tablet")], [("ddi-anticoag-nsaid", "warning")]),
    ("warfarin + amiodarone", [med("d", "Amiodarone 200 mg")], [med("m", "Warfarin 3 mg")],
     [("ddi-warfarin-2c9", "warning")]),
    ("warfarin + apixaban: two anticoagulants", [med("d", "Apixaban 5 mg")], [med("m", "Warfarin 3 mg")],
     [("ddi-anticoag-anticoag", "warning")]),
    ("lisinopril (SCD) + spironolactone", [med("d", "Spironolactone 25 mg")],
     [med("m", rx="314076", display="lisinopril 10 MG Oral Tablet")], [("ddi-raas-ksparing", "warning")]),
    ("lisinopril + losartan: dual RAAS blockade", [med("d", "Losartan 50 mg")], [med("m", "Lisinopril 10 mg")],
     [("ddi-acei-arb", "warning")]),
    ("spironolactone + co-trimoxazole", [med("d", "Sulfamethoxazole / Trimethoprim 800/160 mg")],
     [med("m", "Spironolactone 25 mg")], [("ddi-ksparing-tmp", "warning")]),
    ("methotrexate + trimethoprim", [med("d", "Trimethoprim 200 mg")], [med("m", "Methotrexate 15 mg weekly")],
     [("ddi-mtx-tmp", "warning")]),
    ("lithium + hydrochlorothiazide (Synthea SCD)", [med("d", rx="310798", display="Hydrochlorothiazide 25 MG Oral Tablet")],
     [med("m", "Lithium carbonate 400 mg")], [("ddi-lithium-raas-diuretic", "warning")]),
    ("digoxin + amiodarone", [med("d", "Amiodarone 200 mg")], [med("m", "Digoxin 125 mcg")],
     [("ddi-digoxin-raisers", "warning")]),
    ("theophylline + ciprofloxacin", [med("d", "Ciprofloxacin 500 mg")], [med("m", "Theophylline 300 mg")],
     [("ddi-theophylline-inhibitors", "warning")]),
    ("clozapine + fluvoxamine", [med("d", "Fluvoxamine 50 mg")], [med("m", "Clozapine 200 mg")],
     [("ddi-clozapine-1a2", "warning")]),
    ("citalopram + ondansetron: two QT-prolonging drugs", [med("d", "Ondansetron 4 mg")], [med("m", "Citalopram 20 mg")],
     [("ddi-qt-qt", "warning")]),
    ("sertraline + tramadol: serotonin syndrome", [med("d", "Tramadol 50 mg")], [med("m", "Sertraline 100 mg")],
     [("ddi-ssri-serotonergic-opioid", "warning")]),
    ("meperidine (Synthea SCD) + diazepam (Synthea SCD): opioid + benzodiazepine",
     [med("d", rx="861467", display="Meperidine Hydrochloride 50 MG Oral Tablet")],
     [med("m", rx="197591", display="Diazepam 5 MG Oral Tablet")], [("ddi-opioid-benzo", "warning")]),
    ("tacrolimus (Synthea SCD) + clarithromycin", [med("d", "Clarithromycin 500 mg")],
     [med("m", rx="1664463", display="24 HR tacrolimus 1 MG Extended Release Oral Tablet")], [("ddi-cni-3a4", "warning")]),
    ("metoprolol (Synthea SCD) + verapamil", [med("d", "Verapamil 80 mg")],
     [med("m", rx="866412", display="24 HR metoprolol succinate 100 MG Extended Release Oral Tablet")],
     [("ddi-betablocker-ndhp", "info")]),
    ("clopidogrel + omeprazole", [med("d", "Omeprazole 20 mg")], [med("m", "Clopidogrel 75 mg")],
     [("ddi-clopidogrel-ppi", "info")]),
    ("ibuprofen + low-dose aspirin (Synthea SCD)", [med("d", rx="198405", display="Ibuprofen 100 MG Oral Tablet")],
     [med("m", rx="243670", display="Aspirin 81 MG Oral Tablet")], [("ddi-ibuprofen-aspirin", "info")]),
    ("lisinopril + ibuprofen: kidney injury risk", [med("d", "Ibuprofen 400 mg")], [med("m", "Lisinopril 10 mg")],
     [("ddi-raas-nsaid", "info")]),
    ("azathioprine + allopurinol", [med("d", "Allopurinol 100 mg")], [med("m", "Azathioprine 50 mg")],
     [("ddi-thiopurine-xoi", "warning")]),
    ("two drafts interact with each other", [med("d1", "Sildenafil 50 mg"), med("d2", "Isosorbide mononitrate 30 mg")], [],
     [("ddi-pde5-nitrate", "critical"), ("ddi-pde5-nitrate", "critical")]),
    ("MedicationStatement (patient-reported) counts", [med("d", "Sildenafil 50 mg")],
     [med("s", "Isosorbide mononitrate 30 mg", rtype="MedicationStatement")], [("ddi-pde5-nitrate", "critical")]),
    # ---- negative controls for interactions
    ("NEG stopped simvastatin + clarithromycin", [med("d", "Clarithromycin 500 mg")],
     [med("m", rx="314231", display="Simvastatin 10 MG Oral Tablet", status="stopped")], []),
    ("NEG cancelled, completed, entered-in-error medications", [med("d", "Clarithromycin 500 mg")],
     [med("m1", "Simvastatin 10 mg", status="cancelled"), med("m2", "Simvastatin 10 mg", status="completed"),
      med("m3", "Simvastatin 10 mg", status="entered-in-error"),
      med("s", "Simvastatin 10 mg", status="stopped", rtype="MedicationStatement")], []),
    ("NEG unrelated drugs: metformin + levothyroxine + acetaminophen", [med("d", rx="860975", display="24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")],
     [med("m1", "Levothyroxine 50 mcg"), med("m2", rx="313782", display="Acetaminophen 325 MG Oral Tablet")], []),
    ("NEG pravastatin + clarithromycin (not CYP3A4 dependent)", [med("d", "Clarithromycin 500 mg")], [med("m", "Pravastatin 40 mg")], []),
    ("NEG cancelled draft is not checked", [med("d", "Amoxicillin 500 mg", status="cancelled")], [allergy("a", "Penicillin")], []),
    ("NEG changing the dose of an active drug is not a duplicate of itself", [med("m", "Simvastatin 20 mg")],
     [med("m", "Simvastatin 10 mg")], []),
    # ---- duplicate therapy
    ("two NSAIDs: ibuprofen + naproxen", [med("d", "Naproxen 250 mg")], [med("m", rx="206905", display="Ibuprofen 400 MG Oral Tablet [Ibu]")],
     [("duplicate-nsaid", "warning")]),
    ("two statins", [med("d", "Atorvastatin 20 mg")], [med("m", rx="314231", display="Simvastatin 10 MG Oral Tablet")],
     [("duplicate-statin", "warning")]),
    ("same ingredient twice: amoxicillin + amoxicillin/clavulanate", [med("d", rx="562251", display="Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet")],
     [med("m", "Amoxicillin 500 mg")], [("duplicate-ingredient", "warning")]),
    ("two SSRIs", [med("d", "Fluoxetine 20 mg")], [med("m", "Sertraline 50 mg")], [("duplicate-ssri", "warning")]),
    # ---- lab-aware
    ("spironolactone with potassium 6.2: critical", [med("d", "Spironolactone 25 mg")], [lab("o", K, 6.2, "mmol/L")],
     [("lab-k-raising-high-k", "critical")]),
    ("lisinopril with potassium 5.7 mEq/L: warning", [med("d", rx="314076", display="lisinopril 10 MG Oral Tablet")],
     [lab("o", K, 5.7, "mEq/L")], [("lab-k-raising-high-k", "warning")]),
    ("metformin with eGFR 24: contraindicated", [med("d", rx="860975", display="24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")],
     [lab("o", EGFR, 24, "mL/min/{1.73_m2}")], [("lab-metformin-egfr", "critical")]),
    ("metformin with eGFR 38: warning", [med("d", "Metformin 500 mg")], [lab("o", EGFR, 38, "mL/min/{1.73_m2}")],
     [("lab-metformin-egfr", "warning")]),
    ("digoxin with potassium 3.1", [med("d", "Digoxin 125 mcg")], [lab("o", K, 3.1, "mmol/L")], [("lab-digoxin-low-k", "warning")]),
    ("only the newest potassium counts (old 6.5, new 4.2)", [med("d", "Spironolactone 25 mg")],
     [lab("o1", K, 6.5, "mmol/L", when="2026-11-20T08:00:00Z"), lab("o2", K, 4.2, "mmol/L", when="2026-11-30T08:00:00Z")], []),
    ("NEG potassium 4.4", [med("d", "Spironolactone 25 mg")], [lab("o", K, 4.4, "mmol/L")], []),
    ("NEG potassium result older than 14 days", [med("d", "Spironolactone 25 mg")],
     [lab("o", K, 6.4, "mmol/L", when="2026-10-01T08:00:00Z")], []),
    ("NEG preliminary potassium result", [med("d", "Spironolactone 25 mg")], [lab("o", K, 6.4, "mmol/L", status="preliminary")], []),
    ("NEG potassium in the wrong unit is not guessed", [med("d", "Spironolactone 25 mg")], [lab("o", K, 6.4, "mg/dL")], []),
    ("NEG metformin with eGFR 75", [med("d", "Metformin 500 mg")], [lab("o", EGFR, 75, "mL/min/{1.73_m2}")], []),
    # ---- unknown codes: no false alert, no crash, and the card says so
    ("unknown RxNorm code and unknown name", [med("d", "Zorblaxin 10 mg", rx="99999999")], [allergy("a", "Penicillin")],
     [("unchecked", "info")]),
    ("unknown active medication is ignored, known draft still checked", [med("d", "Amoxicillin 500 mg")],
     [med("m", "Mystery tonic"), allergy("a", "Penicillin")], [("allergy-direct", "critical")]),
]


@pytest.mark.parametrize(("drafts", "chart", "expected"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_scenario(drafts: list[dict[str, Any]], chart: list[dict[str, Any]], expected: list[tuple[str, str]]) -> None:
    cards = check(drafts, Context(chart, now=NOW))
    got = sorted((c.rule_id, c.indicator) for c in cards)
    assert got == sorted(expected), [c.summary for c in cards]


def test_card_content_a_clinician_needs() -> None:
    cards = check([med("d", rx="314231", display="Simvastatin 10 MG Oral Tablet")], Context([med("m", "Clarithromycin 500 mg")]))
    (card,) = cards
    assert card.severity == "contraindicated" and card.kind == "drug-drug"
    assert "rhabdomyolysis" in card.summary.lower()
    assert "CYP3A4" in card.detail and "**Instead:**" in card.detail and "Pravastatin" in card.detail
    assert card.implicated == ("MedicationRequest/m",) and card.order_ref == "MedicationRequest/d"
    assert card.sources and all(s.citation for s in card.sources)
    assert card.needs_override and card.override_reasons


def test_cds_hooks_card_shape() -> None:
    (card,) = check([med("d", "Amoxicillin 500 mg")], Context([allergy("a", "Penicillin")]))
    hooks = card.to_cds_hooks(kb_version=default_kb().version)
    assert hooks["indicator"] == "critical" and len(hooks["summary"]) <= 140
    assert hooks["source"]["label"].startswith("OmniCare") and default_kb().version in hooks["source"]["label"]
    assert hooks["suggestions"][0]["actions"] == [
        {"type": "delete", "description": "Cancel Amoxicillin 500 mg", "resourceId": ["MedicationRequest/d"]}]
    assert {r["code"] for r in hooks["overrideReasons"]} >= {"benefit-outweighs-risk", "allergy-history-inaccurate"}
    json.dumps(hooks)  # plain JSON


def test_cards_are_deterministic_and_ordered() -> None:
    chart = [med("m1", "Warfarin 5 mg"), allergy("a", "Aspirin")]
    drafts = [med("d", "Ibuprofen 400 mg"), med("d2", "Tramadol 50 mg")]
    one, two = check(drafts, Context(chart)), check(copy.deepcopy(drafts), Context(copy.deepcopy(chart)))
    assert [c.uuid for c in one] == [c.uuid for c in two]
    ranks = [{"critical": 2, "warning": 1, "info": 0}[c.indicator] for c in one]
    assert ranks == sorted(ranks, reverse=True)


def test_context_accepts_dict_and_bundles() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": allergy("a", "Penicillin")}]}
    cards = check({"resourceType": "Bundle", "entry": [{"resource": med("d", "Amoxicillin 500 mg")}]},
                  {"allergies": bundle, "medications": [], "now": NOW})
    assert [c.rule_id for c in cards] == ["allergy-direct"]


def test_garbage_never_crashes() -> None:
    weird: list[Any] = [
        {"resourceType": "MedicationRequest", "id": "x", "status": "active", "medicationCodeableConcept": "oops"},
        {"resourceType": "MedicationRequest", "id": "y", "status": "active", "medicationCodeableConcept": {"coding": [None, 3]}},
        {"resourceType": "MedicationRequest", "id": "z", "status": "active"},
    ]
    chart: list[Any] = [{"resourceType": "AllergyIntolerance", "code": {"coding": "bad"}}, None, 7,
                        {"resourceType": "Observation", "status": "final", "valueQuantity": {"value": "high"}}]
    cards = check(weird, Context([c for c in chart if isinstance(c, dict)]))
    assert {c.rule_id for c in cards} == {"unchecked"}


def test_name_fallback_is_documented_behaviour() -> None:
    kb = default_kb()
    assert kb.match_names("Penicillin V Potassium 250 MG Oral Tablet")[0] == {"penicillin v"}
    assert kb.match_names("Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet")[0] == {"amoxicillin", "clavulanate"}
    assert kb.match_names("Paracétamol 1 g")[0] == {"acetaminophen"}
    assert kb.match_names("Potassium chloride 20 mEq")[0] == {"potassium chloride"}
    assert kb.match_names("Vitamin C")[0] == frozenset()


def test_knowledge_base_is_versioned_licensed_and_cited() -> None:
    data = json.loads(shipped_bytes())
    kb = KnowledgeBase.from_json(data)
    assert kb.version and len(kb.digest) == 64 and kb.licence == "CC-BY-4.0"
    for rule in data["interactions"] + data["allergyRules"] + data["labRules"]:
        assert rule["sources"], rule["id"]
    assert "drugbank" not in shipped_bytes().decode().replace("DrugBank, DDInter", "").lower()
    for sev in ("contraindicated", "major", "moderate"):
        assert any(r["severity"] == sev for r in data["interactions"])


@pytest.mark.parametrize("breakage", ["format", "uncited", "unknown-class", "bad-severity", "unknown-ingredient"])
def test_a_broken_knowledge_base_is_refused(breakage: str) -> None:
    data = json.loads(shipped_bytes())
    if breakage == "format":
        data["format"] = "something-else"
    elif breakage == "uncited":
        data["interactions"][0]["sources"] = []
    elif breakage == "unknown-class":
        data["interactions"][0]["a"] = "class:no-such-class"
    elif breakage == "bad-severity":
        data["interactions"][0]["severity"] = "bad"
    else:
        data["products"]["1"] = ["no such drug"]
    with pytest.raises(KnowledgeBaseError):
        KnowledgeBase.from_json(data)


def test_a_device_kb_version_is_used_not_the_shipped_one() -> None:
    data = json.loads(shipped_bytes())
    data["version"] = "2099.1.1"
    data["interactions"] = [r for r in data["interactions"] if r["id"] != "ddi-pde5-nitrate"]
    older = KnowledgeBase.from_json(data)
    drafts, chart = [med("d", "Sildenafil 50 mg")], Context([med("m", "Nitroglycerin 0.4 mg")])
    assert [c.rule_id for c in check(drafts, chart)] == ["ddi-pde5-nitrate"]
    assert check(drafts, chart, kb=older) == []


def test_card_json_round_trip_fields() -> None:
    (card,) = check([med("d", "Amoxicillin 500 mg")], Context([allergy("a", "Penicillin")]))
    out = card.to_json()
    assert out["needsOverride"] is True and out["orderRef"] == "MedicationRequest/d"
    assert isinstance(card, Card)
