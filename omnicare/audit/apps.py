from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "omnicare.audit"
    label = "audit"
    verbose_name = "Audit trail"
