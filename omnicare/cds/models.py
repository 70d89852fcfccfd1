"""CDS rows: registered CDS Hooks clients, seen JWT ids, published signed bundles, server re-check results."""

from __future__ import annotations

from django.db import models


class CdsClient(models.Model):
    """Another EHR that calls our CDS Hooks services with a signed JWT; only its PUBLIC keys are stored."""

    client_id = models.CharField(max_length=255, unique=True, help_text="the JWT 'iss'")
    name = models.CharField(max_length=200)
    jwks = models.JSONField(help_text='{"keys": [public JWKs]}')
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class JwtSeen(models.Model):
    """A CDS Hooks JWT 'jti' already accepted (replay protection until it expires)."""

    client = models.ForeignKey(CdsClient, on_delete=models.CASCADE)
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client", "jti"], name="cds_jwt_once")]

    def __str__(self) -> str:
        return f"jti {self.jti}"


class KnowledgeBundle(models.Model):
    """A signed, versioned bundle the server publishes and devices cache (knowledge base or guidelines)."""

    KB, GUIDELINES = "kb", "guidelines"
    kind = models.CharField(max_length=16, choices=[(KB, "knowledge base"), (GUIDELINES, "guidelines")])
    version = models.CharField(max_length=64)
    sha256 = models.CharField(max_length=64)
    payload = models.BinaryField()
    statement = models.BinaryField(help_text="the signed bytes (kind, version, sha256, time)")
    key_id = models.CharField(max_length=64)
    signature = models.BinaryField()
    published_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "version"], name="cds_bundle_version")]
        ordering = ["kind", "-published_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.version}"


class OrderCheck(models.Model):
    """The server re-check of one MedicationRequest version (ids and counts only: no clinical text)."""

    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    patient_id = models.CharField(max_length=64, blank=True, default="")
    kb_version = models.CharField(max_length=64)
    device_kb_version = models.CharField(max_length=64, blank=True, default="")
    cards = models.PositiveIntegerField(default=0)
    critical = models.PositiveIntegerField(default=0)
    unacknowledged = models.PositiveIntegerField(default=0)
    checked_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["resource_id", "version_id"], name="cds_check_once")]
        ordering = ["-checked_at"]

    def __str__(self) -> str:
        return f"MedicationRequest/{self.resource_id} v{self.version_id}"
