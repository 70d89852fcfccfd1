"""Register a CDS Hooks client (another EHR) with the public JWKS its JWTs are signed with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from omnicare.cds.services import client_register
from omnicare.core.errors import ApiError


class Command(BaseCommand):
    help = "Register or update a CDS Hooks client: --client-id <JWT iss> --name <label> --jwks <file.json>"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--client-id", required=True, help="the 'iss' of the client's JWTs")
        parser.add_argument("--name", required=True)
        parser.add_argument("--jwks", required=True, help='file with {"keys": [public JWKs]}')

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            jwks = json.loads(Path(opts["jwks"]).read_text())
            row = client_register(client_id=opts["client_id"], name=opts["name"], jwks=jwks)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the JWKS file: {exc}") from exc
        except ApiError as exc:
            raise CommandError(exc.diagnostics) from exc
        self.stdout.write(f"registered CDS client {row.client_id} ({len(jwks['keys'])} key(s))")
