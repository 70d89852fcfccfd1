"""Create one Django group per role in omnicare/access/roles.py (role_assign also creates them on demand)."""

from django.db import migrations

ROLE_NAMES = ("physician", "nurse", "pharmacist", "front_desk", "administrator", "auditor")


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_NAMES:
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0002_loginfailure_devicerevocation_emergencyaccessgrant"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
