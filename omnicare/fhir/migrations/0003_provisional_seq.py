"""A sequence for provisional (negative) feed positions: versions are inserted with one and get their real
``seq`` right before COMMIT (see ``omnicare.fhir.services._feed_seal``). PostgreSQL only."""

from django.db import migrations


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE SEQUENCE IF NOT EXISTS fhir_provisional_seq")


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP SEQUENCE IF EXISTS fhir_provisional_seq")


class Migration(migrations.Migration):
    dependencies = [("fhir", "0002_covering_indexes")]
    operations = [migrations.RunPython(forwards, backwards)]
