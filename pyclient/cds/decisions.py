"""What happens after ``check``: the order-time review a clinician sees, the override rule, and the FHIR
records of the decision (a DetectedIssue per card, and the order annotated with what was acknowledged).

Pure functions: the PWA (Pyodide) and the server both use them, so "acknowledged" means the same thing on
both sides. The server re-check reads :func:`order_acknowledgements` from a pushed MedicationRequest and
raises its own DetectedIssue for a critical card the device did not acknowledge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cards import Card
from .kb import KnowledgeBase

EXT_CHECK = "https://omnicare.example/fhir/StructureDefinition/cds-check"
CARD_SYSTEM = "urn:omnicare:cds-card"
DECISION_SYSTEM = "https://omnicare.example/fhir/CodeSystem/cds-decision"
KIND_SYSTEM = "https://omnicare.example/fhir/CodeSystem/cds-kind"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

DECISIONS = ("accepted", "overridden", "cancelled")
DECISION_TEXT = {
    "accepted": "Order placed; the alert was read and accepted",
    "overridden": "Order placed despite the alert",
    "cancelled": "Order cancelled because of the alert",
    "unacknowledged": "Critical alert not acknowledged at order time (found by the server re-check)",
}
SEVERITY_OF = {"critical": "high", "warning": "moderate", "info": "low"}
LABEL_OF = {"critical": "Critical", "warning": "Warning", "info": "Information"}
# HL7 v3 ActCode detected-issue codes where one fits; lab and unchecked use OmniCare's own system.
ACT_OF = {"drug-drug": ("DRG", "Drug Interaction Alert"), "drug-allergy": ("ALGY", "Allergy Alert"),
          "duplicate": ("DUPTHPY", "Duplicate Therapy Alert")}


class DecisionError(ValueError):
    """The decision is not allowed (e.g. a critical card overridden without a reason)."""


_MD = re.compile(r"\*\*(.+?)\*\*")


def plain(text: str) -> str:
    """Markdown of a card detail -> plain sentences for the screen."""
    return _MD.sub(r"\1", text).replace("\n\n", " ").strip()


def card_view(card: Card) -> dict[str, Any]:
    """One card as the order screen shows it: severity, reason, what to do, and how to go on."""
    parts = {}
    for para in card.detail.split("\n\n"):
        m = re.match(r"\*\*(Mechanism|Effect|What to do|Instead):\*\* (.*)", para, re.S)
        if m:
            parts[m.group(1)] = m.group(2).strip()
    reason = " ".join(p for p in (parts.get("Effect"), parts.get("Mechanism")) if p) or plain(
        card.detail.split("\n\n")[0])
    advice = parts.get("What to do", "")
    if parts.get("Instead"):
        advice = (advice + " Instead: " + parts["Instead"]).strip()
    return {
        "uuid": card.uuid, "indicator": card.indicator, "severityLabel": LABEL_OF.get(card.indicator, "Information"),
        "kind": card.kind, "summary": card.summary, "reason": reason, "advice": advice,
        "needsOverride": card.needs_override,
        "overrideReasons": [{"code": r["code"], "display": r["display"]} for r in card.override_reasons],
        "sources": [s.label for s in card.sources],
    }


def order_review(cards: Sequence[Card]) -> dict[str, Any]:
    """The whole review: cards to show and whether saving needs an override reason."""
    views = [card_view(c) for c in cards]
    reasons: dict[str, str] = {}
    for c in cards:
        for r in c.override_reasons:
            reasons.setdefault(r["code"], r["display"])
    return {"cards": views, "needsOverride": any(c.needs_override for c in cards), "hasCards": bool(cards),
            "overrideReasons": [{"code": k, "display": v} for k, v in reasons.items()]}


@dataclass(frozen=True)
class Decision:
    decision: str  # accepted | overridden | cancelled
    reason: Mapping[str, str] | None  # the chosen override reason (a Coding)


def decide(cards: Sequence[Card], *, decision: str, reason_code: str | None = None) -> Decision:
    """Validate the clinician's answer to ``cards``.

    Cancelling is always allowed. Saving with a critical card requires an override reason from that card's
    ``overrideReasons`` (decision ``overridden``); saving with only warning/info cards is ``accepted``
    (a reason may still be given and is then recorded).
    """
    if decision not in DECISIONS:
        raise DecisionError(f"unknown decision {decision!r}")
    if decision == "cancelled":
        return Decision("cancelled", None)
    reasons = {r["code"]: r for c in cards for r in c.override_reasons}
    chosen = reasons.get(reason_code) if reason_code else None
    if reason_code and chosen is None:
        raise DecisionError("Choose one of the listed override reasons.")
    if any(c.needs_override for c in cards):
        if chosen is None:
            raise DecisionError("A critical alert needs an override reason, or cancel the order.")
        return Decision("overridden", dict(chosen))
    return Decision("overridden" if chosen else "accepted", dict(chosen) if chosen else None)


def detected_issue_id(card_uuid: str) -> str:
    """Deterministic id: the device and the server name the same finding the same way."""
    return f"cds-{card_uuid}"


def detected_issue(card: Card, *, decision: str, reason: Mapping[str, str] | None, patient_id: str,
                   kb: KnowledgeBase, when: str, author: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The FHIR R4 DetectedIssue recording ``card`` and what was decided about it."""
    if decision not in (*DECISIONS, "unacknowledged"):
        raise DecisionError(f"unknown decision {decision!r}")
    act = ACT_OF.get(card.kind)
    coding = [{"system": ACT_CODE, "code": act[0], "display": act[1]}] if act else []
    coding.append({"system": KIND_SYSTEM, "code": card.kind})
    action_coding = [{"system": DECISION_SYSTEM, "code": decision, "display": DECISION_TEXT[decision]}]
    if reason:
        action_coding.append({k: str(reason[k]) for k in ("system", "code", "display") if k in reason})
    mitigation: dict[str, Any] = {
        "action": {"coding": action_coding,
                   "text": DECISION_TEXT[decision] + (f": {reason['display']}" if reason else "")},
        "date": when,
    }
    if author:
        mitigation["author"] = dict(author)
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue", "id": detected_issue_id(card.uuid),
        "status": "preliminary" if decision == "unacknowledged" else "final",
        "code": {"coding": coding, "text": card.summary},
        "severity": SEVERITY_OF.get(card.indicator, "low"),
        "patient": {"reference": f"Patient/{patient_id}"},
        "identifiedDateTime": when,
        "identifier": [{"system": CARD_SYSTEM, "value": card.uuid}],
        "implicated": [{"reference": card.order_ref}, *({"reference": r} for r in card.implicated)],
        "detail": plain(card.detail)[:4000],
        "mitigation": [mitigation],
        "extension": [{"url": EXT_CHECK, "extension": [
            {"url": "kbVersion", "valueString": kb.version}, {"url": "rule", "valueString": card.rule_id},
            {"url": "indicator", "valueString": card.indicator}]}],
    }
    if author:
        issue["author"] = dict(author)
    if card.sources and card.sources[0].url:
        issue["reference"] = card.sources[0].url
    return issue


def annotate_order(order: Mapping[str, Any], *, kb: KnowledgeBase, acknowledged: Iterable[Card]) -> dict[str, Any]:
    """A copy of ``order`` that says which knowledge base checked it and which cards were acknowledged, with
    ``detectedIssue`` links to the DetectedIssues recording them."""
    cards = list(acknowledged)
    out = {k: v for k, v in order.items()}
    ext = [e for e in out.get("extension") or () if not (isinstance(e, Mapping) and e.get("url") == EXT_CHECK)]
    sub: list[dict[str, Any]] = [{"url": "kbVersion", "valueString": kb.version},
                                 {"url": "kbDigest", "valueString": kb.digest}]
    sub += [{"url": "acknowledged", "valueString": c.uuid} for c in cards]
    ext.append({"url": EXT_CHECK, "extension": sub})
    out["extension"] = ext
    links = [d for d in out.get("detectedIssue") or () if isinstance(d, Mapping)]
    known = {d.get("reference") for d in links}
    for c in cards:
        ref = f"DetectedIssue/{detected_issue_id(c.uuid)}"
        if ref not in known:
            links.append({"reference": ref})
    if links:
        out["detectedIssue"] = links
    return out


def order_acknowledgements(order: Mapping[str, Any]) -> tuple[str | None, frozenset[str]]:
    """(knowledge base version the device used, uuids of the cards it acknowledged) from an order."""
    version: str | None = None
    acked: set[str] = set()
    for e in order.get("extension") or ():
        if not isinstance(e, Mapping) or e.get("url") != EXT_CHECK:
            continue
        for s in e.get("extension") or ():
            if not isinstance(s, Mapping) or not isinstance(s.get("valueString"), str):
                continue
            if s.get("url") == "kbVersion":
                version = s["valueString"]
            elif s.get("url") == "acknowledged":
                acked.add(s["valueString"])
    return version, frozenset(acked)
