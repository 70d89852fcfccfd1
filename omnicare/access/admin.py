from typing import Any

from django.contrib import admin

from .models import ApiToken, DeviceRevocation, EmergencyAccessGrant, LoginFailure


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "created", "expires", "revoked")
    readonly_fields = ("token_hash", "created")


@admin.register(EmergencyAccessGrant)
class EmergencyAccessGrantAdmin(admin.ModelAdmin):
    """Visible to privacy officers; grants are made only through break-the-glass (so they are always audited)."""

    list_display = ("user", "patient_id", "started", "expires", "ended", "end_reason", "start_event_seq")
    list_filter = ("end_reason",)
    readonly_fields = [f.name for f in EmergencyAccessGrant._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(DeviceRevocation)
class DeviceRevocationAdmin(admin.ModelAdmin):
    list_display = ("device_id", "user", "revoked", "revoked_by", "reason", "wipe_told")
    readonly_fields = ("revoked", "revoked_by", "wipe_told")

    def save_model(self, request: Any, obj: DeviceRevocation, form: Any, change: bool) -> None:
        # Through the service, so the revocation is audited like one made over the API.
        from .services import device_revoke

        if change:
            super().save_model(request, obj, form, change)
            return
        row = device_revoke(owner=obj.user, device_id=obj.device_id, by=request.user, reason=obj.reason)
        obj.pk, obj.revoked, obj.revoked_by = row.pk, row.revoked, row.revoked_by

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False  # un-revoking a lost device is not a thing: register it again under a new id


@admin.register(LoginFailure)
class LoginFailureAdmin(admin.ModelAdmin):
    list_display = ("username", "ip", "at")
