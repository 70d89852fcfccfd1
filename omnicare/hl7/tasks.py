"""Celery tasks of the HL7 interface: map one inbound message; sweep due retries; send outbound."""

from __future__ import annotations

from celery import shared_task

from .outbound import outbound_retry_due, outbound_send
from .services import inbound_process, inbound_process_batch, inbound_retry_due


@shared_task(name="omnicare.hl7.process_inbound", acks_late=True)
def process_inbound(message_id: int) -> str:
    return inbound_process(message_id=message_id)


@shared_task(name="omnicare.hl7.process_inbound_batch", acks_late=True)
def process_inbound_batch(message_ids: list[int]) -> dict[str, str]:
    """Map these messages (and what else is waiting) in one transaction with a savepoint per message."""
    return {str(k): v for k, v in inbound_process_batch(message_ids=list(message_ids)).items()}


@shared_task(name="omnicare.hl7.retry_due")
def retry_due() -> int:
    return inbound_retry_due() + outbound_retry_due()


@shared_task(name="omnicare.hl7.send_outbound", acks_late=True)
def send_outbound(message_id: int) -> str:
    return outbound_send(message_id=message_id)
