"""Algebraic laws of the three-way merge, checked on random FHIR-like resources.

Small vocabularies on purpose: random edits on both sides then often hit the
same array items (same identity, different content), which is where merges go wrong.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyclient.merge import MergeResult, merge

# moderate: the same tests run inside Pyodide (~3x slower); generation dominates the cost
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

small = st.sampled_from(["a", "b", "c"])
systems = st.sampled_from(["http://s1", "http://s2"])
codes = st.sampled_from(["1", "2", "3"])
times = st.sampled_from(["2026-01-01", "2026-01-02"])

coding = st.fixed_dictionaries({"system": systems, "code": codes}, optional={"display": small})
concept = st.fixed_dictionaries(
    {},
    optional={
        "coding": st.lists(coding, max_size=3, unique_by=lambda c: (c["system"], c["code"])),
        "text": small,
    },
)
status_concept = st.builds(
    lambda c: {"coding": [{"code": c}]},
    st.sampled_from(["confirmed", "entered-in-error", "active", "resolved"]),
)
identifier = st.fixed_dictionaries(
    {"system": systems, "value": codes}, optional={"use": st.sampled_from(["usual", "official"])}
)
telecom = st.fixed_dictionaries(
    {"system": st.sampled_from(["phone", "email"]), "value": codes},
    optional={"use": st.sampled_from(["home", "work"])},
)
human_name = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["official", "usual", "old"]),
        "family": small,
        "given": st.lists(small, max_size=2),
    },
)
note = st.fixed_dictionaries({"text": small}, optional={"time": times, "authorString": small})
extension = st.fixed_dictionaries(
    {"url": st.sampled_from(["http://e1", "http://e2"])},
    optional={"valueString": small, "valueInteger": st.integers(0, 2)},
)
quantity = st.fixed_dictionaries(
    {"value": st.sampled_from([1, 2, 2.5])}, optional={"unit": st.sampled_from(["mg", "g"])}
)
reaction = st.fixed_dictionaries(
    {"manifestation": st.lists(st.builds(lambda c: {"coding": [c]}, coding), min_size=1, max_size=2)},
    optional={"severity": st.sampled_from(["mild", "severe"]), "note": st.lists(note, max_size=2)},
)
leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), small)
unknown = st.recursive(
    leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(small, c, max_size=3), max_leaves=6
)
meta = st.fixed_dictionaries(
    {},
    optional={
        "versionId": st.sampled_from(["1", "2"]),
        "lastUpdated": times,
        "tag": st.lists(coding, max_size=2, unique_by=lambda c: (c["system"], c["code"])),
    },
)


def uniq(element: st.SearchStrategy[Any], key: Any) -> st.SearchStrategy[list[Any]]:
    return st.lists(element, max_size=3, unique_by=key)


def _ident(i: dict[str, Any]) -> tuple[str, str]:
    return (i["system"], i["value"])


def _note_key(n: dict[str, Any]) -> Any:
    return (n.get("time"), n.get("authorString")) if "time" in n else n["text"]


#: top-level field -> strategy for a whole new value
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(["active", "stopped", "on-hold", "entered-in-error"]),
    "meta": meta,
    "text": st.fixed_dictionaries({"status": st.just("generated"), "div": small}),
    "identifier": uniq(identifier, _ident),
    "telecom": uniq(telecom, _ident),
    "name": uniq(human_name, lambda n: n.get("use")),
    "note": uniq(note, _note_key),
    "extension": st.lists(extension, max_size=3),
    "code": concept,
    "category": st.lists(concept, max_size=2),
    "verificationStatus": status_concept,
    "valueQuantity": quantity,
    "valueString": small,
    "dosageInstruction": st.lists(st.fixed_dictionaries({"text": small}), max_size=2),
    "reaction": st.lists(reaction, max_size=2),
    "criticality": st.sampled_from(["low", "high"]),
    "zzUnknown": unknown,
}
#: list field -> strategy for one new item
ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "identifier": identifier,
    "telecom": telecom,
    "name": human_name,
    "note": note,
    "extension": extension,
    "category": concept,
    "coding": coding,
    "tag": coding,
    "reaction": reaction,
    "manifestation": concept,
    "given": small,
    "dosageInstruction": st.fixed_dictionaries({"text": small}),
}

resource = st.builds(
    lambda rt, fields: {"resourceType": rt, **fields},
    st.sampled_from(["Patient", "Observation", "MedicationRequest", "AllergyIntolerance", "Basic"]),
    st.fixed_dictionaries({}, optional=FIELDS),
)


KEEP_DROP_EDIT = st.sampled_from(["keep", "keep", "drop", "edit"])
FIELD_OPS = st.sampled_from(["keep", "keep", "keep", "drop", "replace", "edit", "edit"])
NEW_FIELDS = st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)
LEAF_OR_FIELD = {k: leaf | v for k, v in FIELDS.items()}


def mutate(draw: st.DrawFn, value: Any, name: str) -> Any:
    """A random edit of ``value`` (the element called ``name``), often partial."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            op = draw(KEEP_DROP_EDIT)
            if op == "keep":
                out[k] = v
            elif op == "edit":
                out[k] = mutate(draw, v, k)
        if draw(st.booleans()):
            out[draw(small)] = draw(leaf)
        return out
    if isinstance(value, list):
        items = [
            mutate(draw, v, name) if draw(st.booleans()) else v for v in value if draw(st.integers(0, 3))
        ]
        item = ITEMS.get(name, leaf)
        for _ in range(draw(st.integers(0, 2))):
            items.insert(draw(st.integers(0, len(items))), draw(item))
        if len(items) > 1 and draw(st.integers(0, 4)) == 0:
            items = draw(st.permutations(items))
        return items
    return draw(LEAF_OR_FIELD.get(name, leaf))


@st.composite
def edit_of(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """One side's edit of ``base``: each field kept, dropped, replaced or edited inside; new fields."""
    out: dict[str, Any] = {}
    for k, v in base.items():
        if k == "resourceType":
            out[k] = v
            continue
        op = draw(FIELD_OPS)
        if op == "keep":
            out[k] = v
        elif op == "replace":
            out[k] = draw(FIELDS.get(k, leaf))
        elif op == "edit":
            out[k] = mutate(draw, copy.deepcopy(v), k)
    for k in draw(NEW_FIELDS):
        if k not in base:
            out[k] = draw(FIELDS[k])
    return out


@st.composite
def three_versions(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    base = draw(resource)
    return base, draw(edit_of(base)), draw(edit_of(base))


def frozen(v: Any) -> str:
    """Exact JSON text: also tells True from 1 and 1 from 1.0."""
    return json.dumps(v, sort_keys=True)


def without_asymmetric_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop the two documented ours-wins fields: narrative and server meta."""
    out = copy.deepcopy(resource)
    out.pop("text", None)
    meta = out.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
    return out


def assert_clean_equal(result: MergeResult, expected: dict[str, Any]) -> None:
    assert result.clean, result.conflicts
    assert frozen(result.merged) == frozen(expected)


@SETTINGS
@given(three_versions())
def test_one_sided_and_identical_edits_merge_to_that_edit(
    versions: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, x, y = versions
    assert_clean_equal(merge(base, x, base), x)  # only ours changed
    assert_clean_equal(merge(base, base, y), y)  # only theirs changed
    assert_clean_equal(merge(base, x, copy.deepcopy(x)), x)  # both made the same edit
    assert_clean_equal(merge(None, y, copy.deepcopy(y)), y)  # both created the same resource


@SETTINGS
@given(three_versions(), st.booleans())
def test_outcome_does_not_depend_on_who_is_ours(
    versions: tuple[dict[str, Any], dict[str, Any], dict[str, Any]], no_base: bool
) -> None:
    base, x, y = versions
    b = None if no_base else base
    snapshot = frozen([b, x, y])
    xy, yx = merge(b, x, y), merge(b, y, x)
    assert frozen([b, x, y]) == snapshot  # inputs untouched
    assert {c.path for c in xy.conflicts} == {c.path for c in yx.conflicts}
    assert len(xy.conflicts) == len({c.path for c in xy.conflicts})  # one conflict per place
    if xy.clean:
        assert frozen(without_asymmetric_fields(xy.merged)) == frozen(without_asymmetric_fields(yx.merged))


@SETTINGS
@given(three_versions())
def test_conflicts_show_each_side_and_merged_is_json(
    versions: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, x, y = versions
    result = merge(base, x, y)
    json.dumps(result.merged)
    for c in result.conflicts:
        json.dumps(c.to_json())
        # a conflict is always a real disagreement (JSON null, invalid in FHIR, and absent both show as None)
        assert frozen(c.ours) != frozen(c.theirs) or c.ours is None
    # a field only one side changed ends up as that side's value (unless the
    # other side stopped the record, which is then a conflict)
    conflicted = {c.path.split(".")[0].split("[")[0] for c in result.conflicts}
    for k in set(base) | set(x) | set(y):
        if k.startswith("value"):
            continue  # valueQuantity/valueString are one choice element: checked by the examples
        bk, xk, yk = (frozen(d.get(k)) for d in (base, x, y))
        for mine, other in ((xk, yk), (yk, xk)):
            if other == bk and mine != bk and k not in conflicted:
                assert frozen(result.merged.get(k)) == mine, k
