"""Server-side key versions and the secrets wrapped under them.

Key material never sits here in the clear: a ``KeyVersion.handle`` is either the
material wrapped by the local master key (local backend) or a label on the HSM
token (PKCS#11 backend). Public keys are kept so old signatures stay verifiable
after the private key is destroyed.
"""

from __future__ import annotations

from django.db import models


class KeyVersion(models.Model):
    PURPOSE_SIGNING = "audit-signing"
    PURPOSE_WRAPPING = "kek"
    PURPOSES = [(PURPOSE_SIGNING, "Audit signing (Ed25519)"), (PURPOSE_WRAPPING, "Key-encryption key (AES-256-GCM)")]

    ACTIVE, RETIRING, RETIRED = "active", "retiring", "retired"
    STATUSES = [(ACTIVE, "active"), (RETIRING, "retiring (re-encryption running)"), (RETIRED, "retired")]

    purpose = models.CharField(max_length=20, choices=PURPOSES)
    version = models.PositiveIntegerField()
    backend = models.CharField(max_length=20)
    handle = models.TextField(help_text="Wrapped material (local) or token object label (pkcs11); empty once destroyed")
    public_key = models.BinaryField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=STATUSES, default=ACTIVE)
    created = models.DateTimeField()
    rotated = models.DateTimeField(null=True, blank=True, help_text="When a newer version replaced it")
    retired = models.DateTimeField(null=True, blank=True, help_text="When its private material was destroyed")
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["purpose", "version"], name="keys_unique_purpose_version"),
            # At most one active key per purpose: rotation swaps them in one transaction.
            models.UniqueConstraint(
                fields=["purpose"], condition=models.Q(status="active"), name="keys_one_active_per_purpose"
            ),
        ]
        ordering = ["purpose", "version"]

    def __str__(self) -> str:
        return f"{self.key_id} ({self.backend}, {self.status})"

    @property
    def key_id(self) -> str:
        return f"{self.purpose}:v{self.version}"


class WrappedSecret(models.Model):
    """A server-held secret (e.g. a blind-index key, an escrowed data key) wrapped under a KEK version."""

    name = models.CharField(max_length=200, unique=True)
    blob = models.BinaryField()
    key_version = models.ForeignKey(KeyVersion, on_delete=models.PROTECT, related_name="secrets")
    updated = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} under {self.key_version.key_id}"
