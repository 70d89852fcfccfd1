from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "omnicare.subscriptions"
    label = "subscriptions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from omnicare.fhir.signals import versions_written  # noqa: PLC0415 - the app registry is ready only now

        from .services import on_versions  # noqa: PLC0415 - the app registry is ready only now

        versions_written.connect(on_versions, dispatch_uid="omnicare.subscriptions.match", weak=False)
