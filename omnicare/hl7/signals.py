"""Outbound pharmacy orders: every committed MedicationRequest version queues an RDE^O11 (outbox).

The row is written inside the FHIR write's transaction (``versions_written`` is sent inside it), so the
order and its message commit together; the send is enqueued only after the commit.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from omnicare.fhir.signals import versions_written

from .outbound import order_queue, outbound_enqueue


def on_versions(sender: Any, versions: list[Any], **kwargs: Any) -> None:
    if not getattr(settings, "OMNICARE_HL7_PHARMACY_ENDPOINT", ""):
        return
    orders = [v for v in versions if v.resource_type == "MedicationRequest"]
    if not orders:
        return

    ids = [m.pk for m in (order_queue(version=v) for v in orders) if m is not None]
    if ids:
        transaction.on_commit(lambda: outbound_enqueue(message_ids=ids))


versions_written.connect(on_versions, dispatch_uid="omnicare.hl7.pharmacy_orders", weak=False)
