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
    actions = ["revoke"]

    @admin.action(description="Revoke the selected emergency access grants (ends them now)",
                  permissions=["change"])
    def revoke(self, request: Any, queryset: Any) -> None:
        # Through the service: audited as a stop by this officer, and the grantee's device told at once.
        n = 0
        for grant in queryset.filter(stop_event_seq__isnull=True):
            break_glass_revoke(by=request.user, grant_id=grant.pk)
            n += 1
        self.message_user(request, f"{n} emergency access grant(s) revoked.")

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


# --- Users: no self-escalation, resets force a new password, sign-in through the one service ------------------

from django import forms  # noqa: E402
from django.contrib.admin.forms import AdminAuthenticationForm  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin  # noqa: E402
from django.core.exceptions import PermissionDenied, ValidationError  # noqa: E402
from django.http import HttpResponseRedirect  # noqa: E402

from omnicare.core.errors import ApiError  # noqa: E402

from .models import PasswordResetRequired  # noqa: E402
from .services import break_glass_revoke, device_revoke, password_reset_by_admin, sign_in_check  # noqa: E402

User = get_user_model()
#: Only a superuser may set these (on anyone); nobody edits their own roles or flags here.
PRIVILEGE_FIELDS = ("is_superuser", "is_staff", "user_permissions")


class OmniUserAdmin(DjangoUserAdmin):
    """Django's user admin, minus the escalations found in review (issue 10, item 7):

    * only a superuser may grant superuser or staff status or individual permissions;
    * nobody but a superuser changes their own groups (roles), flags or permissions here;
    * a non-superuser cannot change a superuser's account at all (no password reset into a superuser);
    * a password set here by someone else forces the user to choose a new one at the next sign-in, ends the
      account's sessions and tokens, and is a security event in the audit trail.
    """

    def get_readonly_fields(self, request: Any, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += [f for f in PRIVILEGE_FIELDS if f not in fields]
            if obj is not None and obj.pk == request.user.pk:
                fields += ["groups", "is_active"]
        return fields

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return bool(super().has_change_permission(request, obj))

    def save_model(self, request: Any, obj: Any, form: Any, change: bool) -> None:
        if not request.user.is_superuser:
            if change:
                old = User.objects.get(pk=obj.pk)
                if any(getattr(old, f) != getattr(obj, f) for f in ("is_superuser", "is_staff")):
                    raise PermissionDenied("Only a superuser may grant superuser or staff status")
            elif obj.is_superuser or obj.is_staff:
                raise PermissionDenied("Only a superuser may grant superuser or staff status")
        super().save_model(request, obj, form, change)

    def user_change_password(self, request: Any, id: str, form_url: str = "") -> Any:  # noqa: A002
        target = self.get_object(request, id)
        if target is not None and not self.has_change_permission(request, target):
            raise PermissionDenied
        response = super().user_change_password(request, id, form_url)
        if (request.method == "POST" and isinstance(response, HttpResponseRedirect) and target is not None
                and target.pk != request.user.pk):
            password_reset_by_admin(user=target, by=request.user)
        return response


admin.site.unregister(User)
admin.site.register(User, OmniUserAdmin)


@admin.register(PasswordResetRequired)
class PasswordResetRequiredAdmin(admin.ModelAdmin):
    list_display = ("user", "set_by", "at")
    readonly_fields = ("user", "set_by", "at")

    def has_add_permission(self, request: Any) -> bool:
        return False


class OmniAdminLoginForm(AdminAuthenticationForm):
    """/admin/login/ through ``access.services.sign_in_check`` (throttling, lockout, TOTP, audit)."""

    code = forms.CharField(label="Verification code", required=False, max_length=16,
                           widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}))
    new_password = forms.CharField(label="New password (after a reset)", required=False, max_length=4096,
                                   strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        password = self.cleaned_data.get("password") or ""
        try:
            user = sign_in_check(request=self.request, username=username, password=password,
                                 code=self.cleaned_data.get("code") or "",
                                 new_password=self.cleaned_data.get("new_password") or "")
        except ApiError as exc:
            raise ValidationError(exc.diagnostics, code=exc.code) from None
        self.user_cache = user
        self.confirm_login_allowed(user)  # staff only, as Django's admin requires
        return self.cleaned_data


admin.site.login_form = OmniAdminLoginForm
admin.site.login_template = "omnicare/admin_login.html"
