"""Fold new audit events into the dashboard rollups, measure storage, re-evaluate alerts (the beat job)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from omnicare.ops import services


class Command(BaseCommand):
    help = "Refresh the operations dashboard rollups and alerts now."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--storage", action="store_true", help="also re-measure storage by resource type")

    def handle(self, *args: Any, **options: Any) -> None:
        read = 0
        while True:  # catch up completely, one bounded batch at a time
            n = services.audit_rollup_refresh(limit=50_000)
            read += n
            if n < 50_000:
                break
        if options["storage"]:
            services.storage_measure()
        out = services.ops_refresh(limit=0)
        self.stdout.write(f"audit events folded: {read}; active alerts: {out['alerts']}")
