"""Conflict paths (pyclient.conflict_paths): every path the merge emits parses, prints back the same, and
addresses exactly the value the merge put in the conflict, so a person's per-field choice lands there and
nowhere wider."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.conflict_choices import resolved_resource as _resolved
from pyclient.conflict_paths import Segment, format_path, get_path, parse, set_path
from pyclient.merge import merge
from pyclient.sync import ConflictView


def resolved_resource(view: ConflictView, choices: Any) -> Any:
    return _resolved(view, choices, today="2026-12-01")  # the device's date (issue 18: an edited date is checked)

# Values that would break a naive reader of the grammar: separators, brackets, dots, pipes.
TRICKY = st.text(alphabet="ab,=|.][x ", min_size=1, max_size=5)
SMALL = st.sampled_from(["a", "b"])


def _unique(items: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
    seen, out = set(), []
    for it in items:
        k = key(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out


def _value() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.builds(lambda v: {"valueQuantity": {"value": v, "unit": "mm[Hg]"}}, st.integers(0, 3)),
                     st.builds(lambda s: {"valueString": s}, TRICKY))


COMPONENT = st.builds(lambda c, v: {"code": {"coding": [{"system": "http://loinc.org", "code": c}]}, **v},
                      st.sampled_from(["8480-6", "8462-4"]), _value())
NOTE = st.builds(lambda t, a, x: {"time": t, "authorString": a, "text": x},
                 st.sampled_from(["2024-01-02T10:00:00.5Z", "2024-01-03"]), st.sampled_from(["Dr A, B", "x]y"]), TRICKY)
OBSERVATION = st.builds(
    lambda comps, notes, v, status: {"resourceType": "Observation", "id": "o1", "status": status,
                                     "component": _unique(comps, lambda c: c["code"]["coding"][0]["code"]),
                                     "note": _unique(notes, lambda n: (n["time"], n["authorString"])), **v},
    st.lists(COMPONENT, max_size=2), st.lists(NOTE, max_size=2), _value(), st.sampled_from(["final", "amended"]))
NAME = st.builds(lambda u, f, g: {"use": u, "family": f, "given": [g]},
                 st.sampled_from(["official", "usual"]), TRICKY, SMALL)
TELECOM = st.builds(lambda s, v, r: {"system": s, "value": v, "rank": r},
                    st.sampled_from(["phone", "email"]), st.sampled_from(["1.2", "a|b"]), st.integers(1, 2))
EXTENSION = st.builds(lambda u, v: {"url": u, "valueString": v},
                      st.sampled_from(["http://x.org/a", "http://x.org/b"]), SMALL)
PATIENT = st.builds(
    lambda names, tel, ext, g: {"resourceType": "Patient", "id": "p1", "gender": g,
                                "name": _unique(names, lambda n: n["use"]),
                                "telecom": _unique(tel, lambda t: (t["system"], t["value"])), "extension": ext},
    st.lists(NAME, max_size=2), st.lists(TELECOM, max_size=2), st.lists(EXTENSION, max_size=2),
    st.sampled_from(["female", "male"]))


def _check_all_paths(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> int:
    result = merge(base, ours, theirs)
    for c in result.conflicts:
        segs = parse(c.path)
        assert segs is not None and format_path(segs) == c.path, c.path
        assert get_path(copy.deepcopy(ours), c.path) == c.ours, c.path
        assert get_path(copy.deepcopy(theirs), c.path) == c.theirs, c.path
        chosen = copy.deepcopy(result.merged)
        assert set_path(chosen, c.path, copy.deepcopy(c.theirs)), c.path
        assert get_path(chosen, c.path) == c.theirs, c.path
    return len(result.conflicts)


@settings(max_examples=300)
@given(OBSERVATION, OBSERVATION, OBSERVATION)
def test_every_observation_conflict_path_round_trips_and_addresses_its_value(b: Any, o: Any, t: Any) -> None:
    _check_all_paths(b, o, t)


@settings(max_examples=300)
@given(PATIENT, PATIENT, PATIENT)
def test_every_patient_conflict_path_round_trips_and_addresses_its_value(b: Any, o: Any, t: Any) -> None:
    _check_all_paths(b, o, t)


def _obs(sbp: Any, note_text: str = "n", dbp: int = 80) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, **sbp},
                          {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                           "valueQuantity": {"value": dbp}}],
            "note": [{"time": "2024-01-02", "authorString": "Dr A, B", "text": note_text}]}


def test_a_choice_on_a_coded_list_item_changes_that_item_only() -> None:
    base = _obs({"valueQuantity": {"value": 120}})
    view = ConflictView(entry_id="e", resource_type="Observation", id="o1", base=base,
                        server=_obs({"valueQuantity": {"value": 130}}, "server note", dbp=85),
                        server_version=2, local=_obs({"valueQuantity": {"value": 125}}, "my note"),
                        conflicts=(), conflict_id=None)
    conflicts = merge(view.base, view.server, view.local).conflicts
    paths = {c.path for c in conflicts}
    assert "component[code=http://loinc.org|8480-6].valueQuantity" in paths
    assert "note[time=2024-01-02,author=Dr A, B].text" in paths
    view = ConflictView(**{**view.__dict__, "conflicts": tuple(c.to_json() for c in conflicts)})
    out = resolved_resource(view, {"component[code=http://loinc.org|8480-6].valueQuantity": {"pick": "mine"},
                                   "note[time=2024-01-02,author=Dr A, B].text": {"pick": "theirs"}})
    assert out["component"][0]["valueQuantity"] == {"value": 125}  # my systolic
    assert out["component"][1]["valueQuantity"] == {"value": 85}  # the server's diastolic, merged cleanly, kept
    assert out["note"][0]["text"] == "server note"


def test_a_choice_between_value_types_replaces_the_whole_choice_group() -> None:
    base = {"resourceType": "Observation", "id": "o1", "status": "final", "valueQuantity": {"value": 1}}
    ours = {**base, "valueQuantity": {"value": 2}}
    theirs = {"resourceType": "Observation", "id": "o1", "status": "final", "valueString": "two"}
    (c,) = merge(base, ours, theirs).conflicts
    assert c.path == "value[x]" and parse(c.path) == [Segment("value[x]")]
    view = ConflictView(entry_id="e", resource_type="Observation", id="o1", base=base, server=ours,
                        server_version=2, local=theirs, conflicts=(c.to_json(),), conflict_id=None)
    out = resolved_resource(view, {"value[x]": {"pick": "mine"}})
    assert out["valueString"] == "two" and "valueQuantity" not in out


def test_paths_that_are_not_of_the_grammar_are_refused() -> None:
    for bad in ("", ".a", "a..b", "a[b", "a[b]c"):
        assert parse(bad) is None, bad
    assert not set_path({"a": 1}, "a[b]", 2)  # a label on something that is not a list
