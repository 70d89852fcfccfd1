"""Read-only admin views of the FHIR store: the store is written only through the services (history, feed)."""

from __future__ import annotations

from django.contrib import admin

from omnicare.core.admin import ReadOnlyAdmin

from .models import FeedCounter, Resource, ResourceVersion


@admin.register(Resource)
class ResourceAdmin(ReadOnlyAdmin):
    list_display = ("resource_type", "resource_id", "version_id", "last_updated", "deleted")
    list_filter = ("resource_type", "deleted")
    search_fields = ("resource_id",)
    show_full_result_count = False
    exclude = ("body",)  # clinical content is read through FHIR REST (access check + audit), never here


@admin.register(ResourceVersion)
class ResourceVersionAdmin(ReadOnlyAdmin):
    list_display = ("seq", "resource_type", "resource_id", "version_id", "last_updated", "deleted")
    list_filter = ("resource_type", "deleted")
    search_fields = ("resource_id",)
    ordering = ("-seq",)
    show_full_result_count = False
    exclude = ("body", "patient_ids")


@admin.register(FeedCounter)
class FeedCounterAdmin(ReadOnlyAdmin):
    list_display = ("id", "value")
