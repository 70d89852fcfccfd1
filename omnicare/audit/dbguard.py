"""Database-level guards for the audit tables (and the audit-signing rows of ``keys_keyversion``).

Triggers, installed by migrations on PostgreSQL and SQLite, refuse what the application never does:

* ``audit_auditevent``: UPDATE only as the sequencer's one-time fill of ``seq``, ``prev_hash`` and ``hash``
  (from NULL/empty, every other column unchanged); DELETE only of events a signed archive covers.
* ``audit_checkpoint``, ``audit_auditarchive``: no UPDATE, no DELETE.
* ``audit_chainhead``: no DELETE; UPDATE may only move the head forward.
* ``keys_keyversion``: no DELETE; purpose, version, backend, public key and creation time never change, a
  handle may only be blanked (destroyed), and a status only moves active -> retiring -> retired.

Triggers alone stop the application and a careless script, not the table owner (who can disable them).
On PostgreSQL the application therefore runs as a role that does not own these tables and holds only
the privileges listed in :data:`APP_GRANTS` (``manage.py audit_db_roles``); TRUNCATE, DISABLE TRIGGER and
``session_replication_role`` then fail for it. On SQLite whoever can write the file can drop triggers:
tampering there is what the pinned-key checkpoints published outside the database detect.
"""

from __future__ import annotations

from typing import Any

EVENT_COLUMNS = (
    "id", "category", "action", "outcome", "purpose", "user_id", "username", "roles", "resource_type",
    "resource_id", "patient_ids", "device_id", "device_seq", "device_time", "received_at", "detail",
)
KEY_FIXED_COLUMNS = ("id", "purpose", "version", "backend", "public_key", "created")
V1_TABLES = ("audit_auditevent", "audit_checkpoint", "audit_auditarchive")

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION omnicare_audit_append_only() RETURNS trigger AS $$
BEGIN
    -- Nested IFs: PL/pgSQL does not promise to short-circuit AND, and only some tables have these columns.
    IF TG_TABLE_NAME = 'audit_auditevent' THEN
        IF TG_OP = 'DELETE' THEN
            IF EXISTS (SELECT 1 FROM audit_auditarchive a WHERE OLD.seq BETWEEN a.first_seq AND a.last_seq) THEN
                RETURN OLD;
            END IF;
        ELSIF OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.hash <> '' AND NEW.prev_hash <> '' THEN
            IF (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash') THEN
                RETURN NEW;
            END IF;
        END IF;
    ELSIF TG_TABLE_NAME = 'audit_chainhead' THEN
        IF TG_OP = 'UPDATE' THEN
            IF NEW.id = OLD.id AND NEW.seq >= OLD.seq THEN
                IF NEW.seq > OLD.seq OR NEW.hash = OLD.hash THEN
                    RETURN NEW;
                END IF;
            END IF;
        END IF;
    ELSIF TG_TABLE_NAME = 'keys_keyversion' THEN
        IF TG_OP = 'UPDATE' THEN
            IF (NEW.id, NEW.purpose, NEW.version, NEW.backend, NEW.public_key, NEW.created)
                    IS NOT DISTINCT FROM (OLD.id, OLD.purpose, OLD.version, OLD.backend, OLD.public_key, OLD.created)
               AND (NEW.handle = OLD.handle OR NEW.handle = '')
               AND (NEW.status = OLD.status OR (OLD.status = 'active' AND NEW.status IN ('retiring', 'retired'))
                    OR (OLD.status = 'retiring' AND NEW.status = 'retired')) THEN
                RETURN NEW;
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION 'omnicare audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
"""

PG_TRIGGERS = {
    "audit_auditevent": "BEFORE UPDATE OR DELETE",
    "audit_checkpoint": "BEFORE UPDATE OR DELETE",
    "audit_auditarchive": "BEFORE UPDATE OR DELETE",
    "audit_chainhead": "BEFORE UPDATE OR DELETE",
    "keys_keyversion": "BEFORE UPDATE OR DELETE",
}


def _refuse(table: str, op: str) -> str:
    return f"SELECT RAISE(ABORT, 'omnicare audit table {table} is append-only: {op} refused');"


def _changed(columns: tuple[str, ...]) -> str:
    return " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)


def sqlite_triggers() -> dict[str, str]:
    """name -> CREATE TRIGGER statement (SQLite)."""
    t: dict[str, str] = {}
    t["audit_auditevent_no_update"] = (
        "CREATE TRIGGER audit_auditevent_no_update BEFORE UPDATE ON audit_auditevent "
        "WHEN OLD.seq IS NOT NULL OR NEW.seq IS NULL OR NEW.hash = '' OR NEW.prev_hash = '' OR "
        f"{_changed(EVENT_COLUMNS)} BEGIN {_refuse('audit_auditevent', 'UPDATE')} END"
    )
    covered = "SELECT 1 FROM audit_auditarchive a WHERE OLD.seq BETWEEN a.first_seq AND a.last_seq"
    t["audit_auditevent_no_delete"] = (
        "CREATE TRIGGER audit_auditevent_no_delete BEFORE DELETE ON audit_auditevent "
        f"WHEN NOT EXISTS ({covered}) BEGIN {_refuse('audit_auditevent', 'DELETE')} END"
    )
    for table in ("audit_checkpoint", "audit_auditarchive"):
        for op in ("UPDATE", "DELETE"):
            t[f"{table}_no_{op.lower()}"] = (
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN {_refuse(table, op)} END"
            )
    t["audit_chainhead_no_delete"] = (
        f"CREATE TRIGGER audit_chainhead_no_delete BEFORE DELETE ON audit_chainhead "
        f"BEGIN {_refuse('audit_chainhead', 'DELETE')} END"
    )
    t["audit_chainhead_forward_only"] = (
        "CREATE TRIGGER audit_chainhead_forward_only BEFORE UPDATE ON audit_chainhead "
        "WHEN NEW.id IS NOT OLD.id OR NEW.seq < OLD.seq OR (NEW.seq = OLD.seq AND NEW.hash IS NOT OLD.hash) "
        f"BEGIN {_refuse('audit_chainhead', 'UPDATE')} END"
    )
    t["keys_keyversion_no_delete"] = (
        f"CREATE TRIGGER keys_keyversion_no_delete BEFORE DELETE ON keys_keyversion "
        f"BEGIN {_refuse('keys_keyversion', 'DELETE')} END"
    )
    t["keys_keyversion_guard"] = (
        "CREATE TRIGGER keys_keyversion_guard BEFORE UPDATE ON keys_keyversion "
        f"WHEN {_changed(KEY_FIXED_COLUMNS)} OR (NEW.handle IS NOT OLD.handle AND NEW.handle != '') OR "
        "(NEW.status IS NOT OLD.status AND NOT ((OLD.status = 'active' AND NEW.status IN ('retiring', 'retired')) "
        "OR (OLD.status = 'retiring' AND NEW.status = 'retired'))) "
        f"BEGIN {_refuse('keys_keyversion', 'UPDATE')} END"
    )
    return t


def _tables_present(schema_editor: Any) -> set[str]:
    return set(schema_editor.connection.introspection.table_names())


def install(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    present = _tables_present(schema_editor)
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION, None)  # None: the % in RAISE are not query placeholders
        for table, when in PG_TRIGGERS.items():
            if table in present:
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
                schema_editor.execute(
                    f"CREATE TRIGGER {table}_append_only {when} ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION omnicare_audit_append_only()"
                )
    elif vendor == "sqlite":
        for name, sql in sqlite_triggers().items():
            table = name.split("_no_")[0].split("_forward")[0].split("_guard")[0]
            if table in present:
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
                schema_editor.execute(sql)


def uninstall(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    present = _tables_present(schema_editor)
    if vendor == "postgresql":
        for table in PG_TRIGGERS:
            if table in present:
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    elif vendor == "sqlite":
        for name in sqlite_triggers():
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def uninstall_v1(apps: Any, schema_editor: Any) -> None:
    """Drop 0002's triggers before altering the columns (re-installed, wider, at the end of 0003)."""
    uninstall(schema_editor)


def sqlite_flush_wrap(statements: list[str]) -> list[str]:
    """``manage.py flush`` (and the test runner) empties every table: on SQLite lift the triggers around it."""
    names = sqlite_triggers()
    return [f"DROP TRIGGER IF EXISTS {n}" for n in names] + list(statements) + list(names.values())


#: What the application role may do on the audit tables (everything else: SELECT, INSERT, UPDATE, DELETE).
APP_GRANTS = {
    # INSERT by requests; the sequencer's one-time fill of three columns (the trigger checks the rest);
    # DELETE only where a signed archive covers the row (trigger) - the retention job.
    "audit_auditevent": ["SELECT", "INSERT", "UPDATE (seq, prev_hash, hash)", "DELETE"],
    "audit_checkpoint": ["SELECT", "INSERT"],
    "audit_auditarchive": ["SELECT", "INSERT"],
    "audit_chainhead": ["SELECT", "INSERT", "UPDATE"],  # forward only (trigger)
    "keys_keyversion": ["SELECT", "INSERT", "UPDATE (status, rotated, retired, handle)"],  # trigger-checked
}


def app_role_sql(*, role: str, tables: list[str], database: str) -> list[str]:
    """The statements that make ``role`` a non-owner application role with :data:`APP_GRANTS`."""
    if not role.replace("_", "").isalnum():
        raise ValueError("role: letters, digits and _ only")
    q = f'"{role}"'
    exists = f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"  # noqa: S608 - checked identifier
    out = [
        f"DO $$ BEGIN IF NOT EXISTS ({exists}) THEN "
        f"CREATE ROLE {q} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS; END IF; END $$",
        f"ALTER ROLE {q} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
        f'GRANT CONNECT ON DATABASE "{database}" TO {q}',
        f"GRANT USAGE ON SCHEMA public TO {q}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {q}",
    ]
    for table in sorted(tables):
        out.append(f'REVOKE ALL ON TABLE "{table}" FROM {q}')
        for grant in APP_GRANTS.get(table, ["SELECT", "INSERT", "UPDATE", "DELETE"]):
            out.append(f'GRANT {grant} ON TABLE "{table}" TO {q}')
    return out
