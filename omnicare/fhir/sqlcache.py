"""SQL compiled once per query shape: the ORM builds and compiles a search's query the first time a shape is
seen, with placeholders where the values go, and later searches of that shape only bind their values.

Building the filters (``QuerySet.filter`` → ``Query.build_filter``) and compiling them (``SQLCompiler.as_sql``)
cost more CPU than the rest of a FHIR search together (``bench/request_profile.py --cprofile-asgi search``); the
SQL text itself depends only on the shape (which parameters, which branch each value takes, how many values,
how many visible patients, the sort), never on the values. So the ORM stays the one place that says what a
search means, and this module only remembers what it said.

A value enters a compiled query either as itself (``=``, ``IN``) or inside a LIKE pattern
(``startswith``/``contains``): the placeholder is found in the compiled parameters and the value is put back
escaped as Django escapes it (``prep_for_like_query``). A query whose parameters do not show every placeholder
at least once, each alone in its parameter (a lookup that transformed the value) is not cached: the caller runs it through the ORM.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet

_PLACEHOLDER = "\ue000{}\ue001"  # private-use characters: no FHIR value or SQL constant of ours contains them
_FOUND = re.compile("\ue000(\\d+)\ue001")
#: Shapes remembered per process (a physician's visible-patient count is part of the shape); beyond, start over.
MAX_SHAPES = 512


@dataclass(frozen=True)
class Compiled:
    """One query's SQL and, per parameter, where its value comes from."""

    sql: str
    #: per SQL parameter: ("value", i), ("like", i, pattern with the placeholder) or ("const", value)
    slots: tuple[tuple[Any, ...], ...]

    def params(self, values: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for slot in self.slots:
            if slot[0] == "value":
                out.append(values[slot[1]])
            elif slot[0] == "like":
                out.append(slot[2].replace(_PLACEHOLDER.format(slot[1]), connection.ops.prep_for_like_query(values[slot[1]])))
            else:
                out.append(slot[1])
        return out


def placeholders() -> Callable[[Any], str]:
    """A binder for compiling: the n-th value bound becomes the n-th placeholder."""
    counter = itertools.count()
    return lambda _value: _PLACEHOLDER.format(next(counter))


def compile_queryset(qs: QuerySet[Any], n_values: int) -> Compiled | None:
    """``qs`` (built with ``placeholders()``) as SQL and slots; None if a value's placeholder is missing or
    shares a parameter with another (the lookup transformed it: the ORM must run it)."""
    sql, params = qs.query.sql_with_params()
    slots: list[tuple[Any, ...]] = []
    seen: list[int] = []
    for p in params:
        found = _FOUND.findall(p) if isinstance(p, str) else []
        if not found:
            slots.append(("const", p))
            continue
        if len(found) > 1:
            return None
        i = int(found[0])
        seen.append(i)
        slots.append(("value", i) if p == _PLACEHOLDER.format(i) else ("like", i, p))
    if set(seen) != set(range(n_values)):  # a value used twice (the visible patients) fills both slots
        return None
    return Compiled(sql, tuple(slots))


_CACHE: dict[Hashable, tuple[Compiled, Compiled] | None] = {}


def cached(key: Hashable, build: Callable[[], tuple[Compiled, Compiled] | None]) -> tuple[Compiled, Compiled] | None:
    """The compiled (page, count) queries of ``key``, built once per process and database alias."""
    full = (connection.alias, key)
    try:
        return _CACHE[full]
    except KeyError:
        pass
    if len(_CACHE) >= MAX_SHAPES:
        _CACHE.clear()
    out = _CACHE[full] = build()
    return out
