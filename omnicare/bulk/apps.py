from django.apps import AppConfig


class BulkConfig(AppConfig):
    name = "omnicare.bulk"
    label = "bulk"
    default_auto_field = "django.db.models.BigAutoField"
