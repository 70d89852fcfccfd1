"""Drop the mutation log's own index on ``user_id``: ``sync_mutation_uniq`` (user_id, mutation_id) starts
with the same column, and every pushed mutation maintained one index more than it needed. Only the index is
dropped (the foreign key stays, so no table scan to re-validate it); the model state says ``db_index=False``."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0004_server_epoch_recovery"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="appliedmutation",
                    name="user",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="+", to=settings.AUTH_USER_MODEL),
                ),
            ],
            database_operations=[
                migrations.RunSQL("DROP INDEX IF EXISTS sync_appliedmutation_user_id_029b3d4e",
                                  "CREATE INDEX IF NOT EXISTS sync_appliedmutation_user_id_029b3d4e "
                                  "ON sync_appliedmutation (user_id)"),
            ],
        ),
    ]
