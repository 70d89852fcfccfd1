"""Verify the audit chain now and keep the verdict for the dashboard (the beat job does this every 6 h)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from omnicare.ops import services


class Command(BaseCommand):
    help = "Verify the audit chain and record the result on the operations dashboard."

    def handle(self, *args: Any, **options: Any) -> None:
        run = services.verify_run()
        services.alerts_evaluate()
        self.stdout.write(f"{'OK' if run.ok else 'FAILED'}: {run.events} events checked")
        for p in run.problems:
            self.stdout.write(f"  {p}")
