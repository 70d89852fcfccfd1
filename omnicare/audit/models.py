"""The audit trail: an append-only, hash-chained log with signed Merkle checkpoints and signed archives.

Writing is lock-free (Trillian's design): a request inserts its ``AuditEvent`` with ``seq``, ``prev_hash``
and ``hash`` empty, in its own transaction, touching no shared row. The sequencer (``services.audit_sequence``:
a Celery beat task, the ``audit_sequencer`` leader loop, or inline after commit in the embedded default) is
the only writer of ``ChainHead``: it takes the unsequenced rows in id order, gives each its ``seq``, chains
its hash, extends the Merkle tree and signs checkpoints.

After that nothing changes: the model refuses updates and deletes, and triggers on PostgreSQL and SQLite
refuse every UPDATE except the sequencer's one-time fill of ``seq``/``prev_hash``/``hash`` (all other
columns unchanged), and every DELETE except of events a signed archive covers (the retention job).
On PostgreSQL the app also runs as a role that does not own these tables (``manage.py audit_db_roles``).
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class AppendOnlyError(Exception):
    """Raised on any attempt to change or delete an audit record through the ORM."""


class AppendOnlyQuerySet(models.QuerySet):  # type: ignore[type-arg]
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records are append-only")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit records are append-only")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} is append-only")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{type(self).__name__} is append-only")


class AuditEvent(AppendOnlyModel):
    """One access to patient data (or one security event), in FHIR AuditEvent terms."""

    CATEGORY_ACCESS = "access"  # rest/sync/device read, search, create, update, delete
    CATEGORY_SECURITY = "security"  # break-the-glass, login, device revoked, sequence gaps

    # NULL until the sequencer places the event in the chain (then set once, never changed).
    seq = models.BigIntegerField(unique=True, null=True, blank=True, help_text="Position in the chain, 1, 2, 3, ...")
    # Indexed in Meta (plain btree): db_index on a CharField adds a second, varchar_pattern_ops index for LIKE,
    # which nothing here asks and every audited request had to maintain.
    category = models.CharField(max_length=10, default=CATEGORY_ACCESS)
    action = models.CharField(max_length=40)
    outcome = models.CharField(max_length=10, help_text="success, denied, failure")
    purpose = models.CharField(max_length=20, default="TREAT")
    user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    username = models.CharField(max_length=150, blank=True)
    roles = models.JSONField(default=list)
    resource_type = models.CharField(max_length=64, blank=True)
    resource_id = models.CharField(max_length=128, blank=True)
    patient_ids = models.JSONField(default=list)
    # NULL, not "": server events have no device, and the hash and the unique constraint rely on that.
    device_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    device_seq = models.BigIntegerField(null=True, blank=True)
    device_time = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(db_index=True)
    detail = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["id"]
        constraints = [
            # A device's event n (per user profile on the device) is stored once: re-sent batches are idempotent.
            models.UniqueConstraint(
                fields=["user_id", "device_id", "device_seq"], condition=models.Q(device_seq__isnull=False),
                name="audit_unique_device_seq",
            )
        ]
        indexes = [
            models.Index(fields=["category"], name="audit_category_idx"),
            models.Index(fields=["device_id", "user_id", "device_seq"], name="audit_device_seq_idx"),
            # The sequencer's queue: only the (few) rows not yet in the chain.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="audit_unsequenced_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq or '-'} {self.username} {self.action} {self.resource_type}/{self.resource_id} {self.outcome}"


class ChainHead(models.Model):
    """The chain's tip (seq, hash) and the Merkle compact range. Only the sequencer locks and moves it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    frontier = models.JSONField(default=list)
    updated = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"head #{self.seq} {self.hash[:12]}"


class Checkpoint(AppendOnlyModel):
    """A signed statement: 'the log had ``tree_size`` events, Merkle root R, last hash H'."""

    tree_size = models.BigIntegerField(db_index=True)
    merkle_root = models.CharField(max_length=64)
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    key_id = models.CharField(max_length=40)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["tree_size", "id"]

    def __str__(self) -> str:
        return f"checkpoint size={self.tree_size} root={self.merkle_root[:12]}"


class AuditArchive(AppendOnlyModel):
    """Events past the retention window: zlib-compressed canonical JSON lines, signed."""

    first_seq = models.BigIntegerField(unique=True)
    last_seq = models.BigIntegerField(unique=True)
    count = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64, help_text="prev_hash of the first archived event")
    last_hash = models.CharField(max_length=64)
    oldest = models.DateTimeField()
    newest = models.DateTimeField()
    created_at = models.DateTimeField()
    blob = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    key_id = models.CharField(max_length=40)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["first_seq"]

    def __str__(self) -> str:
        return f"archive #{self.first_seq}..#{self.last_seq} ({self.count} events)"
