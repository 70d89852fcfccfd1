from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "omnicare.sync"
    label = "sync"

    def ready(self) -> None:
        # WebSocket hints for EVERY write (FHIR REST, bundles, imports): the store announces its writes.
        from omnicare.fhir.signals import versions_written  # noqa: PLC0415 - the app registry is ready only now

        from . import push  # noqa: PLC0415 - the app registry is ready only now

        def on_versions(sender: Any, versions: list[Any], **kwargs: Any) -> None:
            push.announce_versions(versions)

        versions_written.connect(on_versions, dispatch_uid="omnicare.sync.hints", weak=False)
        push.STORE_ANNOUNCES_WRITES = True
