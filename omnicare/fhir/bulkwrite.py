"""Every INSERT of the FHIR write path, in one place: ``COPY`` for large batches (bulk ``$import``, big pushes
and bundles), one ``json_to_recordset`` / ``unnest`` statement for small ones on PostgreSQL, the ORM elsewhere.
``services._apply`` calls :func:`insert_instances` (current rows and versions) and :func:`insert_all_rows`
(index and compartment rows) and never chooses a path itself.

Why COPY: ``bulk_create`` and the ``INSERT .. SELECT unnest(arrays)`` of :func:`insert_rows` go through
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
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection

from .search import compartment_patients, index_rows

COPY_MIN = 64


class Ready(NamedTuple):
    """A body's write-path products computed ahead (see the module docstring)."""

    index: tuple[list[Any], list[Any], list[Any], list[Any]]  # the fields of search.IndexRows, in order
    patients: list[str]  # search.compartment_patients
    rest: str  # JSON text of the body without resourceType, id and meta (services._with_meta puts those first)


def ready_of(body: dict[str, Any]) -> Ready:
    """The ``Ready`` of a validated body (with its id): the same functions the write path calls."""
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


_PG_ARRAY = {"CharField": "text", "DateTimeField": "timestamptz", "BooleanField": "boolean", "JSONField": "text"}


def pg_column(field: Any) -> str:
    """``unnest(%s::<type>[])`` for one column on PostgreSQL (JSON travels as text, cast per element)."""
    return f"unnest(%s::{_PG_ARRAY.get(field.get_internal_type(), 'bigint')}[])"


def insert_rows(model: Any, fields: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """INSERT plain value tuples without model instances or a SQL compiler per row.

    The index and compartment rows of a 1,000-write push are ~7,000 rows; building them as Django models for
    ``bulk_create`` cost more than writing them. On PostgreSQL ONE ``INSERT .. SELECT unnest(arrays)`` per
    table; elsewhere ``executemany``. Values must already be database-ready (see _db_datetime).
    """
    if not rows:
        return
    qn = connection.ops.quote_name
    model_fields = [model._meta.get_field(f) for f in fields]
    cols = ", ".join(qn(f.column) for f in model_fields)
    table = qn(model._meta.db_table)
    if copy_ok(len(rows)):
        copy_rows(model, [f.column for f in model_fields], rows)
        return
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            arrays = ", ".join(pg_column(f) for f in model_fields)
            columns = [list(c) for c in zip(*rows, strict=True)]
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {arrays}", columns)  # noqa: S608
        else:
            marks = ", ".join(["%s"] * len(fields))
            cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)  # noqa: S608


def insert_all_rows(tables: list[tuple[Any, tuple[str, ...], list[tuple[Any, ...]]]]) -> None:
    """:func:`insert_rows` for several tables, in ONE statement on PostgreSQL when none is big enough for COPY:
    each table's ``INSERT .. SELECT unnest(arrays)`` becomes a data-modifying CTE of one statement (a REST
    create wrote its index and compartment rows in five round trips; now one)."""
    tables = [t for t in tables if t[2]]
    if connection.vendor != "postgresql" or len(tables) < 2 or any(copy_ok(len(r)) for _, _, r in tables):
        for model, fields, rows in tables:
            insert_rows(model, fields, rows)
        return
    qn = connection.ops.quote_name
    parts: list[str] = []
    params: list[Any] = []
    for model, fields, rows in tables:
        model_fields = [model._meta.get_field(f) for f in fields]
        cols = ", ".join(qn(f.column) for f in model_fields)
        arrays = ", ".join(pg_column(f) for f in model_fields)
        parts.append(f"INSERT INTO {qn(model._meta.db_table)} ({cols}) SELECT {arrays}")  # noqa: S608
        params += [list(c) for c in zip(*rows, strict=True)]
    ctes = ", ".join(f"i{n} AS ({sql})" for n, sql in enumerate(parts[:-1]))
    with connection.cursor() as cur:
        cur.execute(f"WITH {ctes} {parts[-1]}", params)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not a column value: {type(value).__name__}")


_RECORDSET: dict[Any, tuple[list[tuple[str, str]], list[str], str]] = {}


def _recordset_plan(model: Any) -> tuple[list[tuple[str, str]], list[str], str]:
    """Per model, once: its non-JSON columns, its JSON columns, and the ``json_to_recordset`` column list."""
    plan = _RECORDSET.get(model)
    if plan is None:
        qn = connection.ops.quote_name
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        scalars = [(f.attname, f.column) for f in fields if f.get_internal_type() != "JSONField"]
        jsons = [f.column for f in fields if f.get_internal_type() == "JSONField"]
        shape = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
        plan = _RECORDSET[model] = (scalars, jsons, shape)
    return plan


def _recordset_insert(objs: Sequence[Any], json_text: dict[int, str], *, provisional_seq: bool = False) -> None:
    """PostgreSQL, a small batch of unsaved ``Resource`` / ``ResourceVersion`` instances (unique by type and
    id): ONE ``INSERT .. SELECT .. FROM json_to_recordset(%s) RETURNING``, the primary keys (and with
    ``provisional_seq`` the provisional feed positions, taken in the same statement) written back on the
    instances, as ``bulk_create`` + ``_provisional_seqs`` would.

    Why not ``bulk_create``: for a push of 10 its SQL compiler, per-field ``get_db_prep_save`` and psycopg's
    client-side quoting of every column as an array literal (a regex per JSON body) were ~a third of the write
    path's Python calls. Here the rows travel as ONE JSON text (each body serialised once, spliced in as it is:
    the row and its version share it) that PostgreSQL unpacks, and the positions need no round trip of
    their own. Rows come back keyed by (type, id), so nothing depends on RETURNING's order."""
    model = type(objs[0])
    scalars, jsons, shape = _recordset_plan(model)
    qn = connection.ops.quote_name
    parts = []
    for obj in objs:
        head = json.dumps({col: getattr(obj, att) for att, col in scalars}, default=_json_scalar)
        tail = []
        for col in jsons:
            value = getattr(obj, col)
            text = json_text.get(id(value))
            if text is None:
                text = json_text[id(value)] = json.dumps(value)
            tail.append(f'"{col}": {text}')
        parts.append(head[:-1] + ", " + ", ".join(tail) + "}")
    names = [col for _, col in scalars] + jsons
    select = ", ".join(
        "-nextval('fhir_provisional_seq')" if provisional_seq and c == "seq" else f"x.{qn(c)}" for c in names
    )
    sql = (
        f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(qn(c) for c in names)}) "  # noqa: S608 (model metadata)
        f"SELECT {select} FROM json_to_recordset(%s::json) AS x({shape}) "
        "RETURNING id, resource_type, resource_id" + (", seq" if provisional_seq else "")
    )
    with connection.cursor() as cur:
        cur.execute(sql, ["[" + ", ".join(parts) + "]"])
        back = {(r[1], r[2]): r for r in cur.fetchall()}
    alias = connection.alias
    for obj in objs:
        row = back[(obj.resource_type, obj.resource_id)]
        obj.pk = int(row[0])
        if provisional_seq:
            obj.seq = int(row[3])
        obj._state.adding = False
        obj._state.db = alias


def insert_instances(objs: Sequence[Any], json_text: dict[int, str], *, provisional_seq: bool = False) -> None:
    """Insert unsaved ``Resource`` / ``ResourceVersion`` instances and give each its primary key: the write
    path's one way in. ``COPY`` for a large batch (:func:`copy_instances`), ONE ``json_to_recordset`` INSERT
    for a small one on PostgreSQL (:func:`_recordset_insert`), ``bulk_create`` elsewhere. ``provisional_seq``
    (PostgreSQL, small batches only): the provisional feed positions are taken inside the INSERT."""
    if not objs:
        return
    if copy_ok(len(objs)):
        assert not provisional_seq, "COPY takes no positions: the caller takes them first"
        copy_instances(objs, json_text)
    elif connection.vendor == "postgresql":
        _recordset_insert(objs, json_text, provisional_seq=provisional_seq)
    else:
        assert not provisional_seq, "only PostgreSQL defers feed positions"
        type(objs[0]).objects.bulk_create(objs, batch_size=2000)
