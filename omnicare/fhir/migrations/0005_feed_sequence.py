"""The change feed's positions come from a sequence on PostgreSQL (no row lock held through COMMIT; a pull
stops at the snapshot horizon instead: ``omnicare.fhir.services._feed_seal`` and :func:`feed_horizon`).

Additive: the sequence starts past every position already handed out (the counter row and the table), so
existing cursors keep their meaning. ``CACHE 1`` (the default, stated because the proof needs it): values are
handed out in the order ``nextval`` is called across all sessions. SQLite keeps the counter row. Stop every
server of the previous release before migrating: one of them would still take positions from the counter.
"""

from django.db import migrations


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE SEQUENCE IF NOT EXISTS fhir_feed_seq MINVALUE 1 CACHE 1")
    schema_editor.execute(
        "SELECT setval('fhir_feed_seq', greatest(1, "
        "(SELECT coalesce(max(value), 0) FROM fhir_feedcounter), "
        "(SELECT coalesce(max(seq), 0) FROM fhir_resourceversion)), "
        "(SELECT coalesce(max(value), 0) FROM fhir_feedcounter) > 0 "
        "OR (SELECT coalesce(max(seq), 0) FROM fhir_resourceversion) > 0)"
    )


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    # Hand the counter row the positions the sequence gave out, so the previous release continues after them.
    schema_editor.execute(
        "INSERT INTO fhir_feedcounter (id, value) VALUES (1, (SELECT coalesce(max(seq), 0) FROM fhir_resourceversion)) "
        "ON CONFLICT (id) DO UPDATE SET value = greatest(fhir_feedcounter.value, excluded.value)"
    )
    schema_editor.execute("DROP SEQUENCE IF EXISTS fhir_feed_seq")


class Migration(migrations.Migration):
    dependencies = [("fhir", "0004_version_author")]
    operations = [migrations.RunPython(forwards, backwards)]
