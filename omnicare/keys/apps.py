from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "omnicare.keys"
    label = "keys"
    verbose_name = "Key management"
