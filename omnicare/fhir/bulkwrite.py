"""PostgreSQL ``COPY`` for the write path's large batches (bulk ``$import``, big pushes and bundles).

Why: ``bulk_create`` and the ``INSERT .. SELECT unnest(arrays)`` of ``services._insert_rows`` go through
psycopg's client-side binding (Django's cursor), which quotes every JSON body into an array literal with a
regex per value: profiled on a Synthea import (pyinstrument), ~60 % of the write path's time was that quoting
and Django's per-field ``get_db_prep_save``. ``COPY .. FROM STDIN`` streams the rows through psycopg's C
row formatter instead, and the ids come first from the table's own identity sequence (one ``nextval`` query
for the batch) so callers still get the primary keys they need for the index rows and the feed seal.

Small writes (one REST PUT, a sync push of 10) keep the ordinary statements: ``COPY`` costs less Python CPU
even for 10 rows (measured 2026-12-02: 10 ResourceVersion rows 0.45-0.59 ms by COPY with its ``nextval`` query,
1.07-1.14 ms by ``bulk_create``), but it is three round trips instead of one, and with 16 requests sharing two
GILs every round trip waits for the GIL again: at COPY_MIN = 2 the 100-device sync bench did not get faster
(bench/scale_bench.py --sync-only, alternating, load 20+). ``COPY_MIN`` is where it clearly pays. Everything runs
on Django's connection, inside the caller's transaction; database errors come out as Django's
(``IntegrityError`` on a duplicate key), as from any ORM statement, so callers catch one kind.

``Ready`` is what the write path would compute from a body that needs no database (its search-index rows,
compartment patients and JSON text), computed ahead by the bulk import's worker processes
(``bulk.validate_pool.prepare``) and handed to the write path on ``services.Write.ready``: the job's own
process then only locks, COPYs and commits. The write path uses it only for a body it writes unchanged
(``authorship.write_checked`` returned the same object), so it is always what it would have computed itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from django.db import connection

COPY_MIN = 64


class Ready(NamedTuple):
    """A body's write-path products computed ahead (see the module docstring)."""

    index: tuple[list[Any], list[Any], list[Any], list[Any]]  # the fields of search.IndexRows, in order
    patients: list[str]  # search.compartment_patients
    rest: str  # JSON text of the body without resourceType, id and meta (services._with_meta puts those first)


def ready_of(body: dict[str, Any]) -> Ready:
    """The ``Ready`` of a validated body (with its id): the same functions the write path calls."""
    from .search import compartment_patients, index_rows

    rtype, rid = str(body["resourceType"]), str(body["id"])
    ix = index_rows(rtype, body)  # no search parameter reads meta (the only part the write path changes)
    rest = {k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")}
    return Ready((ix.tokens, ix.strings, ix.dates, ix.refs), compartment_patients(rtype, rid, body), json.dumps(rest))


def body_text(body: dict[str, Any], ready: Ready) -> str:
    """The JSON text of ``body`` (as ``services._with_meta`` built it) from its ``ready.rest``: only the
    head is serialised here."""
    head = (f'{{"resourceType": {json.dumps(body["resourceType"])}, "id": {json.dumps(body["id"])}, '
            f'"meta": {json.dumps(body["meta"])}')
    return head + ("}" if ready.rest == "{}" else ", " + ready.rest[1:])


def copy_ok(n: int) -> bool:
    return connection.vendor == "postgresql" and n >= COPY_MIN


def _raw_cursor() -> Any:
    connection.ensure_connection()
    return connection.connection.cursor()


def next_ids(model: Any, n: int) -> list[int]:
    """``n`` fresh primary keys from ``model``'s identity sequence (what an INSERT would have taken)."""
    table = model._meta.db_table
    pk = model._meta.pk.column
    with connection.cursor() as cur:
        cur.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)", [table, pk, n])
        return [int(r[0]) for r in cur.fetchall()]


def copy_rows(model: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``COPY`` value tuples (database-ready: JSON as text, datetimes aware) into ``model``'s table."""
    if not rows:
        return
    qn = connection.ops.quote_name
    cols = ", ".join(qn(c) for c in columns)
    # psycopg's own errors (this is its cursor, not Django's) translated as Django's cursor would.
    with (
        connection.wrap_database_errors,
        _raw_cursor() as cur,
        cur.copy(f"COPY {qn(model._meta.db_table)} ({cols}) FROM STDIN") as cp,
    ):
        for row in rows:
            cp.write_row(row)


def copy_instances(objs: Sequence[Any], json_text: dict[int, str] | None = None) -> None:
    """Insert unsaved model instances with ``COPY``, giving each its primary key (like ``bulk_create``).

    ``json_text`` maps ``id(value)`` of JSON field values already serialised (a body shared by the current
    row and its version is dumped once)."""
    if not objs:
        return
    import json

    model = type(objs[0])
    fields = [f for f in model._meta.concrete_fields]
    ids = next_ids(model, len(objs))
    cache = json_text if json_text is not None else {}
    # Per field once, not per row and field (the field-type lookup was a visible share of the COPY path).
    plan = [(f.attname, f.get_internal_type() == "JSONField") for f in fields]
    alias = connection.alias
    rows = []
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        row = []
        for attname, is_json in plan:
            value = getattr(obj, attname)
            if is_json:
                text = cache.get(id(value))
                if text is None:
                    text = json.dumps(value)
                    cache[id(value)] = text
                value = text
            row.append(value)
        rows.append(row)
        obj._state.adding = False
        obj._state.db = alias
    copy_rows(model, [f.column for f in fields], rows)
