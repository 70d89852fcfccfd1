from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "omnicare.keys"
    label = "keys"
    verbose_name = "Key management"

    def ready(self) -> None:
        from .backends import production_key_check

        production_key_check()  # DEBUG off: no master key derived from SECRET_KEY, refuse to start
