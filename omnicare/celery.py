"""Celery app. Broker = REDIS_URL; without it tasks run eagerly (see settings)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")

app = Celery("omnicare")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
