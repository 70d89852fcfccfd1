"""``manage.py permissions_doc``: write docs/PERMISSIONS.md from the permission matrix in roles.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from omnicare.access.roles import permissions_markdown


class Command(BaseCommand):
    help = "Render the role x resource x action matrix (omnicare/access/roles.py) as docs/PERMISSIONS.md."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", default=str(Path(settings.BASE_DIR) / "docs" / "PERMISSIONS.md"))
        parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["output"])
        text = permissions_markdown()
        if options["check"]:
            if not path.exists() or path.read_text() != text:
                self.stderr.write(f"{path} is out of date: run manage.py permissions_doc")
                raise SystemExit(1)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.stdout.write(f"wrote {path}")
