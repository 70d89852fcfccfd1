"""Read-only admin views of the audit trail (nothing here can change it)."""

from typing import Any

from django.contrib import admin

from .models import AuditArchive, AuditEvent, Checkpoint


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


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
