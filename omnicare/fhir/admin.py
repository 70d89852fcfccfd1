"""Read-only admin views of the FHIR store: the store is written only through the services (history, feed)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import FeedCounter, Resource, ResourceVersion


class ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Resource)
class ResourceAdmin(ReadOnly):
    list_display = ("resource_type", "resource_id", "version_id", "last_updated", "deleted")
    list_filter = ("resource_type", "deleted")
    search_fields = ("resource_id",)
    show_full_result_count = False
    exclude = ("body",)  # clinical content is read through FHIR REST (access check + audit), never here


@admin.register(ResourceVersion)
class ResourceVersionAdmin(ReadOnly):
    list_display = ("seq", "resource_type", "resource_id", "version_id", "last_updated", "deleted")
    list_filter = ("resource_type", "deleted")
    search_fields = ("resource_id",)
    ordering = ("-seq",)
    show_full_result_count = False
    exclude = ("body", "patient_ids")


@admin.register(FeedCounter)
class FeedCounterAdmin(ReadOnly):
    list_display = ("id", "value")
