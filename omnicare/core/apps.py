from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "omnicare.core"
    label = "core"
