"""Drop the compartment rows' own index on ``resource_id``: ``fhir_respat_uniq`` (resource_id, patient_id)
starts with the same column, so lookups and the cascade use that one, and every write maintained one index
more than it needed. Only the index is dropped (the foreign key stays as it is, so no table scan to
re-validate it); the model state says ``db_index=False``."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fhir", "0005_feed_sequence")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="resourcepatient",
                    name="resource",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="patients", to="fhir.resource"),
                ),
            ],
            database_operations=[
                migrations.RunSQL("DROP INDEX IF EXISTS fhir_resourcepatient_resource_id_da155133",
                                  "CREATE INDEX IF NOT EXISTS fhir_resourcepatient_resource_id_da155133 "
                                  "ON fhir_resourcepatient (resource_id)"),
            ],
        ),
    ]
