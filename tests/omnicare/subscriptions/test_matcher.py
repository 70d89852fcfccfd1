"""The in-memory matcher subscriptions use (``ParsedSearch.matches`` over ``index_rows`` of a version's body) gives
the same answer as the search index for every parameter shape, and a SubscriptionTopic's ``queryCriteria``
(``previous`` / ``current`` / ``resultForCreate`` / ``resultForDelete`` / ``requireBoth``) is evaluated as the
R4B definition says; what the server cannot evaluate is refused, never ignored."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from typing import Any

import pytest

from omnicare.core.errors import BadRequest
from omnicare.fhir.models import Resource
from omnicare.fhir.search import build_query, index_rows
from omnicare.fhir.services import resources_import
from omnicare.subscriptions import topics
from tests.shared_data import SYNTHEA

TYPES = ("Patient", "Encounter", "Condition", "MedicationRequest", "Procedure", "Immunization")


def _queries(rtype: str, sample: list[Resource]) -> list[list[tuple[str, str]]]:
    """Searches built from the sample's own index values (so most of them hit something), in every shape the
    index supports: token code / system|code / system| / |code / :not, string prefix / :exact / :contains,
    dates with each prefix, references by id and by type/id, _id, _lastUpdated, ORed values, ANDed params."""
    out: list[list[tuple[str, str]]] = [[("_id", sample[0].resource_id)],
                                        [("_id", f"{sample[0].resource_id},{sample[-1].resource_id}")],
                                        [("_lastUpdated", "gt2000-01-01")], [("_lastUpdated", "lt2000")],
                                        [("_lastUpdated", "ne2000,ge2999")]]
    for row in sample[:4]:
        ix = index_rows(rtype, row.body)
        for param, system, code in ix.tokens[:6]:
            out += [[(param, code)], [(param, f"{system}|{code}")], [(param + ":not", code)], [(param, f"{system}|")],
                    [(param, f"|{code}")], [(param, f"{code},nope")]]
        for param, value in ix.strings[:4]:
            out += [[(param, value[:3])], [(param + ":exact", value)], [(param + ":contains", value[1:4])],
                    [(param + ":exact", value[:3])]]
        for param, start, end in ix.dates[:2]:
            # the days around both ends: date-only values (birthDate) sit exactly on a boundary
            days = {start.date() - timedelta(days=1), start.date(), (end - timedelta(microseconds=1)).date(),
                    end.date()} if end.year < 9999 else {start.date()}
            out += [[(param, p + d.isoformat())] for d in sorted(days) for p in ("", "eq", "ne", "gt", "ge", "lt", "le")]
            out += [[(param, f"ge{start.year}")], [(param, f"lt{start.year}-06")]]
        for param, target_type, target_id in ix.refs[:3]:
            out += [[(param, f"{target_type}/{target_id}")], [(param, target_id)], [(param, "Group/" + target_id)]]
        if ix.tokens and ix.refs:  # ANDed parameters
            (tp, _, tc), (rp, rt, ri) = ix.tokens[0], ix.refs[0]
            out += [[(tp, tc), (rp, f"{rt}/{ri}")], [(tp + ":not", tc), (rp, f"{rt}/{ri}")]]
    return out


@pytest.mark.django_db
def test_in_memory_matcher_agrees_with_the_index_on_synthea() -> None:
    if not SYNTHEA.is_dir():
        pytest.skip(f"the Synthea sample is not on this machine ({SYNTHEA})")
    resources: list[dict[str, Any]] = []
    for rtype in TYPES:
        with (SYNTHEA / f"{rtype}.000.ndjson").open() as f:
            resources += [json.loads(line) for line in itertools.islice(f, 40)]
    resources_import(resources=resources)
    checked = hits = 0
    for rtype in TYPES:
        rows = list(Resource.objects.filter(resource_type=rtype, deleted=False).order_by("resource_id"))
        assert rows, rtype
        index = {r.resource_id: index_rows(rtype, r.body) for r in rows}
        for params in _queries(rtype, rows):
            parsed = build_query(rtype, params)
            in_db = set(parsed.queryset.values_list("resource_id", flat=True))
            in_memory = {r.resource_id for r in rows if parsed.matches(r.resource_id, r.last_updated, index[r.resource_id])}
            assert in_memory == in_db, (rtype, params)
            checked += 1
            hits += 0 < len(in_db) < len(rows)
    assert checked > 500 and hits > 200  # the comparison discriminated: most searches matched some, not all




def _trigger(**query: Any) -> topics.Trigger:
    return topics.topic_trigger({"resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Encounter",
                                                      "supportedInteraction": ["create", "update", "delete"],
                                                      "queryCriteria": query}]})


def _seen(status: str) -> tuple[str, Any, Any]:
    from datetime import UTC, datetime

    return "e", datetime(2026, 1, 1, tzinfo=UTC), index_rows("Encounter", {"resourceType": "Encounter", "status": status})


def test_query_criteria_previous_current_create_delete_require_both() -> None:
    planned, arrived = _seen("planned"), _seen("in-progress")
    prev, cur = "Encounter?status=planned", "Encounter?status=in-progress"
    both = _trigger(previous=prev, current=cur, requireBoth=True, resultForCreate="test-fails",
                    resultForDelete="test-fails")
    assert both.fires("update", planned, arrived)  # the transition
    assert not both.fires("update", planned, planned) and not both.fires("update", arrived, arrived)
    assert not both.fires("update", arrived, planned)
    assert not both.fires("create", None, arrived)  # resultForCreate test-fails stands in for previous
    assert not both.fires("delete", planned, None)  # resultForDelete test-fails stands in for current
    on_create = _trigger(previous=prev, current=cur, requireBoth=True, resultForCreate="test-passes")
    assert on_create.fires("create", None, arrived) and not on_create.fires("create", None, planned)
    on_delete = _trigger(previous=prev, current=cur, requireBoth=True, resultForDelete="test-passes")
    assert on_delete.fires("delete", planned, None) and not on_delete.fires("delete", arrived, None)
    either = _trigger(previous=prev, current=cur, requireBoth=False, resultForCreate="test-fails",
                      resultForDelete="test-fails")
    assert either.fires("update", planned, planned) and either.fires("update", arrived, arrived)
    assert either.fires("update", planned, arrived) and not either.fires("update", arrived, planned)
    assert either.fires("create", None, arrived) and not either.fires("create", None, planned)
    assert either.fires("delete", planned, None) and not either.fires("delete", arrived, None)
    # A criterion that is absent takes no part: current only (requireBoth false) is "current holds".
    current_only = _trigger(current=cur, requireBoth=False, resultForCreate="test-passes")
    assert current_only.fires("update", planned, arrived) and not current_only.fires("update", arrived, planned)
    assert not current_only.fires("delete", arrived, None)
    previous_only = _trigger(previous=cur)
    assert previous_only.fires("update", arrived, planned) and previous_only.fires("delete", arrived, None)
    assert not previous_only.fires("create", None, arrived)  # resultForCreate absent: test-fails
    assert _trigger().fires("update", planned, planned)  # no queryCriteria: every change of the type


def test_every_catalogue_topic_is_evaluable_and_transition_topics_are_offered() -> None:
    for url, topic in topics.catalogue().items():
        trig = topics.topic_trigger(topic)
        assert trig.resource_type == topics.topic_type(topic), url
    arrived = topics.topic_by_id("encounter-arrived")
    assert arrived is not None
    q = arrived["resourceTrigger"][0]["queryCriteria"]
    assert q["previous"] == "Encounter?status=planned" and q["requireBoth"] is True


@pytest.mark.parametrize(("trigger", "words"), [
    ({"queryCriteria": {"previous": "Observation?status=final"}}, "previous must be a search on Encounter"),
    ({"queryCriteria": {"previous": "Encounter?colour=blue"}}, "colour"),
    ({"queryCriteria": {"current": "Encounter?status=x", "resultForCreate": "maybe"}}, "resultForCreate"),
    ({"queryCriteria": {"previous": "Encounter?status=x", "requireBoth": "yes"}}, "requireBoth"),
    ({"queryCriteria": {"previous": "Encounter?date=notadate"}}, "date"),
    ({"fhirPathCriteria": [{"previous": "%previous.status = 'planned'"}]}, "fhirPathCriteria"),
    ({"supportedInteraction": ["create", "read"]}, "supportedInteraction"),
])
def test_topics_the_server_cannot_evaluate_are_refused(trigger: dict[str, Any], words: str) -> None:
    topic = {"resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Encounter",
                                  "supportedInteraction": ["update"], **trigger}]}
    with pytest.raises(BadRequest) as err:
        topics.topic_trigger(topic)
    assert words in str(err.value)
