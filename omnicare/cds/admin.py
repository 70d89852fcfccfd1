"""Dashboard views of CDS: ids and counts only (no clinical content)."""

from __future__ import annotations

from django.contrib import admin

from .models import CdsClient, KnowledgeBundle, OrderCheck


@admin.register(OrderCheck)
class OrderCheckAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("checked_at", "resource_id", "version_id", "kb_version", "device_kb_version", "cards",
                    "critical", "unacknowledged")
    list_filter = ("kb_version",)
    readonly_fields = list_display + ("patient_id",)

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(KnowledgeBundle)
class KnowledgeBundleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("kind", "version", "sha256", "key_id", "published_at")
    exclude = ("payload", "statement", "signature")
    readonly_fields = ("kind", "version", "sha256", "key_id", "published_at")


@admin.register(CdsClient)
class CdsClientAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "client_id", "active", "created_at")
