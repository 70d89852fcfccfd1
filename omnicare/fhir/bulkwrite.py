"""PostgreSQL ``COPY`` for the write path's large batches (bulk ``$import``, big pushes and bundles).

Why: ``bulk_create`` and the ``INSERT .. SELECT unnest(arrays)`` of ``services._insert_rows`` go through
psycopg's client-side binding (Django's cursor), which quotes every JSON body into an array literal with a
regex per value: profiled on a Synthea import (pyinstrument), ~60 % of the write path's time was that quoting
and Django's per-field ``get_db_prep_save``. ``COPY .. FROM STDIN`` streams the rows through psycopg's C
row formatter instead, and the ids come first from the table's own identity sequence (one ``nextval`` query
for the batch) so callers still get the primary keys they need for the index rows and the feed seal.

Small writes (one REST PUT) keep the ordinary statements: ``COPY`` has a fixed cost and ``COPY_MIN`` is where
it starts to pay. Everything runs on Django's connection, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

COPY_MIN = 64


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
    with _raw_cursor() as cur, cur.copy(f"COPY {qn(model._meta.db_table)} ({cols}) FROM STDIN") as cp:
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
