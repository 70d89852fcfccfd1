"""Rotate a server key now: ``manage.py keys_rotate kek`` / ``audit-signing`` / no argument = only what is due (what the beat job runs)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from omnicare.keys import services


class Command(BaseCommand):
    help = "Rotate server keys on demand and re-wrap secrets held under old key-encryption keys."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("purpose", nargs="?", choices=services.PURPOSES)
        parser.add_argument("--reason", default="on demand (manage.py keys_rotate)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["purpose"]:
            key = services.rotate(purpose=options["purpose"], reason=options["reason"])
            self.stdout.write(f"rotated: {key.key_id} is now active")
        # Always finish with the scheduled pass: it rotates what is due and re-wraps under the new KEK.
        result = services.rotate_due()
        self.stdout.write(f"rotated {result['rotated']} due key(s); re-wrapped {result['rewrapped']} secret(s)")
