from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "omnicare.access"
    label = "access"

    def ready(self) -> None:
        # The audit trail records each actor's roles but imports nothing from access (it is the sink every
        # layer writes to): access hands it the role table here, once the app registry is ready (the services
        # import models, which Django allows only after that).
        from omnicare.access.roles import user_roles  # noqa: PLC0415 - the app registry is ready only now
        from omnicare.audit.services import roles_provider_set  # noqa: PLC0415 - the registry is ready only now

        roles_provider_set(user_roles)
        from . import signals  # noqa: F401, PLC0415 - connects the receivers once app registry is ready only now
