"""Lock-free audit writes: ``seq``/``prev_hash``/``hash`` are filled later by the sequencer; triggers everywhere.

Requests insert events with ``seq`` NULL; the sequencer fills ``seq``, ``prev_hash`` and ``hash`` once. The
triggers (PostgreSQL and, new here, SQLite) refuse every other UPDATE, every DELETE of an event no archive
covers, any change to checkpoints and archives, deleting the chain head or moving it backwards.
"""

from django.db import migrations, models

from omnicare.audit import dbguard


def forwards(apps, schema_editor):
    dbguard.install(schema_editor)


def backwards(apps, schema_editor):
    dbguard.uninstall(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_triggers"), ("keys", "0001_initial")]
    operations = [
        migrations.RunPython(dbguard.uninstall_v1, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent", name="seq",
            field=models.BigIntegerField(blank=True, help_text="Position in the chain, 1, 2, 3, ...", null=True,
                                         unique=True),
        ),
        migrations.AlterField(model_name="auditevent", name="prev_hash",
                              field=models.CharField(blank=True, default="", max_length=64)),
        migrations.AlterField(model_name="auditevent", name="hash",
                              field=models.CharField(blank=True, default="", max_length=64)),
        migrations.AlterModelOptions(name="auditevent", options={"ordering": ["id"]}),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(condition=models.Q(("seq__isnull", True)), fields=["id"], name="audit_unsequenced_idx"),
        ),
        migrations.RunPython(forwards, backwards),
    ]
