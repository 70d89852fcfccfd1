from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "omnicare.keys"
    label = "keys"
    verbose_name = "Key management"

    def ready(self) -> None:
        from .backends import production_key_check  # noqa: PLC0415 - the app registry is ready only now

        production_key_check()  # DEBUG off: no master key derived from SECRET_KEY, refuse to start
