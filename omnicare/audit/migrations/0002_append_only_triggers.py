"""PostgreSQL refuses UPDATE and DELETE on the audit tables, whoever asks (not only the ORM).

The one exception: deleting an event that a signed archive already covers (the 7-year
retention job, which inserts the archive row first in the same transaction). TRUNCATE is
left alone because the test runner flushes tables with it; truncation is what signed
checkpoints and ``audit_verify`` detect. SQLite relies on the model-level refusal.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION omnicare_audit_append_only() RETURNS trigger AS $$
BEGIN
    -- Nested IFs: PL/pgSQL does not promise to short-circuit AND, and only events have a seq.
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent' THEN
        IF EXISTS (SELECT 1 FROM audit_auditarchive a WHERE OLD.seq BETWEEN a.first_seq AND a.last_seq) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'omnicare audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
"""
TABLES = ("audit_auditevent", "audit_checkpoint", "audit_auditarchive")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, None)  # None: the % in RAISE are not query placeholders
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION omnicare_audit_append_only()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS omnicare_audit_append_only()")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
