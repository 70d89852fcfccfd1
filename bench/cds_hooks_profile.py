"""Profile CDS Hooks order-sign calls in-process: SQL statements of one call, CPU per call, pyinstrument tree.

    .venv/bin/python bench/cds_hooks_profile.py            # temporary SQLite
    BENCH_DATABASE_URL=postgres://.../empty_db .venv/bin/python bench/cds_hooks_profile.py

Runs as deployed (``OMNICARE_AUDIT_SEQUENCE_INLINE=0``: the call stores its audit row, the sequencer chains
it later); ``--inline`` shows the embedded no-worker default, which chains and signs inside each call.
Deterministic figures: the statement count; CPU ms per call and the tree vary with load.
"""

# ruff: noqa: T201  (a command-line report)
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import uuid
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inline", action="store_true", help="chain audit events inside each call")
    parser.add_argument("--calls", type=int, default=20, help="calls under the profiler")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="cds-profile-")
    os.environ.pop("REDIS_URL", None)
    os.environ.update({
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/p.sqlite3", "OMNICARE_DEBUG": "0",
        "OMNICARE_SECRET_KEY": "cds-profile-" + uuid.uuid4().hex, "OMNICARE_SECURE": "0",
        "OMNICARE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(), "OMNICARE_LOG_LEVEL": "WARNING",
        "OMNICARE_AUDIT_SEQUENCE_INLINE": "1" if args.inline else "0",
        "OMNICARE_AUDIT_CHECKPOINT_LOG": f"{tmp}/checkpoints.jsonl", "DJANGO_SETTINGS_MODULE": "omnicare.settings"})
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    from bench.cds_bench import DRAFT, SIGN, chart

    call_command("migrate", "--noinput", verbosity=0)
    call_command("create_demo_users", verbosity=0, stdout=StringIO())
    out = StringIO()
    call_command("create_api_token", "dr.adams", stdout=out)
    token = next(w for w in out.getvalue().split() if w.startswith("oc_"))
    resources = chart()

    def searchset(rt: str) -> dict[str, object]:
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"resource": r} for r in resources if r["resourceType"] == rt]}

    body: dict[str, object] = {
        "hook": "order-sign", "hookInstance": "", "fhirServer": "https://ehr.example.org/fhir",
        "context": {"userId": "Practitioner/bench", "patientId": "bench-p1",
                    "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": DRAFT}]}},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "bench-p1"}, "medications": searchset("MedicationRequest"),
                     "allergies": searchset("AllergyIntolerance"), "labs": searchset("Observation")}}
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def call() -> None:
        body["hookInstance"] = str(uuid.uuid4())
        r = client.post(f"/cds-services/{SIGN}", data=json.dumps(body), content_type="application/json")
        if r.status_code != 200:
            raise SystemExit(f"{r.status_code} {r.content[:300]!r}")

    for _ in range(30):
        call()
    with CaptureQueriesContext(connection) as q:
        call()
    print(f"SQL statements in one call: {len(q.captured_queries)}")
    for x in q.captured_queries:
        print("  ", x["sql"][:110])
    t = time.process_time()
    for _ in range(100):
        call()
    print(f"CPU per call: {(time.process_time() - t) * 10:.2f} ms (load {os.getloadavg()[0]:.1f})")
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(args.calls):
        call()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
