"""``manage.py fhir_import FILE...``: load NDJSON files through the same service as ``POST $import``.

Without ``--user`` the import runs as the system (no access check; every write still validated and
audited); with ``--user NAME`` it is access-checked and audited as that account (e.g. an integration).
Prints the manifest counts; exit status 1 if any line was rejected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from omnicare.bulk.models import BulkJob
from omnicare.bulk.services import import_run, import_start, job_status


class Command(BaseCommand):
    help = "Import FHIR NDJSON files (any mix of types) through the bulk import service"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("files", nargs="+")
        parser.add_argument("--user", default="", help="import as this account (access-checked)")

    def handle(self, *args: Any, **opts: Any) -> None:
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no such user {opts['user']!r}")
        paths = [Path(f) for f in opts["files"]]
        for p in paths:
            if not p.is_file():
                raise CommandError(f"{p}: not a file")

        def chunks() -> Iterator[bytes]:
            for p in paths:
                last = b"\n"
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        last = block[-1:]
                        yield block
                if last != b"\n":
                    yield b"\n"

        job = import_start(user=user, chunks=chunks(), request_url="manage.py fhir_import", trusted=user is None)
        job = import_run(job_id=str(job.pk)) or job  # eager here; a queued copy finds it completed
        job = BulkJob.objects.get(pk=job.pk)
        if user is None:  # job_status checks the owner; the system job has none
            counts = {k: v for k, v in job.counts.items() if not k.startswith("_")}
            rejected = job.issues.filter(severity="error").count()
            summary = {"status": job.status, "output": counts, "rejectedLines": rejected,
                       "extension": {k[1:]: v for k, v in job.counts.items() if k.startswith("_")}}
        else:
            st = job_status(user=user, job_id=str(job.pk), base_url="")
            summary = st.body or {}
            rejected = int((summary.get("extension") or {}).get("rejectedLines", 0))
        self.stdout.write(json.dumps(summary, indent=1))
        for issue in job.issues.filter(severity="error").order_by("line")[:20]:
            self.stderr.write(f"line {issue.line}: {issue.diagnostics}")
        if rejected:
            raise SystemExit(1)
