"""``manage.py seed_demo --patients N --seed S [--flush]``: load the deterministic demo data set."""

from __future__ import annotations

import time
from collections import Counter
from datetime import date
from itertools import islice
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from omnicare.fhir.demo import REFERENCE_DATE, demo_resources
from omnicare.fhir.models import FeedCounter, Resource
from omnicare.fhir.services import resources_import


class Command(BaseCommand):
    help = (
        "Load deterministic demo patients (about 50 FHIR resources each). Ids are derived from the seed, "
        "so re-running with the same seed skips what is already there instead of duplicating it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--patients", type=int, default=200, help="number of patients (default 200)")
        parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
        parser.add_argument(
            "--batch", type=int, default=2000, help="resources per transaction (default 2000)"
        )
        parser.add_argument(
            "--today",
            default=REFERENCE_DATE.isoformat(),
            help="reference date the history ends at (YYYY-MM-DD)",
        )
        parser.add_argument(
            "--flush",
            action="store_true",
            help="delete ALL stored FHIR resources and history first (demo only)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        patients, seed, batch_size = options["patients"], options["seed"], options["batch"]
        if patients < 0 or batch_size < 1:
            raise CommandError("--patients must be >= 0 and --batch >= 1")
        try:
            today = date.fromisoformat(options["today"])
        except ValueError as exc:
            raise CommandError("--today must be YYYY-MM-DD") from exc
        started = time.perf_counter()
        if options["flush"]:
            self._flush()
        written: Counter[str] = Counter()
        skipped = 0
        resources = demo_resources(patients=patients, seed=seed, today=today)
        while batch := list(islice(resources, batch_size)):
            # Client ids are deterministic: whatever is already stored was loaded by an earlier run; leave it be
            # (overwriting would add a version to every resource and push it to every device again).
            present = set(
                Resource.objects.filter(resource_id__in=[r["id"] for r in batch]).values_list(
                    "resource_type", "resource_id"
                )
            )
            fresh = [r for r in batch if (r["resourceType"], r["id"]) not in present]
            skipped += len(batch) - len(fresh)
            if fresh:
                resources_import(resources=fresh)
                written.update(r["resourceType"] for r in fresh)
            total = sum(written.values()) + skipped
            elapsed = time.perf_counter() - started
            self.stdout.write(
                f"  {total:>7,} resources processed ({sum(written.values()):,} written) in {elapsed:.1f} s"
            )
        elapsed = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(f"Demo data: {patients} patients, seed {seed}, reference date {today}")
        )
        for rtype, n in sorted(written.items(), key=lambda kv: -kv[1]):
            self.stdout.write(f"  {rtype:<20} {n:>7,}")
        self.stdout.write(
            f"  {'total written':<20} {sum(written.values()):>7,}\n"
            f"  {'already present':<20} {skipped:>7,}\n"
            f"  {elapsed:.1f} s ({sum(written.values()) / max(elapsed, 1e-9):,.0f} resources/s)"
        )

    def _flush(self) -> None:
        # Every table of the FHIR store except the feed counter: cursors held by devices stay monotonic.
        with transaction.atomic():
            for model in apps.get_app_config("fhir").get_models():
                if model is not FeedCounter:
                    model.objects.all().delete()
        self.stdout.write(self.style.WARNING("Flushed all FHIR resources and their history"))
