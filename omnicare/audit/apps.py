from __future__ import annotations

import atexit
import sys

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "omnicare.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from django.db.backends.sqlite3 import base  # base first: operations alone is a circular import

        DatabaseOperations = base.DatabaseOperations  # noqa: N806

        from . import dbguard, services  # noqa: PLC0415 - the app registry is ready only now

        # manage.py flush (and the test runner) empties every table with DELETE on SQLite: lift the
        # append-only triggers around that one statement list (anyone who may flush may drop triggers).
        original = DatabaseOperations.sql_flush
        if not getattr(original, "_omnicare_audit", False):
            def sql_flush(ops: DatabaseOperations, style: object, tables: list[str], **kw: object) -> list[str]:
                return dbguard.sqlite_flush_wrap(original(ops, style, tables, **kw))

            sql_flush._omnicare_audit = True  # type: ignore[attr-defined]
            DatabaseOperations.sql_flush = sql_flush  # type: ignore[method-assign]
        if "pytest" not in sys.modules:
            # On shutdown (uvicorn, a management command, a worker): sequence and sign what this process wrote.
            atexit.register(services.checkpoint_on_shutdown)
