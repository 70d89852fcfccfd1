"""``manage.py recovery_import FILE --by ADMIN``: import a tablet's recovery file (the admin page's twin, for
scripts and for an administrator without a browser; docs/RUNBOOK.md §2a). Exit status 1 and a plain reason
when the file cannot be used — nothing is written then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from omnicare.sync.recovery import recovery_import
from pyclient.recovery import MAX_FILE_BYTES, RecoveryFileError


class Command(BaseCommand):
    help = "Import a recovery file: replay a device's unsynced changes as their author (audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--by", required=True, help="username of the administrator importing it")

    def handle(self, *args: Any, **options: Any) -> None:
        admin = get_user_model().objects.filter(username=options["by"]).first()
        if admin is None or not (admin.is_superuser or admin.has_perm("sync.add_recoveryimport")):
            raise CommandError(f"{options['by']!r} may not import recovery files")
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        try:
            record = recovery_import(data=data, imported_by=admin)
        except RecoveryFileError as exc:
            raise CommandError(f"not imported, nothing changed: {exc}") from None
        c = record.counts
        self.stdout.write(
            f"imported {record.changes} change(s) from device {record.device_id} by {record.author}: "
            f"{c.get('applied', 0) + c.get('merged', 0)} saved, {c.get('conflict', 0)} conflict(s) for review, "
            f"{c.get('rejected', 0)} refused")
