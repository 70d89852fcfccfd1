"""Devices a user has registered for sync (the server tracks their last mutation and pull)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from omnicare.access.services import (
    DeviceRevoked,
    device_id_check,
    device_id_ever_revoked,
)

from .cursor import User
from .models import Device

# ---------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------


def device_registered(*, user: User, device_id: str) -> bool:
    return Device.objects.filter(user=user, device_id=device_id).exists()


def device_register(*, user: User, device_id: str, name: str = "") -> Device:
    """Register (or touch) a device of ``user``; idempotent. A device id that was ever revoked never registers
    again (``DeviceRevoked``: the client wipes)."""
    device_id_check(device_id=device_id)
    if device_id_ever_revoked(device_id=device_id):
        raise DeviceRevoked()
    # In a transaction: on SQLite that is BEGIN IMMEDIATE, which waits for a busy writer instead of failing.
    with transaction.atomic():
        device, created = Device.objects.get_or_create(
            user=user, device_id=device_id, defaults={"name": name[:100]}
        )
        if not created and name and device.name != name[:100]:
            device.name = name[:100]
        device.last_seen = timezone.now()
        device.save()
    return device


def devices_list(*, user: User) -> list[Device]:
    return list(Device.objects.filter(user=user).order_by("created"))


