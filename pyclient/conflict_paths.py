"""Merge conflict paths: the grammar :mod:`pyclient.merge` writes, read back to apply a person's choice.

A path is element names joined by ``.``; an array item carries its identity in brackets,
``name[use=official].family`` or ``note[time=2024-01-02,author=Dr A]``; a choice element whose type
differs between the sides is ``value[x]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["matches", "set_path", "split_path"]

_SEG = re.compile(r"([^.\[]+)(?:\[([^\]]*)\])?")


def split_path(path: str) -> list[tuple[str, dict[str, str] | None]] | None:
    """``a.b[k=v].c`` -> ``[("a", None), ("b", {"k": "v"}), ("c", None)]``; None when it does not parse."""
    segs: list[tuple[str, dict[str, str] | None]] = []
    pos = 0
    while pos < len(path):
        m = _SEG.match(path, pos)
        if not m:
            return None
        name, ident = m.group(1), m.group(2)
        crit = None
        if ident is not None:
            crit = {}
            for part in ident.split(","):
                if "=" not in part:
                    return None
                k, v = part.split("=", 1)
                crit[k] = v
        segs.append((name, crit))
        pos = m.end()
        if pos < len(path):
            if path[pos] != ".":
                return None
            pos += 1
    return segs


def matches(item: Any, crit: Mapping[str, str]) -> bool:
    """Whether an array item carries the identity ``crit`` (one bracket of a path)."""
    if not isinstance(item, Mapping):
        return False
    for k, v in crit.items():
        got = item.get(k)
        if isinstance(got, (dict, list)):
            got = json.dumps(got, sort_keys=True, separators=(",", ":"))
        if str(got) != v and json.dumps(got) != v:
            return False
    return True


def set_path(resource: dict[str, Any], path: str, value: Any) -> bool:
    """Set ``value`` at a merge conflict path (``a.b``, ``name[use=official].family``); False if not addressable."""
    if path == "":
        return False
    segs = split_path(path)
    if not segs:
        return False
    node: Any = resource
    for n, (name, crit) in enumerate(segs):
        last = n == len(segs) - 1
        if name.endswith("[x]"):
            return False
        if not isinstance(node, dict):
            return False
        if crit is None:
            if last:
                if value is None:
                    node.pop(name, None)
                else:
                    node[name] = value
                return True
            node = node.setdefault(name, {})
            continue
        items = node.get(name)
        if not isinstance(items, list):
            return False
        idx = next((i for i, it in enumerate(items) if matches(it, crit)), None)
        if last:
            if value is None:
                if idx is not None:
                    items.pop(idx)
            elif idx is None:
                items.append(value)
            else:
                items[idx] = value
            return True
        if idx is None:
            return False
        node = items[idx]
    return False
