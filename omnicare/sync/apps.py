from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "omnicare.sync"
    label = "sync"

    def ready(self) -> None:
        # WebSocket hints for EVERY write (FHIR REST, bundles, imports), once the store announces its writes.
        # Until ``omnicare.fhir.signals.versions_written`` exists, sync pushes and conflict resolutions
        # announce their own writes (push._announce).
        try:
            from omnicare.fhir.signals import versions_written  # type: ignore[import-not-found]
        except ImportError:
            return
        from . import push

        def on_versions(sender: Any, versions: list[Any], **kwargs: Any) -> None:
            push.announce_versions(versions)

        versions_written.connect(on_versions, dispatch_uid="omnicare.sync.hints", weak=False)
        push.STORE_ANNOUNCES_WRITES = True
