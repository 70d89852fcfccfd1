"""Server-side state of FHIR Subscriptions (R4 Subscriptions Backport): who owns each Subscription (whose scope
filters its notifications), how far in the change feed it has been matched, and its numbered events, kept so a
subscriber that missed notifications catches up with ``$events``."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SubscriptionOwner(models.Model):
    subscription_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    events = models.BigIntegerField(default=0)  # eventsSinceSubscriptionStart
    matched_seq = models.BigIntegerField(default=0)  # change-feed position matched up to
    ws_bound = models.BooleanField(default=False)  # a websocket has bound with a token (websocket channel)
    last_sent = models.DateTimeField(null=True, blank=True)  # last notification or heartbeat delivered (rest-hook)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Subscription/{self.subscription_id} ({self.events} events)"


class SubscriptionEvent(models.Model):
    PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

    subscription_id = models.CharField(max_length=64)
    number = models.BigIntegerField()
    seq = models.BigIntegerField()
    resource_type = models.CharField(max_length=64)
    resource_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    patient_ids = models.JSONField(default=list)
    status = models.CharField(max_length=10, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription_id", "number"], name="sub_event_number"),
            models.UniqueConstraint(fields=["subscription_id", "seq"], name="sub_event_seq"),
        ]

    def __str__(self) -> str:
        return f"Subscription/{self.subscription_id} event {self.number} {self.status}"
