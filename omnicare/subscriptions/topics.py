"""The SubscriptionTopics this server offers (R4 Subscriptions Backport IG, topic-based subscriptions).

An R4 store has no ``SubscriptionTopic`` resource type (it is R4B/R5), so, as the backport IG allows for R4
servers, the topics are the server's own catalogue: advertised in the CapabilityStatement
(``capabilitystatement-subscriptiontopic-canonical`` on ``Subscription``) and readable, in their R4B shape, at
``GET /fhir/R4/SubscriptionTopic[/id]``. A ``Subscription`` names one by its canonical URL in ``criteria``
and narrows it with ``_criteria`` ``backport-filter-criteria`` extensions (``Type?param=value``), each
parameter one of the topic's ``canFilterBy`` (the type's R4 search parameters).

Why a catalogue and not stored topics: the topics are what the server can evaluate (its search parameters), and
a subscriber can only filter by what the index extraction yields; a catalogue derived from the R4 definitions covers every
stored type without anyone writing a topic, and cannot disagree with the matcher.

Catalogue: one ``<Type>-change`` topic per stored type (create, update, delete), plus clinical topics with
``queryCriteria``. ``current`` is evaluated on the version that triggered, ``previous`` on the version before
it (both in memory, with the same R4 search-parameter extraction and the same search semantics as the index:
``ParsedSearch.matches``), so a transition fires exactly once, on the version that crosses it:

* ``encounter-start``: an Encounter now in progress (every such version); ``lab-result-final``: a final
  laboratory Observation (every such version).
* ``encounter-arrived``: planned → in-progress (a create never fires: ``resultForCreate`` test-fails).
* ``encounter-end``: in-progress → anything else, or deleted (``resultForDelete`` test-passes).
* ``lab-result-finalised``: a laboratory Observation becomes final (a create that is already final fires:
  ``resultForCreate`` test-passes; a delete never: ``resultForDelete`` test-fails).
* ``lab-result-released``: a released (final, amended, corrected) laboratory result is issued, changed or
  withdrawn (``requireBoth`` false: the state before OR the state after is released).

Evaluation (R4B ``SubscriptionTopic.resourceTrigger.queryCriteria``): on a create (no previous version, or a
tombstone) ``previous`` counts as ``resultForCreate``; on a delete ``current`` counts as ``resultForDelete``
(either absent: test-fails); ``requireBoth`` true: every criterion given must hold, false or absent: one of
them. A criterion that is absent takes no part (a topic with ``current`` only fires when ``current`` holds).
What the server cannot evaluate (``fhirPathCriteria``, ``eventTrigger``, more than one ``resourceTrigger``,
criteria on another type or with parameters the type does not define) is refused by :func:`topic_trigger`
with a 400 ``not-supported`` naming the element, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from omnicare.core.errors import BadRequest
from omnicare.fhir.search import SEARCH_PARAMS, SUPPORTED_TYPES, ParsedSearch, build_query

TOPIC_BASE = "urn:omnicare:SubscriptionTopic:"
_LAB_RELEASED = "Observation?category=laboratory&status=final,amended,corrected"
CLINICAL: dict[str, tuple[str, list[str], str, dict[str, Any]]] = {
    # id: (resource type, interactions, title, queryCriteria)
    "encounter-start": ("Encounter", ["create", "update"], "A visit starts",
                        {"current": "Encounter?status=in-progress", "resultForCreate": "test-passes",
                         "resultForDelete": "test-fails", "requireBoth": False}),
    "lab-result-final": ("Observation", ["create", "update"], "A laboratory result is final",
                         {"current": "Observation?category=laboratory&status=final", "resultForCreate": "test-passes",
                          "resultForDelete": "test-fails", "requireBoth": False}),
    "encounter-arrived": ("Encounter", ["create", "update"], "A planned visit starts (planned to in-progress)",
                          {"previous": "Encounter?status=planned", "resultForCreate": "test-fails",
                           "current": "Encounter?status=in-progress", "resultForDelete": "test-fails",
                           "requireBoth": True}),
    "encounter-end": ("Encounter", ["update", "delete"], "A visit in progress ends (or is deleted)",
                      {"previous": "Encounter?status=in-progress", "resultForCreate": "test-fails",
                       "current": "Encounter?status:not=in-progress", "resultForDelete": "test-passes",
                       "requireBoth": True}),
    "lab-result-finalised": ("Observation", ["create", "update", "delete"], "A laboratory result becomes final",
                             {"previous": "Observation?status:not=final", "resultForCreate": "test-passes",
                              "current": "Observation?category=laboratory&status=final",
                              "resultForDelete": "test-fails", "requireBoth": True}),
    "lab-result-released": ("Observation", ["create", "update", "delete"],
                            "A released laboratory result is issued, changed or withdrawn",
                            {"previous": _LAB_RELEASED, "resultForCreate": "test-fails", "current": _LAB_RELEASED,
                             "resultForDelete": "test-fails", "requireBoth": False}),
}
INTERACTIONS = frozenset({"create", "update", "delete"})
RESULTS = {"test-passes": True, "test-fails": False}


def topic_url(topic_id: str) -> str:
    return TOPIC_BASE + topic_id


def _topic(topic_id: str, rtype: str, interactions: list[str], title: str,
           query: dict[str, Any] | None) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "description": title,
        "resource": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "supportedInteraction": interactions,
    }
    if query:
        trigger["queryCriteria"] = dict(query)
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
    for tid, (rtype, interactions, title, query) in CLINICAL.items():
        t = _topic(tid, rtype, interactions, title, query)
        out[t["url"]] = t
    return out


def capability_extensions() -> list[dict[str, Any]]:
    """The backport's topic list on the Subscription entry of the CapabilityStatement (registered with the FHIR
    store's ``hooks.capability_extensions_register`` in ``SubscriptionsConfig.ready``)."""
    return [
        {"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                "capabilitystatement-subscriptiontopic-canonical", "valueCanonical": url}
        for url in catalogue()
    ]


def topic_by_id(topic_id: str) -> dict[str, Any] | None:
    return catalogue().get(topic_url(topic_id))


def topic_type(topic: dict[str, Any]) -> str:
    return str(topic["resourceTrigger"][0]["resource"]).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Trigger:
    """A topic's ``resourceTrigger`` as the matcher evaluates it."""

    resource_type: str
    interactions: frozenset[str]
    previous: ParsedSearch | None  # queryCriteria.previous, on the version before (None: takes no part)
    current: ParsedSearch | None  # queryCriteria.current, on the version that triggered
    result_for_create: bool  # what ``previous`` counts as on a create
    result_for_delete: bool  # what ``current`` counts as on a delete
    require_both: bool

    def fires(self, interaction: str, before: Any, after: Any) -> bool:
        """Whether a change triggers; ``before`` / ``after`` are ``(resource_id, last_updated, IndexRows)`` of the
        version before and of this version (None where there is none: a create, a delete)."""
        results: list[bool] = []
        if self.previous is not None:
            results.append(self.result_for_create if interaction == "create" or before is None
                           else self.previous.matches(*before))
        if self.current is not None:
            results.append(self.result_for_delete if interaction == "delete" or after is None
                           else self.current.matches(*after))
        if not results:
            return True
        return all(results) if self.require_both else any(results)


def _refuse(message: str, element: str) -> BadRequest:
    return BadRequest(message, code="not-supported", expression=[f"SubscriptionTopic.{element}"])


def _criterion(rtype: str, raw: Any, element: str) -> ParsedSearch | None:
    if raw in (None, ""):
        return None
    qtype, sep, query = str(raw).partition("?")
    if qtype != rtype or not sep:
        raise _refuse(f"{element} must be a search on {rtype}, the trigger's resource (e.g. {rtype}?status=x)",
                      f"resourceTrigger.queryCriteria.{element}")
    parsed = build_query(rtype, parse_qsl(query, keep_blank_values=False))
    if parsed.unknown:
        raise _refuse(f"{element} uses parameter(s) {rtype} does not define: " + ", ".join(
            u[:40] for u in parsed.unknown[:10]), f"resourceTrigger.queryCriteria.{element}")
    return parsed


def _result(query: dict[str, Any], element: str) -> bool:
    raw = query.get(element)
    if raw is None:
        return False
    if raw not in RESULTS:
        raise _refuse(f"{element} must be test-passes or test-fails", f"resourceTrigger.queryCriteria.{element}")
    return RESULTS[raw]


def topic_trigger(topic: dict[str, Any]) -> Trigger:
    """The topic's one ``resourceTrigger``, checked: a 400 ``not-supported`` naming the element for anything
    this server cannot evaluate (so a topic is never half-honoured)."""
    if topic.get("eventTrigger"):
        raise _refuse("eventTrigger topics are not supported (resource triggers only)", "eventTrigger")
    triggers = topic.get("resourceTrigger") or []
    if len(triggers) != 1:
        raise _refuse("A topic must have exactly one resourceTrigger here", "resourceTrigger")
    trig = triggers[0]
    rtype = str(trig.get("resource") or "").rsplit("/", 1)[-1]
    if rtype not in SUPPORTED_TYPES:
        raise _refuse("resourceTrigger.resource must be a stored R4 resource type", "resourceTrigger.resource")
    interactions = frozenset(trig.get("supportedInteraction") or INTERACTIONS)
    if not interactions <= INTERACTIONS:
        raise _refuse("supportedInteraction must be create, update or delete", "resourceTrigger.supportedInteraction")
    if trig.get("fhirPathCriteria"):
        raise _refuse("fhirPathCriteria is not supported (queryCriteria only)", "resourceTrigger.fhirPathCriteria")
    query = trig.get("queryCriteria") or {}
    both = query.get("requireBoth", False)
    if not isinstance(both, bool):
        raise _refuse("requireBoth must be a boolean", "resourceTrigger.queryCriteria.requireBoth")
    return Trigger(rtype, interactions, _criterion(rtype, query.get("previous"), "previous"),
                   _criterion(rtype, query.get("current"), "current"), _result(query, "resultForCreate"),
                   _result(query, "resultForDelete"), both)
