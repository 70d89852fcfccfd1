from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "omnicare.ops"
    label = "ops"
    verbose_name = "Operations and security"

    def ready(self) -> None:
        from . import signals  # noqa: F401, PLC0415 - Celery task failure counter; the app registry is ready only now
