"""``python manage.py hl7_listen --host 127.0.0.1 --port 2575``: the HL7 v2 MLLP listener."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from omnicare.hl7.listener import run


class Command(BaseCommand):
    help = "Receive HL7 v2 messages over MLLP; ACK after the durable write; map them to FHIR via Celery."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=getattr(settings, "OMNICARE_HL7_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=getattr(settings, "OMNICARE_HL7_PORT", 2575))
        parser.add_argument("--max-bytes", type=int, default=getattr(settings, "OMNICARE_HL7_MAX_BYTES",
                                                                       16 * 1024 * 1024))
        parser.add_argument("--idle-timeout", type=float,
                            default=getattr(settings, "OMNICARE_HL7_IDLE_SECONDS", 300.0))

    def handle(self, *args: Any, **opts: Any) -> None:
        def ready(port: int) -> None:
            sys.stdout.write(f"HL7 MLLP listener on {opts['host']}:{port}\n")
            sys.stdout.flush()

        run(host=opts["host"], port=opts["port"], ready=ready, max_bytes=opts["max_bytes"],
            idle_timeout=opts["idle_timeout"])
