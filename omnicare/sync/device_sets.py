"""Device sets (issue 13, item 1): what a device holds within its storage budget.

The server offers (``GET /api/sync/device-set``) the user's scope ranked by the prefetch model
(``omnicare.prefetch.services.prefetch_rank``); the device applies ``pyclient.device_set.plan_device_set``
(pins, budget) and tells the server its choice (``POST /api/sync/device-set``), which is stored intersected
with the scope and audited as ONE ``device-set`` event (a disclosure to a device of that patient set,
distinct from ``read`` chart opens). From then on the pull delivers the scope minus the patients the device
declined (:func:`device_scope_keys`): the existing fill/drop machinery downloads what was added and drops
what left. The scope is recomputed at every pull, so a chosen set never widens it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from omnicare.audit.services import audit_record
from omnicare.core.errors import BadRequest, Forbidden
from omnicare.prefetch.services import prefetch_rank
from pyclient.device_set import DeviceSetOffer

from . import scope as scopes
from .models import Device, DeviceHolding

#: The most patients one device set may name (a 500 MB budget holds a few thousand charts).
MAX_DEVICE_SET = 50_000


def _device(*, user: Any, device_id: str | None) -> Device:
    if not device_id:
        raise BadRequest("deviceId is required", expression=["deviceId"])
    device = Device.objects.filter(user=user, device_id=device_id).first()
    if device is None:
        raise Forbidden("This device is not registered: POST /api/sync/devices first")
    return device


def device_set_offer(*, user: Any, device_id: str | None, now: datetime | None = None) -> DeviceSetOffer:
    """The ranked scope and budget for this device (ids, reasons, sizes, probabilities; no clinical content)."""
    return prefetch_rank(user=user, device=_device(user=user, device_id=device_id), now=now)


def device_set_choose(
    *, user: Any, device_id: str | None, patient_ids: Iterable[str], model_version: str = "",
    pinned: int | None = None, now: datetime | None = None,
) -> list[str]:
    """Store the device's chosen set, cut to the user's scope; returns what was stored. Audited as one
    ``device-set`` disclosure event naming every patient of the set."""
    device = _device(user=user, device_id=device_id)
    wanted = {str(p) for p in patient_ids if isinstance(p, str) and p}
    if len(wanted) > MAX_DEVICE_SET:
        raise BadRequest(f"At most {MAX_DEVICE_SET} patients per device set", expression=["patients"])
    allowed = scopes.scope_patient_ids(user=user)
    kept = sorted(wanted & allowed)
    with transaction.atomic():
        DeviceHolding.objects.update_or_create(
            device=device,
            defaults={"patient_ids": kept, "declined": sorted(allowed - wanted), "model_version": model_version[:64],
                      "updated": now or timezone.now()},
        )
        audit_record(
            user=user, action="device-set", resource_type="Patient", patient_ids=kept, device_id=device.device_id,
            detail={"patients": len(kept), "refused": len(wanted) - len(kept), "modelVersion": model_version[:64],
                    **({"pinned": int(pinned)} if isinstance(pinned, int) else {})},
        )
    return kept


def device_scope_keys(*, user: Any, device_id: str | None) -> frozenset[str]:
    """What a pull delivers to this device: the scope minus the patients the device declined when it last
    chose its set (a patient new to the scope arrives at once; the device's next plan may evict it)."""
    keys = scopes.scope_keys(user=user)
    if not device_id:
        return keys
    row = DeviceHolding.objects.filter(device__user=user, device__device_id=device_id).values_list(
        "declined", flat=True).first()
    if not row:
        return keys
    declined = {f"Patient/{p}" for p in row}
    return frozenset(k for k in keys if k not in declined)
