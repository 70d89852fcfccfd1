"""The durable HL7 v2 queues: one row per inbound message (written before the ACK) and per outbound one.

``raw`` is the message text and is PHI: the Django admin shows it only to holders of the
``hl7.view_raw_message`` permission, and every display is audited (see admin.py). ``last_error`` never
holds message content (only our own error texts), ``resources`` only ``Type/id`` keys.
"""

from __future__ import annotations

from django.db import models


class InboundMessage(models.Model):
    RECEIVED, PROCESSED, FAILED, DEAD = "received", "processed", "failed", "dead"
    STATES = [(s, s) for s in (RECEIVED, PROCESSED, FAILED, DEAD)]

    sender = models.CharField(max_length=200, help_text="MSH-4 sending facility (MSH-3 when empty)")
    sending_app = models.CharField(max_length=200, blank=True)
    control_id = models.CharField(max_length=200, help_text="MSH-10")
    message_type = models.CharField(max_length=20)  # ORU^R01
    version = models.CharField(max_length=10, blank=True)
    state = models.CharField(max_length=10, choices=STATES, default=RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    ack_code = models.CharField(max_length=2, blank=True)
    ack_sent_at = models.DateTimeField(null=True, blank=True, help_text="when the AA was issued")
    repeats = models.PositiveIntegerField(default=0, help_text="times the same sender + control id came again")
    raw = models.TextField()
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    resources = models.JSONField(default=list, blank=True)  # ["Patient/<id>", ...] written by the mapping
    # Element paths where the feed and an edit made in OmniCare disagreed (OmniCare's value was kept).
    conflicts = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sender", "control_id"], name="hl7_inbound_sender_control")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="hl7_inbound_due")]
        permissions = [("view_raw_message", "Can view raw HL7 message bodies (PHI; audited)")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.message_type} {self.sender}/{self.control_id} ({self.state})"


class OutboundMessage(models.Model):
    QUEUED, PROCESSED, FAILED, DEAD = "queued", "processed", "failed", "dead"
    STATES = [(s, s) for s in (QUEUED, PROCESSED, FAILED, DEAD)]

    endpoint = models.CharField(max_length=200, help_text="host:port of the peer")
    control_id = models.CharField(max_length=200, unique=True)
    message_type = models.CharField(max_length=20)  # RDE^O11
    source = models.CharField(max_length=200, help_text="the resource version it was made from")
    state = models.CharField(max_length=10, choices=STATES, default=QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    ack_code = models.CharField(max_length=2, blank=True)
    ack_received_at = models.DateTimeField(null=True, blank=True)
    raw = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source"], name="hl7_outbound_source")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="hl7_outbound_due")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.message_type} to {self.endpoint} ({self.state})"


class MappedResource(models.Model):
    """What the feed said last about a resource: the merge base for the next message about it.

    An update (A08, a corrected result) is merged three-way: base = this body, ours = the record now
    (with any edits made in OmniCare since), theirs = the new mapping, with ``pyclient.merge`` rules.
    """

    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    body = models.JSONField()
    message = models.ForeignKey(InboundMessage, null=True, on_delete=models.SET_NULL, related_name="+")
    # MSH-7 of that message: an older message arriving later (retry, replay) never overwrites newer data.
    source_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resource_type", "resource_id"], name="hl7_mapped_resource")
        ]

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"
