"""Admin views of sync state: conflicts (open first), devices, the mutation log, snapshots, push jobs.

Read-only: every change goes through the sync services (resolution through the API records who and how).
No page shows clinical content: a conflict's base/ours/theirs bodies and field details, mutation results,
push-job requests and snapshot data are excluded (issue 10: the admin is not an audited path). Clinicians read
conflicts through the API (author or scope, audited).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import AppliedMutation, Conflict, Device, PushJob, Snapshot


class ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conflict)
class ConflictAdmin(ReadOnly):
    list_display = (
        "id",
        "status",
        "resource_type",
        "resource_id",
        "author",
        "device_id",
        "created",
        "resolution",
        "resolved_by",
        "resolved_at",
    )
    list_filter = ("status", "resource_type", "resolution")
    search_fields = ("resource_id", "author__username", "device_id", "mutation_id")
    ordering = ("status", "-created")  # "open" sorts before "resolved": open conflicts first
    exclude = ("base", "ours", "theirs", "details", "paths", "patient_ids")


@admin.register(Device)
class DeviceAdmin(ReadOnly):
    list_display = ("device_id", "user", "name", "created", "last_seen", "last_mutation_id", "last_pull_seq",
                    "platform", "storage_budget_bytes")
    search_fields = ("device_id", "user__username", "name")
    # The storage budget (issue 13) is the one thing an administrator sets here; everything else stays read-only.
    fields = ("device_id", "user", "name", "created", "last_seen", "last_mutation_id", "last_pull_seq",
              "platform", "storage_budget_bytes")
    readonly_fields = ("device_id", "user", "name", "created", "last_seen", "last_mutation_id", "last_pull_seq")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser or request.user.has_perm("sync.change_device"))


@admin.register(AppliedMutation)
class AppliedMutationAdmin(ReadOnly):
    list_display = ("mutation_id", "user", "device_id", "status", "resource_type", "resource_id", "created")
    list_filter = ("status", "resource_type")
    search_fields = ("mutation_id", "device_id", "user__username")
    exclude = ("result",)


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnly):
    list_display = ("id", "user", "device_id", "status", "seq", "count", "size", "created", "finished")
    exclude = ("data", "cursor")


@admin.register(PushJob)
class PushJobAdmin(ReadOnly):
    list_display = ("id", "user", "device_id", "status", "progress", "total", "attempts", "created", "finished")
    list_filter = ("status",)
    exclude = ("request", "result")
