"""Cards: what a check says, shaped so one value renders in the PWA and leaves as a CDS Hooks 2.0 card."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_RANK = {"info": 0, "warning": 1, "critical": 2}


def level_rank(level: str) -> int:
    return _RANK.get(level, 0)


@dataclass(frozen=True)
class Source:
    label: str
    url: str
    citation: str

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.url:
            out["url"] = self.url
        return out


@dataclass(frozen=True)
class Suggestion:
    label: str
    action: str | None  # "delete" (cancel the draft) | None (advice only)
    resource_ref: str | None
    recommended: bool = False


@dataclass(frozen=True)
class Card:
    uuid: str  # deterministic: the same finding gives the same uuid on the device and the server
    kind: str  # drug-drug | drug-allergy | duplicate | lab | unchecked
    indicator: str  # info | warning | critical
    rule_id: str
    order_ref: str  # "MedicationRequest/<id>" of the draft this card is about
    severity: str
    summary: str
    detail: str
    implicated: tuple[str, ...]  # references of the other records involved
    sources: tuple[Source, ...]
    suggestions: tuple[Suggestion, ...]
    override_reasons: tuple[Mapping[str, str], ...]

    @property
    def needs_override(self) -> bool:
        """A critical card stops the order until the clinician cancels it or gives an override reason."""
        return self.indicator == "critical"

    def to_json(self) -> dict[str, Any]:
        """The app's own form (camelCase, everything the UI and the DetectedIssue need)."""
        return {
            "uuid": self.uuid, "kind": self.kind, "indicator": self.indicator, "ruleId": self.rule_id,
            "orderRef": self.order_ref, "severity": self.severity, "summary": self.summary, "detail": self.detail,
            "implicated": list(self.implicated),
            "sources": [{"label": s.label, "url": s.url, "citation": s.citation} for s in self.sources],
            "suggestions": [{"label": s.label, "action": s.action, "resourceRef": s.resource_ref,
                             "recommended": s.recommended} for s in self.suggestions],
            "overrideReasons": [dict(r) for r in self.override_reasons], "needsOverride": self.needs_override,
        }

    def to_cds_hooks(self, *, source_label: str = "OmniCare medication safety", kb_version: str = "") -> dict[str, Any]:
        """A CDS Hooks 2.0 card (``summary`` <= 140 characters, ``indicator``, ``source``, ``suggestions``...)."""
        label = f"{source_label} (knowledge base {kb_version})" if kb_version else source_label
        first = self.sources[0] if self.sources else None
        source: dict[str, Any] = {"label": label, "topic": {
            "system": "https://omnicare.example/fhir/CodeSystem/cds-rule", "code": self.rule_id,
            "display": self.kind}}
        if first is not None and first.url:
            source["url"] = first.url
        detail = self.detail
        if self.sources:
            detail += "\n\n**Sources:** " + "; ".join(s.citation for s in self.sources)
        card: dict[str, Any] = {
            "uuid": self.uuid, "summary": self.summary[:140], "indicator": self.indicator, "detail": detail,
            "source": source,
        }
        suggestions = []
        for i, s in enumerate(self.suggestions):
            item: dict[str, Any] = {"label": s.label, "uuid": f"{self.uuid[:-4]}{i:04d}"}
            if s.recommended:
                item["isRecommended"] = True
            if s.action == "delete" and s.resource_ref:
                item["actions"] = [{"type": "delete", "description": s.label, "resourceId": [s.resource_ref]}]
            suggestions.append(item)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one"
        if self.override_reasons:
            card["overrideReasons"] = [dict(r) for r in self.override_reasons]
        return card
