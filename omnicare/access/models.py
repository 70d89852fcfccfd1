"""Users are Django users; API clients authenticate with bearer tokens stored only as hashes."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A bearer token for API clients. Only the SHA-256 of the token is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    device_id = models.CharField(max_length=64, blank=True, default="",
                                 help_text="The device this token syncs for (bound at its first sync contact)")

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"


class EmergencyAccessGrant(models.Model):
    """Break-the-glass: time-limited access to one patient outside the user's care team."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="emergency_grants")
    patient_id = models.CharField(max_length=128, db_index=True)
    reason = models.TextField()
    started = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)
    ended = models.DateTimeField(null=True, blank=True, help_text="Ended early by the user, or expiry recorded")
    end_reason = models.CharField(max_length=40, blank=True)
    device_id = models.CharField(max_length=64, blank=True)
    start_event_seq = models.BigIntegerField(null=True, blank=True, help_text="Audit event of the override start")
    stop_event_seq = models.BigIntegerField(null=True, blank=True, help_text="Audit event of the override stop")

    class Meta:
        ordering = ["-started"]
        indexes = [models.Index(fields=["user", "expires"], name="access_grant_user_exp")]

    def __str__(self) -> str:
        return f"{self.user} -> Patient/{self.patient_id} until {self.expires:%Y-%m-%d %H:%M}"


class DeviceRevocation(models.Model):
    """A device reported lost or stolen: it may not sync again and is told to wipe on next contact.

    Keyed like ``omnicare.sync.models.Device`` (user, client-generated device_id).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="device_revocations")
    device_id = models.CharField(max_length=64)
    revoked = models.DateTimeField()
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=200)
    wipe_told = models.DateTimeField(null=True, blank=True, help_text="First time the device was told to wipe")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "device_id"], name="access_device_revoked_uniq")]

    def __str__(self) -> str:
        return f"{self.device_id} ({self.user}) revoked {self.revoked:%Y-%m-%d}"


class LoginFailure(models.Model):
    """One failed sign-in, kept for throttling (username and client address; no password, ever)."""

    username = models.CharField(max_length=150, db_index=True)
    ip = models.CharField(max_length=45, db_index=True)
    at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.username}@{self.ip} {self.at:%H:%M:%S}"


class MfaEnrollment(models.Model):
    """TOTP (RFC 6238) second factor. The secret is held wrapped by the key service (``totp:<user id>``)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mfa")
    confirmed = models.DateTimeField(null=True, blank=True, help_text="Set once the user proved a first code")
    last_step = models.BigIntegerField(default=0, help_text="Last accepted time step: a code works only once")

    def __str__(self) -> str:
        return f"TOTP for {self.user} ({'confirmed' if self.confirmed else 'pending'})"


class PasswordResetRequired(models.Model):
    """Someone else set this user's password (an administrator's reset): the user must choose a new one at
    the next sign-in before any session or token is issued (``access.services.sign_in``)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="password_reset")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="+")
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user} must choose a new password (reset {self.at:%Y-%m-%d %H:%M})"


