# Issue 13 item 6: server epochs (the row itself is created on first use, so a flushed test database works).

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sync', '0003_device_budget'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ServerEpoch',
            fields=[
                ('id', models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ('epoch', models.CharField(max_length=32)),
                ('feed_seq', models.BigIntegerField(default=0)),
                ('presented', models.CharField(blank=True, default='', max_length=80)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('reason', models.CharField(blank=True, default='', max_length=200)),
            ],
        ),
        # Issue 13 item 5: recovery files imported by an administrator.
        migrations.CreateModel(
            name='RecoveryImport',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('file_sha256', models.CharField(db_index=True, max_length=64)),
                ('device_id', models.CharField(max_length=64)),
                ('changes', models.PositiveIntegerField(default=0)),
                ('counts', models.JSONField(default=dict)),
                ('author', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('imported_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
        ),
    ]
