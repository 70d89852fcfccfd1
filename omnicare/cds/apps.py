from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class CdsConfig(AppConfig):
    name = "omnicare.cds"
    label = "cds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every written MedicationRequest (sync push, FHIR REST, bundles) is re-checked after commit.
        from omnicare.fhir.signals import versions_written  # noqa: PLC0415 - the app registry is ready only now

        from . import services  # noqa: PLC0415 - the app registry is ready only now

        def on_versions(sender: Any, versions: list[Any], **kwargs: Any) -> None:
            services.orders_written(versions=versions)

        versions_written.connect(on_versions, dispatch_uid="omnicare.cds.recheck", weak=False)
