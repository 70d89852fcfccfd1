"""``manage.py audit_sequencer``: the leader loop that chains audit events within a bounded delay.

Requests only insert their events; this loop (or the one-second beat task ``omnicare.audit.sequence``)
gives them their seq, extends the hash chain and Merkle tree, and signs a checkpoint at least every
``OMNICARE_AUDIT_CHECKPOINT_SECONDS`` of activity. Several may run: the chain head lock lets one work
at a time. On SIGTERM/SIGINT it sequences and signs what is left, then exits.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from omnicare.audit import services


class Command(BaseCommand):
    help = "Run the audit sequencer in a loop (chain + checkpoint within --interval seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=0.2, help="seconds between runs (default 0.2)")
        parser.add_argument("--once", action="store_true", help="one run, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = False

        def on_signal(*_: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while True:
            try:
                n = services.audit_sequence()
                if n and options["verbosity"] > 1:
                    self.stdout.write(f"sequenced {n}")
            except Exception as exc:  # noqa: BLE001 - keep the leader alive; audit_verify reports the backlog
                self.stderr.write(f"audit sequencer: {type(exc).__name__}")
                connections.close_all()
            if options["once"] or stop:
                break
            time.sleep(options["interval"])
        services.audit_checkpoint()
        self.stdout.write("audit sequencer stopped; tail signed")
