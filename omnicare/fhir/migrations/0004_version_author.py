"""Who wrote each version (issue 18 item 2: the conflict screen names the author of the change that won)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fhir", "0003_provisional_seq")]
    operations = [
        migrations.AddField(
            model_name="resourceversion",
            name="author",
            field=models.CharField(blank=True, default="", max_length=150),
        ),
    ]
