"""``manage.py audit_db_roles``: the PostgreSQL role the application runs as, without owning the audit tables.

Run it as the owner (the role that runs ``migrate``), after every ``migrate``::

    OMNICARE_DB_APP_PASSWORD=... manage.py audit_db_roles --role omnicare_app

then start the servers and workers with ``DATABASE_URL=postgres://omnicare_app:...@host/db``. The app role
gets ordinary privileges on every other table, but on the audit tables only what the trail needs
(:data:`omnicare.audit.dbguard.APP_GRANTS`): no TRUNCATE, no UPDATE of event contents, no DELETE of
checkpoints or archives, and, not being the owner or a superuser, no ``ALTER TABLE ... DISABLE TRIGGER``
and no ``SET session_replication_role``. ``--sql`` prints the statements instead of running them.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from omnicare.audit.dbguard import app_role_sql


class Command(BaseCommand):
    help = "Create/update the PostgreSQL application role: INSERT/SELECT-only on the audit tables (run as owner)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", default="omnicare_app", help="role name (default omnicare_app)")
        parser.add_argument("--password-env", default="OMNICARE_DB_APP_PASSWORD",
                            help="environment variable holding the role's password (unset: no password change)")
        parser.add_argument("--sql", action="store_true", help="print the SQL, do not run it")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("audit_db_roles is for PostgreSQL (SQLite has no roles: see docs/SECURITY.md)")
        role = options["role"]
        if not role.replace("_", "").isalnum():
            raise CommandError("role: letters, digits and _ only")
        tables = connection.introspection.table_names()
        statements = app_role_sql(role=role, tables=tables, database=connection.settings_dict["NAME"])
        password = os.environ.get(options["password_env"], "")
        if options["sql"]:
            self.stdout.write(";\n".join(statements) + ";")
            return
        with connection.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            if password:
                cur.execute(f'ALTER ROLE "{role}" PASSWORD %s', [password])
        self.stdout.write(f"role {role}: {len(tables)} tables granted (audit tables INSERT/SELECT only)")
