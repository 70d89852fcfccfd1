from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "omnicare.access"
    label = "access"
