"""One device-id rule on every route: the schemas and access.services.device_id_check agree."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any

import pydantic
import pytest
from ninja import Schema
from pydantic import TypeAdapter, ValidationError

import omnicare
from omnicare.access.device_ids import DeviceId, OptionalDeviceId
from omnicare.access.services import device_id_check
from omnicare.core.errors import BadRequest

CASES = ["tablet-1", "3f2b0c9e-1d2a-4c1e-9a57-1b2c3d4e5f60", "a:b.c_d", "x" * 64,
         "", "x" * 65, "bad id", "tab\n", "émile", "a/b"]


def _schema_classes() -> list[type[Schema]]:
    for mod in pkgutil.walk_packages(omnicare.__path__, "omnicare."):
        if mod.name.rsplit(".", 1)[-1] in ("api", "security_api"):
            importlib.import_module(mod.name)
    out: list[type[Schema]] = []
    todo = list(Schema.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("omnicare.") and "deviceId" in cls.model_fields and not cls.__name__.endswith("Out"):
            out.append(cls)
    return out


def _accepted(check: Any, value: str) -> bool:
    try:
        check(value)
    except (ValidationError, BadRequest):
        return False
    return True


@pytest.mark.parametrize("value", CASES)
def test_the_schema_type_and_the_service_check_agree(value: str) -> None:
    assert _accepted(TypeAdapter(DeviceId).validate_python, value) == _accepted(
        lambda v: device_id_check(device_id=v), value)
    assert _accepted(TypeAdapter(OptionalDeviceId).validate_python, value) == (
        value == "" or _accepted(TypeAdapter(DeviceId).validate_python, value))


def test_every_route_schema_with_a_device_id_uses_the_one_rule() -> None:
    classes = _schema_classes()
    assert len(classes) >= 5  # registration, snapshots, audit uploads, revocation, PIN reports, verify, ...
    for cls in classes:
        field = cls.model_fields["deviceId"]
        check = TypeAdapter(Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
                            ).validate_python
        for value in CASES:
            if value == "" and field.default == "":
                continue  # may be left out (break-the-glass from a desk)
            assert _accepted(check, value) == _accepted(lambda v: device_id_check(device_id=v), value), (cls, value)


@pytest.mark.parametrize("value", CASES)
def test_the_telemetry_report_and_the_ops_schema_use_the_same_rule(value: str) -> None:
    """The client-generated ids of a telemetry report (checked by pyclient in the browser and again on the
    server) and the ops API's schema accept exactly what the device-id rule accepts (both once spelled their
    own pattern; pyclient's took a trailing newline)."""
    from omnicare.ops.api import ID
    from pyclient import telemetry

    service = _accepted(lambda v: device_id_check(device_id=v), value)
    assert bool(telemetry._ID_RE.match(value)) == service
    assert _accepted(TypeAdapter(Annotated[str, pydantic.Field(pattern=ID)]).validate_python, value) == service
