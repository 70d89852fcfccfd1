"""Admin: the operations dashboard entry (linked from the admin index) and the detail pages alerts link to."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from omnicare.core.admin import ReadOnlyAdmin

from . import services, views
from .models import Alert, Dashboard, DeviceHealth, DeviceReport, VerifyRun


def _aud(request: HttpRequest) -> frozenset[str]:
    return services.dashboard_audiences(user=request.user)


class _ReadOnly(ReadOnlyAdmin):
    """Read-only, and shown only to the audiences of the operations dashboard."""

    audience = services.OPS

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(_aud(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.audience in _aud(request)


@admin.register(Dashboard)
class DashboardAdmin(_ReadOnly):
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(_aud(request))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self._dashboard), name="ops_dashboard_changelist"),
            path("panels/", wrap(self._panels), name="ops_dashboard_panels"),
        ]

    def _dashboard(self, request: HttpRequest) -> HttpResponse:
        if not _aud(request):
            raise PermissionDenied
        response = views.dashboard(request)
        response.context_data = {**self.admin_site.each_context(request), **(response.context_data or {})}
        return response

    def _panels(self, request: HttpRequest) -> HttpResponse:
        if not _aud(request):
            raise PermissionDenied
        return views.panels(request)


@admin.register(DeviceHealth)
class DeviceHealthAdmin(_ReadOnly):
    list_display = ("device_id", "user", "last_report", "app_version", "pending", "conflicted", "rejected",
                    "oldest_pending_at", "last_sync_at", "storage_used", "storage_persisted")
    search_fields = ("device_id", "user__username")
    list_filter = ("app_version", "storage_persisted")

    list_select_related = ("user",)


@admin.register(DeviceReport)
class DeviceReportAdmin(_ReadOnly):
    list_display = ("device_id", "user", "received", "reason", "pending", "conflicted", "failed_unlocks",
                    "storage_used")
    search_fields = ("device_id", "user__username")
    date_hierarchy = "received"


@admin.register(VerifyRun)
class VerifyRunAdmin(_ReadOnly):
    audience = services.SECURITY
    list_display = ("started", "finished", "ok", "events")


@admin.register(Alert)
class AlertAdmin(_ReadOnly):
    list_display = ("message", "kind", "audience", "first_seen", "last_seen", "cleared")
    list_filter = ("kind", "audience")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(_aud(request))

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).filter(audience__in=_aud(request))
