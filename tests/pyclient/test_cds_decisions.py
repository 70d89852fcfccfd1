"""After the check: the order review, the override rule, DetectedIssue records and bundle acceptance (pure)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from pyclient.cds import Context, check, default_kb
from pyclient.cds.bundles import STATEMENT_FORMAT, BundleError, accept
from pyclient.cds.decisions import (
    DecisionError,
    annotate_order,
    decide,
    detected_issue,
    order_acknowledgements,
    order_review,
)
from tests.pyclient.test_cds import allergy, med


def amox_cards() -> list:
    return check([med("d", "Amoxicillin 500 mg")], Context([allergy("a", "Penicillin", criticality="high")]))


def test_review_shows_severity_reason_and_advice() -> None:
    review = order_review(amox_cards())
    assert review["needsOverride"] is True
    (view,) = review["cards"]
    assert view["severityLabel"] == "Critical" and "Penicillin" in view["summary"]
    assert "**" not in view["reason"] and view["reason"]
    assert {r["code"] for r in review["overrideReasons"]} >= {"allergy-history-inaccurate", "emergency"}
    ddi = order_review(check([med("d", "Ibuprofen 400 mg")], Context([med("m", "Warfarin 5 mg")])))
    assert ddi["needsOverride"] is False
    assert "bleeding" in ddi["cards"][0]["reason"].lower() and "Acetaminophen" in ddi["cards"][0]["advice"]


def test_a_critical_card_needs_a_listed_reason_or_cancel() -> None:
    cards = amox_cards()
    with pytest.raises(DecisionError, match="override reason"):
        decide(cards, decision="accepted")
    with pytest.raises(DecisionError, match="listed"):
        decide(cards, decision="overridden", reason_code="because")
    assert decide(cards, decision="cancelled").decision == "cancelled"
    d = decide(cards, decision="overridden", reason_code="allergy-history-inaccurate")
    assert d.decision == "overridden" and d.reason and d.reason["display"] == "Allergy record is inaccurate"
    warn = check([med("d", "Ibuprofen 400 mg")], Context([med("m", "Warfarin 5 mg")]))
    assert decide(warn, decision="accepted").decision == "accepted"


def test_detected_issue_records_the_decision_and_links_the_order() -> None:
    kb = default_kb()
    (card,) = amox_cards()
    d = decide([card], decision="overridden", reason_code="tolerated-before")
    issue = detected_issue(card, decision=d.decision, reason=d.reason, patient_id="p1", kb=kb,
                           when="2026-12-01T10:00:00Z", author={"reference": "Practitioner/pr-1"})
    assert issue["resourceType"] == "DetectedIssue" and issue["status"] == "final" and issue["severity"] == "high"
    assert issue["implicated"][0] == {"reference": "MedicationRequest/d"}
    assert issue["identifier"] == [{"system": "urn:omnicare:cds-card", "value": card.uuid}]
    codes = [c["code"] for c in issue["mitigation"][0]["action"]["coding"]]
    assert codes == ["overridden", "tolerated-before"] and issue["mitigation"][0]["author"]
    order = annotate_order(med("d", "Amoxicillin 500 mg"), kb=kb, acknowledged=[card])
    assert order["detectedIssue"] == [{"reference": f"DetectedIssue/{issue['id']}"}]
    assert order_acknowledgements(order) == (kb.version, frozenset({card.uuid}))
    again = annotate_order(order, kb=kb, acknowledged=[card])
    assert len(again["extension"]) == 1 and len(again["detectedIssue"]) == 1
    assert order_acknowledgements(med("x", "y")) == (None, frozenset())


def _bundle(payload: bytes, *, sha: str | None = None, kind: str = "kb") -> dict:
    statement = json.dumps({"format": STATEMENT_FORMAT, "kind": kind, "version": "2026.12.1",
                            "sha256": sha or hashlib.sha256(payload).hexdigest(),
                            "publishedAt": "2026-12-01T09:00:00Z"}).encode()
    return {"kind": kind, "version": "2026.12.1", "algorithm": "Ed25519", "keyId": "audit-signing:v1",
            "publicKey": base64.b64encode(b"k" * 32).decode(), "signature": base64.b64encode(b"s" * 64).decode(),
            "statement": base64.b64encode(statement).decode(), "payload": base64.b64encode(payload).decode()}


def test_bundle_acceptance_rules() -> None:
    ok = accept(_bundle(b'{"a":1}'), signature_ok=True, pinned={"audit-signing:v1": b"k" * 32})
    assert ok.version == "2026.12.1" and ok.data() == {"a": 1}
    with pytest.raises(BundleError):
        accept(_bundle(b'{"a":1}'), signature_ok=False)
    with pytest.raises(BundleError, match="digest"):
        accept(_bundle(b'{"a":1}', sha="0" * 64), signature_ok=True)
    with pytest.raises(BundleError, match="changed"):
        accept(_bundle(b"{}"), signature_ok=True, pinned={"audit-signing:v1": b"x" * 32})
    with pytest.raises(BundleError):
        accept(_bundle(b"{}", kind="recipes"), signature_ok=True)
    with pytest.raises(BundleError):
        accept({"algorithm": "Ed25519", "publicKey": "!!"}, signature_ok=True)
