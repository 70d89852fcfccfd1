from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "omnicare.subscriptions"
    label = "subscriptions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Subscriptions builds on the FHIR store, which imports nothing of it: it plugs in here (issue 11 item 9).
        from omnicare.fhir import hooks  # noqa: PLC0415 - the app registry is ready only now
        from omnicare.fhir.signals import versions_written  # noqa: PLC0415 - the app registry is ready only now

        from . import topics  # noqa: PLC0415 - the app registry is ready only now
        from .services import on_versions, subscription_registered  # noqa: PLC0415 - the registry is ready only now

        versions_written.connect(on_versions, dispatch_uid="omnicare.subscriptions.match", weak=False)
        # A Subscription written through REST is its author's (an unusable one is a 400, not written).
        hooks.write_hook_register("Subscription", subscription_registered, key=self.name)
        hooks.capability_extensions_register("Subscription", topics.capability_extensions, key=self.name)
