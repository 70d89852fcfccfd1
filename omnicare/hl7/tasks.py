"""Celery tasks of the HL7 interface: map one inbound message; sweep due retries; send outbound."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="omnicare.hl7.process_inbound", acks_late=True)
def process_inbound(message_id: int) -> str:
    from .services import inbound_process

    return inbound_process(message_id=message_id)


@shared_task(name="omnicare.hl7.process_inbound_batch", acks_late=True)
def process_inbound_batch(message_ids: list[int]) -> dict[str, str]:
    """Map these messages (and what else is waiting) in one transaction with a savepoint per message."""
    from .services import inbound_process_batch

    return {str(k): v for k, v in inbound_process_batch(message_ids=list(message_ids)).items()}


@shared_task(name="omnicare.hl7.retry_due")
def retry_due() -> int:
    from .services import inbound_retry_due

    n = inbound_retry_due()
    try:
        from .outbound import outbound_retry_due
    except ImportError:
        return n
    return n + outbound_retry_due()


@shared_task(name="omnicare.hl7.send_outbound", acks_late=True)
def send_outbound(message_id: int) -> str:
    from .outbound import outbound_send

    return outbound_send(message_id=message_id)
