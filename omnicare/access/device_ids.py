"""THE device-id rule, for schemas and code alike: 1-64 characters of ``A-Z a-z 0-9 . _ : -``.

``access.services.device_id_check`` applies it where a device id arrives outside a schema (query strings,
WebSocket, service calls); the ninja schemas of every route use :data:`DeviceId` (a body that breaks it is
the same 400 OperationOutcome as any schema error). One pattern, so no route checks by length only.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pyclient.protocol import DEVICE_ID_CHARS, DEVICE_ID_RE  # the rule lives in the protocol (browser too)

__all__ = ["DEVICE_ID_CHARS", "DEVICE_ID_RE", "DeviceId", "OptionalDeviceId"]

_DESCRIPTION = "The device's id: 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-' (a UUID fits)"

DeviceId = Annotated[str, Field(min_length=1, max_length=64, pattern=rf"^{DEVICE_ID_CHARS}$",
                                description=_DESCRIPTION)]
#: The same rule where a device id may be left out ("" = no device, e.g. break-the-glass from a desk).
OptionalDeviceId = Annotated[str, Field(max_length=64, pattern=rf"^(?:{DEVICE_ID_CHARS})?$",
                                        description=_DESCRIPTION + "; empty when not from a device")]
