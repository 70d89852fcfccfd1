"""``category`` keeps one plain index: ``db_index=True`` on a CharField also made a ``varchar_pattern_ops``
index for LIKE on PostgreSQL, which nothing asks, and every audited request maintained it. Only indexes
change (no table rewrite; on SQLite there was no second index)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_lock_free_sequencer")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="category",
                    field=models.CharField(default="access", max_length=10),
                ),
            ],
            database_operations=[
                migrations.RunSQL("DROP INDEX IF EXISTS audit_auditevent_category_df8f42f1_like", migrations.RunSQL.noop),
                migrations.RunSQL("DROP INDEX IF EXISTS audit_auditevent_category_df8f42f1",
                                  "CREATE INDEX IF NOT EXISTS audit_auditevent_category_df8f42f1 "
                                  "ON audit_auditevent (category)"),
            ],
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["category"], name="audit_category_idx"),
        ),
    ]
