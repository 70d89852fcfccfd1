"""Admin views of sync state: conflicts (open first), devices, the mutation log, snapshots, push jobs.

Read-only: every change goes through the sync services (resolution through the API records who and how).
No page shows clinical content: a conflict's base/ours/theirs bodies and field details, mutation results,
push-job requests and snapshot data are excluded (issue 10: the admin is not an audited path). Clinicians read
conflicts through the API (author or scope, audited).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from omnicare.core.admin import ReadOnlyAdmin
from pyclient.recovery import MAX_FILE_BYTES, RecoveryFileError

from .models import AppliedMutation, Conflict, Device, PushJob, RecoveryImport, Snapshot
from .recovery import recovery_import


@admin.register(Conflict)
class ConflictAdmin(ReadOnlyAdmin):
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
class DeviceAdmin(ReadOnlyAdmin):
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
class AppliedMutationAdmin(ReadOnlyAdmin):
    list_display = ("mutation_id", "user", "device_id", "status", "resource_type", "resource_id", "created")
    list_filter = ("status", "resource_type")
    search_fields = ("mutation_id", "device_id", "user__username")
    exclude = ("result",)


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "device_id", "status", "seq", "count", "size", "created", "finished")
    exclude = ("data", "cursor")


@admin.register(PushJob)
class PushJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "device_id", "status", "progress", "total", "attempts", "created", "finished")
    list_filter = ("status",)
    exclude = ("request", "result")


class RecoveryFileForm(forms.Form):
    file = forms.FileField(label="Recovery file", help_text="The file a tablet saved with \"Save recovery file\".")


@admin.register(RecoveryImport)
class RecoveryImportAdmin(ReadOnlyAdmin):
    """Imported recovery files (issue 13 item 5). "Import a recovery file" replays one through the normal push
    path as its author and device; the list shows counts only, never clinical content."""

    change_list_template = "admin/sync/recoveryimport_change_list.html"
    list_display = ("created", "author", "device_id", "changes", "counts", "imported_by")
    list_filter = ("created",)
    search_fields = ("device_id", "author__username")

    def get_urls(self) -> list[Any]:
        custom = [path("import/", self.admin_site.admin_view(self.import_view), name="sync_recoveryimport_import")]
        return custom + super().get_urls()

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_superuser and not request.user.has_perm("sync.add_recoveryimport"):
            raise PermissionDenied
        form = RecoveryFileForm(request.POST or None, request.FILES or None)
        status = 200
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                data = upload.read(MAX_FILE_BYTES + 1)
                record = recovery_import(data=data, imported_by=request.user)
            except RecoveryFileError as exc:
                form.add_error("file", f"This file was not imported and nothing was changed: {exc}.")
                status = 400
            else:
                c = record.counts
                self.message_user(request, (
                    f"Imported {record.changes} change(s) from device {record.device_id} by {record.author}: "
                    f"{c.get('applied', 0) + c.get('merged', 0)} saved, {c.get('conflict', 0)} waiting for review "
                    f"as conflicts, {c.get('rejected', 0)} refused. Changes already on the server were not "
                    "applied twice."), messages.SUCCESS)
                return redirect("admin:sync_recoveryimport_changelist")
        elif request.method == "POST":
            status = 400
        ctx = {**self.admin_site.each_context(request), "title": "Import a recovery file", "form": form,
               "opts": self.model._meta}
        return TemplateResponse(request, "admin/sync/recoveryimport_import.html", ctx, status=status)
