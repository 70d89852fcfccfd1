"""Read-only admin views of the audit trail (nothing here can change it)."""

from django.contrib import admin

from omnicare.core.admin import ReadOnlyAdmin

from .models import AuditArchive, AuditEvent, Checkpoint


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("seq", "received_at", "category", "username", "action", "resource_type", "resource_id",
                    "outcome", "purpose", "device_id")
    list_filter = ("category", "action", "outcome", "purpose")
    search_fields = ("username", "resource_id", "device_id")


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ("tree_size", "created_at", "merkle_root", "key_id")


@admin.register(AuditArchive)
class AuditArchiveAdmin(ReadOnlyAdmin):
    list_display = ("first_seq", "last_seq", "count", "oldest", "newest", "created_at", "key_id")
    exclude = ("blob",)
