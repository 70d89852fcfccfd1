"""Sign and publish a new knowledge base or guideline library version (devices fetch it on their next sync)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from omnicare.cds.services import bundle_publish, bundles_ensure
from omnicare.core.errors import ApiError


class Command(BaseCommand):
    help = "Publish a signed bundle: --kind kb|guidelines --file <json> (default: the shipped ones)"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--kind", choices=["kb", "guidelines"])
        parser.add_argument("--file", help="JSON file; its 'version' must be new")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts.get("file"):
            bundles_ensure()
            self.stdout.write("shipped knowledge base and guideline library are published")
            return
        if not opts.get("kind"):
            raise CommandError("--kind is required with --file")
        try:
            data = json.loads(Path(opts["file"]).read_text())
            row = bundle_publish(kind=opts["kind"], data=data)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc}") from exc
        except ApiError as exc:
            raise CommandError(exc.diagnostics) from exc
        self.stdout.write(f"published {row.kind} {row.version} (sha256 {row.sha256[:16]}…, key {row.key_id})")
