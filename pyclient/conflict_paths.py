"""Merge conflict paths: the grammar :mod:`pyclient.merge` writes, read back to apply a person's choice.

Grammar (PROTOCOL.md §5, "Conflict paths")::

    path    = segment *("." segment)
    segment = name [ "[x]" ] [ "[" label "]" ]

* ``name``: a FHIR element name (no ``.`` or ``[``).
* ``name[x]``: a choice element whose *type* differs between the sides (``valueQuantity`` against
  ``valueString``); the conflict's values are then dicts of the group, e.g. ``{"valueQuantity": {...}}``.
* ``[label]``: one item of a list, by the identity :func:`pyclient.merge.item_label` gives it, e.g.
  ``name[use=official]``, ``coding[system=http://loinc.org,code=8480-6]``, ``code=http://loinc.org|8480-6``
  inside a label for a CodeableConcept, ``note[time=2024-01-02,author=Dr A]``, ``category[...]``.
  A label is matched by recomputing the item's label, never by splitting it (values may hold ``,``
  ``=``, ``|``, ``.`` or ``]``), so a choice lands on exactly the item the merge meant.

:func:`parse` and :func:`format_path` round-trip every path the merge emits (tests/pyclient/test_conflict_paths.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyclient.merge import choice_unit, item_label

__all__ = ["Segment", "format_path", "get_path", "parse", "set_path"]

_MISSING: Any = object()


@dataclass(frozen=True)
class Segment:
    name: str  # "value[x]" for a choice group
    label: str | None = None  # the list item's identity label, None = the element itself

    @property
    def choice(self) -> bool:
        return self.name.endswith("[x]")


def _parse_from(path: str, pos: int) -> list[Segment] | None:
    """Segments of ``path[pos:]``; a label is closed by the first ``]`` after which the rest still parses."""
    end = pos
    while end < len(path) and path[end] not in ".[":
        end += 1
    name = path[pos:end]
    if not name:
        return None
    if path.startswith("[x]", end):
        name, end = name + "[x]", end + 3
    if end == len(path):
        return [Segment(name)]
    if path[end] == ".":
        rest = _parse_from(path, end + 1)
        return None if rest is None else [Segment(name), *rest]
    if path[end] != "[":
        return None
    close = path.find("]", end + 1)
    while close != -1:
        label = path[end + 1:close]
        if close + 1 == len(path):
            return [Segment(name, label)]
        if path[close + 1] == ".":
            rest = _parse_from(path, close + 2)
            if rest is not None:
                return [Segment(name, label), *rest]
        close = path.find("]", close + 1)
    return None


def parse(path: str) -> list[Segment] | None:
    """``name[use=official].family`` -> segments; None when it is not a path of this grammar."""
    return _parse_from(path, 0) if path else None


def format_path(segments: Sequence[Segment]) -> str:
    return ".".join(s.name + (f"[{s.label}]" if s.label is not None else "") for s in segments)


def _find(resource_type: str | None, spath: str, items: list[Any], label: str) -> int | None:
    for i, it in enumerate(items):
        # An extension url that repeated on any side of the merge is labelled with its content: try both.
        if item_label(resource_type, spath, it, items) == label or item_label(
                resource_type, spath, it, [it, it]) == label:
            return i
    return None


@dataclass(frozen=True)
class _Spot:
    node: dict[str, Any]  # holds the last segment
    last: Segment
    resource_type: str | None
    spath: str  # schema path of the last segment (names only), as merge's rules name it


def _locate(resource: dict[str, Any], path: str, *, create: bool) -> _Spot | None:
    """Where a conflict path points in ``resource``; None if it does not parse or address anything here."""
    segs = parse(path)
    if not segs:
        return None
    rtype = resource.get("resourceType")
    rt = rtype if isinstance(rtype, str) else None
    node: Any = resource
    spath = ""
    for seg in segs[:-1]:
        spath = f"{spath}.{seg.name}" if spath else seg.name
        if not isinstance(node, dict) or seg.choice:
            return None
        if seg.label is None:
            if create:
                node = node.setdefault(seg.name, {})
            else:
                node = node.get(seg.name, _MISSING)
            continue
        items = node.get(seg.name)
        if not isinstance(items, list):
            return None
        idx = _find(rt, spath, items, seg.label)
        if idx is None:
            return None
        node = items[idx]
    last = segs[-1]
    spath = f"{spath}.{last.name}" if spath else last.name
    if not isinstance(node, dict):
        return None
    return _Spot(node, last, rt, spath)


def _choice_keys(node: dict[str, Any], unit: str) -> list[str]:
    prefix = unit[:-3]
    return [k for k in node if k.startswith(prefix) and choice_unit(k) == unit]


def get_path(resource: dict[str, Any], path: str) -> Any:
    """The value at a conflict path, in the shape the conflict carries (a choice group as a dict); None if absent."""
    spot = _locate(resource, path, create=False)
    if spot is None:
        return None
    node, last = spot.node, spot.last
    if last.choice:
        group = {k: node[k] for k in _choice_keys(node, last.name)}
        return group or None
    if last.label is None:
        return node.get(last.name)
    items = node.get(last.name)
    if not isinstance(items, list):
        return None
    idx = _find(spot.resource_type, spot.spath, items, last.label)
    return None if idx is None else items[idx]


def set_path(resource: dict[str, Any], path: str, value: Any) -> bool:
    """Set ``value`` (None = remove) at a conflict path; False when the path does not address anything here."""
    spot = _locate(resource, path, create=True)
    if spot is None:
        return False
    node, last = spot.node, spot.last
    if last.choice:
        if value is not None and not (isinstance(value, dict) and all(
                k in _choice_keys(value, last.name) for k in value)):
            return False  # a choice group's value is a dict of its own keys
        for k in _choice_keys(node, last.name):
            del node[k]
        if value:
            node.update(value)
        return True
    if last.label is None:
        if value is None:
            node.pop(last.name, None)
        else:
            node[last.name] = value
        return True
    items = node.get(last.name)
    if items is None and value is not None:
        node[last.name] = items = []
    if not isinstance(items, list):
        return False
    idx = _find(spot.resource_type, spot.spath, items, last.label)
    if value is None:
        if idx is not None:
            items.pop(idx)
    elif idx is None:
        items.append(value)
    else:
        items[idx] = value
    return True
