"""``manage.py new_epoch --reason "…"``: start a new server epoch. Run it after EVERY restore of the database
(docs/RUNBOOK.md §6): devices then re-pull from scratch and re-send what the restored server lacks."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from omnicare.sync.epoch import epoch_new


class Command(BaseCommand):
    help = "Start a new server epoch after restoring the database from a backup (devices re-send what it lacks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", default="restored from a backup (manage.py new_epoch)")

    def handle(self, *args: Any, **options: Any) -> None:
        old, new = epoch_new(reason=options["reason"])
        self.stdout.write(f"server epoch was {old}, is now {new}; devices will re-send what this database lacks")
