# Issue 13 item 6: server epochs (the row itself is created on first use, so a flushed test database works).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sync', '0002_push_job_chunks'),
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
    ]
