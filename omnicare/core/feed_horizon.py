"""The change feed's snapshot horizon on PostgreSQL: when a committed feed row is final (no smaller position
can still commit). Here, below both ``omnicare.access`` (its scope caches store an entry only at a settled
epoch) and ``omnicare.fhir`` (the feed itself, ``fhir.services.feed_since``/``feed_cut``), so the one proof
has one home and dependencies keep pointing one way (core <- access <- fhir).
"""

from __future__ import annotations

from django.db import connection


def in_testcase_transaction() -> bool:
    """Inside a test case's wrapping transaction, which never commits (and has no concurrent writer)."""
    return any(getattr(b, "_from_testcase", False) for b in connection.atomic_blocks)


#: The reader's horizon: its snapshot's oldest in-flight transaction id, leaving out those that
#: ``pg_stat_activity`` places in another database of the cluster (they never write this table; without this a
#: long transaction of any database on a shared server would hold the feed back). An id it cannot place, or
#: one that ended meanwhile, counts: the answer can only be lower, never unsafe. One scan of the backend table
#: per statement (an uncorrelated subquery), ~1 ms.
FEED_XMIN_SQL = (
    "coalesce((SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE NOT EXISTS ("
    "SELECT 1 FROM pg_stat_activity AS a WHERE a.backend_xid = xid(x) "
    "AND a.datname IS DISTINCT FROM current_database())), "
    "pg_snapshot_xmax(pg_current_snapshot()))::text::bigint"
)
FEED_XMAX_SQL = "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


def feed_horizon_applies() -> bool:
    """Whether feed reads must stop at the snapshot horizon: PostgreSQL, outside a test case's wrapping
    transaction (which has no concurrent writer and whose own positions are taken inline)."""
    return connection.vendor == "postgresql" and not in_testcase_transaction()


def feed_settled(stamp: int, xmin: int, xmax: int) -> bool:
    """Whether a committed feed row is **settled**: no transaction still in flight holds a smaller position.

    The proof (PostgreSQL; the invariant is that a reader doing ``seq > cursor`` never sees position N+1
    committed while N is still in flight and later commits):

    1. A writer takes its positions from ``fhir_feed_seq`` (``CACHE 1``: values ascend in the order ``nextval``
       is called, across sessions), always after its transaction has an id (it inserted the versions first).
    2. Then, in a subtransaction, it writes the positions into its rows: the rows' ``xmin`` (``stamp``) is a
       transaction id assigned after every one of its positions was taken. Transaction ids are assigned in
       increasing order, so every transaction that got its id before the positions were taken has an id
       smaller than ``stamp``; equivalently, a transaction whose id is greater than ``stamp`` got it after,
       and (by 1) takes only positions greater than this row's.
    3. A reader's snapshot lists the transactions in flight when it was taken (``pg_snapshot_xip``; any id
       at or above its ``xmax`` counts as in flight too). ``xmin`` here is the smallest of them, leaving out
       those ``pg_stat_activity`` shows in another database (a transaction never changes database, so they
       never write this table; one it cannot place stays in). So if ``stamp < xmin``, every transaction of
       this database still in flight has an id greater than ``stamp`` and holds, or will take, only
       positions greater than this row's. Every smaller position is committed (visible: it ended
       before this snapshot) or aborted (never appears). Ending a page at a settled row therefore never
       skips; rows after the last settled one wait for the next pull.

    ``stamp`` is the 32-bit ``xmin``; it is widened to 64 bits against the snapshot's ``xmax``, which every
    committed row's stamp precedes (a row older than 2^32 transactions reads as younger: it can only wait,
    briefly, never be skipped). A liveness cost, not a safety one: any transaction of this database with an id
    older than a row's stamp (a long import, an open ``psql`` session that wrote) holds that row back until it
    ends.
    """
    full = xmax - ((xmax - stamp) % (1 << 32))
    return full < xmin
