"""The SubscriptionTopics this server offers (R4 Subscriptions Backport IG, topic-based subscriptions).

An R4 store has no ``SubscriptionTopic`` resource type (it is R4B/R5), so, as the backport IG allows for R4
servers, the topics are the server's own catalogue: advertised in the CapabilityStatement
(``capabilitystatement-subscriptiontopic-canonical`` on ``Subscription``) and readable, in their R4B shape, at
``GET /fhir/R4/SubscriptionTopic[/id]``. A ``Subscription`` names one by its canonical URL in ``criteria``
and narrows it with ``_criteria`` ``backport-filter-criteria`` extensions (``Type?param=value``), each
parameter one of the topic's ``canFilterBy`` (the type's R4 search parameters).

Why a catalogue and not stored topics: the topics are what the server can evaluate (its search index), and a
subscriber can only filter by what the index holds; a catalogue derived from the R4 definitions covers every
stored type without anyone writing a topic, and cannot disagree with the matcher.

Catalogue: one ``<Type>-change`` topic per stored type (create, update, delete), plus clinical topics whose
``queryCriteria.current`` must also hold for the new version (``encounter-start``: an Encounter now
in progress; ``lab-result-final``: a final laboratory Observation). ``queryCriteria.previous`` is not
supported (the index holds current state only) and never offered.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from omnicare.fhir.search import SEARCH_PARAMS, SUPPORTED_TYPES

TOPIC_BASE = "urn:omnicare:SubscriptionTopic:"
CLINICAL: dict[str, tuple[str, str, list[str], str]] = {
    # id: (resource type, current criteria, interactions, title)
    "encounter-start": ("Encounter", "status=in-progress", ["create", "update"], "A visit starts"),
    "lab-result-final": ("Observation", "category=laboratory&status=final", ["create", "update"],
                         "A laboratory result is final"),
}


def topic_url(topic_id: str) -> str:
    return TOPIC_BASE + topic_id


def _topic(topic_id: str, rtype: str, interactions: list[str], title: str, current: str | None) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "description": title,
        "resource": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "supportedInteraction": interactions,
    }
    if current:
        trigger["queryCriteria"] = {"current": f"{rtype}?{current}", "resultForCreate": "test-passes",
                                    "resultForDelete": "test-fails", "requireBoth": False}
    return {
        "resourceType": "SubscriptionTopic",
        "id": topic_id,
        "url": topic_url(topic_id),
        "title": title,
        "status": "active",
        "description": title + " (OmniCare server topic).",
        "resourceTrigger": [trigger],
        "canFilterBy": [
            {"resource": rtype, "filterParameter": name,
             "description": f"{rtype} search parameter {name} (R4 SearchParameter definition)"}
            for name in sorted(SEARCH_PARAMS.get(rtype, {}))
        ],
        "notificationShape": [{"resource": rtype}],
    }


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    """Every topic by canonical URL."""
    out: dict[str, dict[str, Any]] = {}
    for rtype in sorted(SUPPORTED_TYPES):
        t = _topic(f"{rtype}-change", rtype, ["create", "update", "delete"], f"Any change to a {rtype}", None)
        out[t["url"]] = t
    for tid, (rtype, current, interactions, title) in CLINICAL.items():
        t = _topic(tid, rtype, interactions, title, current)
        out[t["url"]] = t
    return out


def topic_by_id(topic_id: str) -> dict[str, Any] | None:
    return catalogue().get(topic_url(topic_id))


def topic_type(topic: dict[str, Any]) -> str:
    return str(topic["resourceTrigger"][0]["resource"]).rsplit("/", 1)[-1]


def topic_interactions(topic: dict[str, Any]) -> frozenset[str]:
    return frozenset(topic["resourceTrigger"][0]["supportedInteraction"])


def topic_current(topic: dict[str, Any]) -> list[tuple[str, str]]:
    """The topic's own ``queryCriteria.current`` as search parameters (empty: every version triggers)."""
    current = (topic["resourceTrigger"][0].get("queryCriteria") or {}).get("current") or ""
    return parse_qsl(current.partition("?")[2], keep_blank_values=False)
