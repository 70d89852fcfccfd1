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


def device_register(*, user: User, device_id: str, name: str = "", touch: bool = True) -> Device:
    """Register (or touch) a device of ``user``; idempotent. A device id that was ever revoked never registers
    again (``DeviceRevoked``: the client wipes). ``touch=False``: the caller sets ``last_seen`` itself later in
    the same transaction (the push), so an existing, unrenamed device costs no UPDATE here."""
    device_id_check(device_id=device_id)
    if device_id_ever_revoked(device_id=device_id):
        raise DeviceRevoked()
    # In a transaction: on SQLite that is BEGIN IMMEDIATE, which waits for a busy writer instead of failing.
    # No savepoint inside a caller's transaction: nothing here is retried after a failure, the request fails.
    with transaction.atomic(savepoint=False):
        device, created = Device.objects.get_or_create(
            user=user, device_id=device_id, defaults={"name": name[:100]}
        )
        renamed = not created and bool(name) and device.name != name[:100]
        if renamed:
            device.name = name[:100]
        if touch or renamed:
            device.last_seen = timezone.now()
            device.save()
    return device


def devices_list(*, user: User) -> list[Device]:
    return list(Device.objects.filter(user=user).order_by("created"))


