"""``warm(kb)``: run every kind of rule once on a small built-in chart, so the first real order is not slow.

In Pyodide the first ``check`` of a session costs 10-40 ms, against ~0.2 ms for the next: WebAssembly
functions of the interpreter, the regex engine, ``unicodedata`` and ``hashlib`` are compiled on first
use, and the base's resolution memo is empty. The device calls this when it loads a knowledge base (the
chart opening), not when the clinician presses save. Pure: it only fills ``kb.memo`` (answers for the sample's
own codes), so later results are unchanged.
"""

from __future__ import annotations

from typing import Any

from pyclient.systems import LOINC, SNOMED

from .engine import Context, check
from .kb import RXNORM, KnowledgeBase

_SAMPLE_NOW = "2026-01-02T00:00:00Z"


def _sample() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    subject = {"reference": "Patient/cds-warm-up"}
    drafts = [
        {"resourceType": "MedicationRequest", "id": "warm-d1", "status": "draft", "intent": "proposal",
         "subject": subject, "medicationCodeableConcept": {"coding": [
             {"system": RXNORM, "code": "206905", "display": "Ibuprofen 400 MG Oral Tablet [Ibu]"}]}},
        {"resourceType": "MedicationRequest", "id": "warm-d2", "status": "draft", "intent": "proposal",
         "subject": subject, "medicationCodeableConcept": {"text": "Zorblaxin 10 mg"}},
    ]
    chart: list[dict[str, Any]] = [
        {"resourceType": "MedicationRequest", "id": "warm-m1", "status": "active", "intent": "order",
         "subject": subject, "medicationCodeableConcept": {"text": "Warfarin 5 mg tablet"}},
        {"resourceType": "MedicationStatement", "id": "warm-m2", "status": "active", "subject": subject,
         "medicationCodeableConcept": {"text": "Naproxen 250 mg"}},
        {"resourceType": "MedicationRequest", "id": "warm-m3", "status": "stopped", "intent": "order",
         "subject": subject, "medicationCodeableConcept": {"text": "Lisinopril 10 mg"}},
        {"resourceType": "AllergyIntolerance", "id": "warm-a1", "patient": subject,
         "clinicalStatus": {"coding": [{"code": "active"}]}, "verificationStatus": {"coding": [{"code": "confirmed"}]},
         "category": ["medication"], "criticality": "high",
         "code": {"coding": [{"system": SNOMED, "code": "387458008", "display": "Aspirin"}]},
         "reaction": [{"severity": "severe", "manifestation": [{"text": "Anaphylaxis"}]}]},
        {"resourceType": "AllergyIntolerance", "id": "warm-a2", "patient": subject, "category": ["food"],
         "code": {"text": "Peanut"}},
        {"resourceType": "Observation", "id": "warm-o1", "status": "final", "subject": subject,
         "effectiveDateTime": "2026-01-01T08:00:00+01:00",
         "code": {"coding": [{"system": LOINC, "code": "33914-3"}]},
         "valueQuantity": {"value": 25, "unit": "mL/min/{1.73_m2}", "code": "mL/min/{1.73_m2}"}},
    ]
    return drafts, chart


def warm(kb: KnowledgeBase) -> int:
    """Exercise the engine once against ``kb``; returns how many cards the sample made (for a test)."""
    drafts, chart = _sample()
    cards = check(drafts, Context(chart, now=_SAMPLE_NOW), kb=kb)
    for card in cards:
        card.to_json()
    return len(cards)
