"""Extension points of the FHIR store for the apps built on it (issue 11 item 9: they import fhir, never the
other way round). Each app registers in its ``AppConfig.ready()``; without a registration the store does
nothing more than store.

* a **write hook** per resource type: called by the FHIR store (``repository.FhirStore``) after a single REST
  create/update of a live resource of that type, INSIDE the write's transaction, with the writing user and the
  stored body; an ``ApiError`` it raises refuses the write (nothing is stored). The bulk, sync and Bundle
  paths do not call it (the ``versions_written`` signal is for what every write path must notify);
* a **capability extension** per resource type: a function returning the ``extension`` list of that type's
  entry in the CapabilityStatement (``capability.capability_statement``).

Both are keyed by resource type and replace an earlier registration under the same key (``ready()`` may run
more than once in a test process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WriteHook = Callable[..., None]  # (*, user, resource: dict) -> None
CapabilityExtensions = Callable[[], list[dict[str, Any]]]

_write_hooks: dict[tuple[str, str], WriteHook] = {}
_capability: dict[tuple[str, str], CapabilityExtensions] = {}


def write_hook_register(resource_type: str, hook: WriteHook, *, key: str) -> None:
    """Call ``hook(user=..., resource=...)`` on each single REST write of a live ``resource_type`` (``key`` names
    the registrant, e.g. its app)."""
    _write_hooks[(resource_type, key)] = hook


def write_hooks(resource_type: str) -> list[WriteHook]:
    return [h for (rt, _), h in _write_hooks.items() if rt == resource_type]


def capability_extensions_register(resource_type: str, extensions: CapabilityExtensions, *, key: str) -> None:
    """Add ``extensions()`` to the ``extension`` list of ``resource_type`` in the CapabilityStatement."""
    _capability[(resource_type, key)] = extensions


def capability_extensions(resource_type: str) -> list[CapabilityExtensions] | None:
    """The registered contributions for ``resource_type`` (None when there is none: the entry has no extension)."""
    found = [f for (rt, _), f in _capability.items() if rt == resource_type]
    return found or None
