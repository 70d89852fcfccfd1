"""``manage.py audit_verify``: recompute the audit chain, Merkle roots and signatures; exit 1 on tampering."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from omnicare.audit.services import audit_verify


def _age(seconds: float | None) -> str:
    return "" if seconds is None else f" (oldest {seconds:.0f} s)"


class Command(BaseCommand):
    help = ("Verify the audit trail: detects modified, deleted, inserted, reordered and truncated events and says "
            "where (seq / row id); checks checkpoints against the pinned key (OMNICARE_AUDIT_PUBKEY) and the "
            "external checkpoint log; reports events not sequenced yet and the tail no checkpoint covers. Exit "
            "status 1 when anything is wrong; device sequence gaps are warnings unless --strict.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strict", action="store_true", help="warnings (device gaps, no pinned key) also fail")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify()
        for p in report.problems:
            self.stderr.write(f"TAMPERED {p}")
        for w in report.warnings:
            self.stderr.write(f"WARNING  {w}")
        self.stdout.write(f"key: {report.key_source}; published checkpoints: {report.published}; "
                          f"not sequenced: {report.unsequenced}{_age(report.unsequenced_oldest_s)}; "
                          f"after the last checkpoint: {report.tail}{_age(report.tail_oldest_s)}")
        summary = (f"{report.events} live + {report.archived} archived events, {report.checkpoints} signed "
                   f"checkpoints: ")
        if report.problems or (options["strict"] and report.warnings):
            self.stderr.write(summary + f"{len(report.problems)} problem(s), {len(report.warnings)} warning(s)")
            sys.exit(1)
        self.stdout.write(summary + f"OK ({len(report.warnings)} warning(s))")
