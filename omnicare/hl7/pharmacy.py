"""Pharmacy interface: RDS^O13 dispenses in (MedicationDispense), RDE^O11 orders out."""

from __future__ import annotations

from typing import Any

from .message import MessageError


def rds(ctx: Any) -> None:
    raise MessageError("RDS^O13 mapping is not available yet", code="200", ack="AR")
