"""Bulk Data on PostgreSQL: ``$import`` resources/s and ``$export`` resources/s with the worker's peak RSS.

    .venv/bin/python bench/record_bench.py [--copies 14] [--database-url postgres://...record_bench] [--import-only]

Data: the Synthea sample (``../shared/data/synthea-10``, 7,160 resources in 13 types) replicated ``--copies``
times with distinct ids, identifiers and references (14 copies = 100,240 resources), so sizes, nesting and the
~10,000 conditional references per copy are real-world-shaped. The database (default ``record_bench``) is
dropped and recreated on every run.

1. ``bulk_import_per_s``: ``import_start`` + ``import_run`` (the service behind ``POST $import`` and
   ``manage.py fhir_import``) of the whole NDJSON in this process: validation, reference resolution, the
   write path, index rows and audit included. Celery is not eager (as in production): the job's CDS re-check
   of each batch's orders and the audit sequencer are queued, as a deployment hands them to other workers and
   beat, then run after the import and timed apart (``deferred`` in results.json: ``recheck_seconds``,
   ``audit_sequence_seconds``). Until 2026-12-02 eager Celery ran the re-check inline in the job (~17 % of its CPU).
2. ``bulk_export_per_s`` and ``bulk_export_peak_rss_mb``: a system ``$export`` of every type by an
   integration account, run by ``export_run`` in a FRESH worker process (what a Celery worker does), so its
   peak RSS is the export's own. The same export of a quarter of the data (``bulk_export_peak_rss_mb_quarter``,
   via ``_type`` of the types holding about a quarter) shows whether memory grows with the data.

``--import-only`` measures 1. alone (the export figures in results.json and BENCHMARKS.md are kept as they were).

Merges its keys into ``bench/results.json`` ``metrics`` and rewrites its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-10"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/record_bench"
BEGIN, END = "<!-- record_bench:begin -->", "<!-- record_bench:end -->"


def reset_database(url: str) -> None:
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    admin = psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=int(cfg["PORT"] or 5432),
                            user=cfg["USER"] or "postgres", dbname="postgres", autocommit=True)
    with admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg["NAME"])))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))


def _suffix(node: Any, k: int) -> Any:
    """Copy ``k`` of a resource: ids, literal references, identifier values and conditional references get
    ``-k`` so every copy is a separate, internally consistent record."""
    if isinstance(node, dict):
        out = {key: _suffix(v, k) for key, v in node.items()}
        if isinstance(out.get("reference"), str):
            ref = out["reference"]
            if "?identifier=" in ref:
                out["reference"] = f"{ref}-{k}"
            elif "/" in ref and not ref.startswith(("http", "#", "urn:")):
                out["reference"] = f"{ref}-{k}"
        return out
    if isinstance(node, list):
        return [_suffix(v, k) for v in node]
    return node


def make_ndjson(path: Path, copies: int) -> int:
    files = sorted(SYNTHEA.glob("*.000.ndjson"))
    if not files:
        raise SystemExit(f"the Synthea sample is not at {SYNTHEA}")
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for k in range(copies):
            for f in files:
                for line in f.read_text(encoding="utf-8").splitlines():
                    res = _suffix(json.loads(line), k)
                    res["id"] = f"{res['id'][:56]}-{k}"
                    for ident in res.get("identifier") or []:
                        if isinstance(ident, dict) and "value" in ident:
                            ident["value"] = f"{ident['value']}-{k}"
                    out.write(json.dumps(res, separators=(",", ":"), ensure_ascii=False) + "\n")
                    n += 1
    return n


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    # DEBUG off, as in production: with DEBUG on Django's debug cursor renders and keeps every statement
    # with its parameters inlined (whole JSON bodies), which the profile showed as a real cost of the import.
    os.environ.setdefault("OMNICARE_SECRET_KEY", "record-bench-not-a-secret")
    os.environ.setdefault("OMNICARE_MASTER_KEY", base64.b64encode(b"record-bench-master-key-32bytes!").decode())
    os.environ.pop("REDIS_URL", None)
    # Celery as in production, not eager: what a deployment hands to other workers (the CDS re-check of a
    # batch of > 50 orders, subscription dispatch) is only queued here (kombu's in-memory broker, as cheap as
    # a Redis LPUSH), and the audit sequencer is beat's job (OMNICARE_AUDIT_SEQUENCE_INLINE follows eager).
    # With eager Celery the job process also ran every batch's CDS re-check inline (~17 % of its CPU, cProfile
    # 2026-12-02), which no production import does. That work still exists: ``deferred_work`` runs it after
    # the import and reports its time beside the rate (``deferred_seconds``), so it is not hidden.
    # This process runs the import job itself (``import_run``), as the Celery worker does.
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def worker_export(job_id: str) -> None:
    """Child process: run one export job and report time and peak RSS (what a Celery worker would hold)."""
    from omnicare.bulk.services import export_run

    t0 = time.perf_counter()
    job = export_run(job_id=job_id)
    elapsed = time.perf_counter() - t0
    assert job is not None and job.status == "completed", job
    # VmHWM is this process's own peak: ru_maxrss would also count the parent's RSS inherited at fork
    # (Linux keeps the pre-exec high-water mark), i.e. the importing bench process, not the worker.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    rss_mb = int(hwm.split()[1]) / 1024
    print(json.dumps({"seconds": elapsed, "resources": sum(int(o["count"]) for o in job.output),
                      "peak_rss_mb": rss_mb}))


def run_export(url: str, user: Any, types: list[str] | None) -> dict[str, Any]:
    from django.db import connection

    from omnicare.bulk.models import BulkJob
    from omnicare.fhir.search import SUPPORTED_TYPES

    params: dict[str, Any] = {"level": "system", "types": types or list(SUPPORTED_TYPES), "since": None, "format": "application/fhir+ndjson",
                              "base": "http://127.0.0.1/fhir/R4", "members": None}
    job = BulkJob.objects.create(kind=BulkJob.EXPORT, user=user, request_url="bench", params=params)
    connection.close()
    env = {**os.environ, "DATABASE_URL": url}
    out = subprocess.run([sys.executable, __file__, "--worker-export", str(job.pk)], env=env, cwd=REPO,  # noqa: S603
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"export worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SPLIT_NAMES = {"self": "job", "children": "validation_workers"}  # machine.process_cpu's keys, as this bench's roles


def bench_import(copies: int, tmp: Path) -> tuple[int, int, float, int, Any, dict[str, Any]]:
    from django.contrib.auth import get_user_model

    from omnicare.access.roles import role_assign
    from omnicare.bulk.services import import_run, import_start

    src = tmp / "in.ndjson"
    total = make_ndjson(src, copies)
    print(f"{total} resources, {src.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    user = get_user_model().objects.create_user(username="bench.integration")
    role_assign(user=user, role="integration")

    def chunks() -> Any:
        with open(src, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    from bench.machine import busy_pct, cpu_seconds, cpu_times, process_cpu, process_split

    t0, cpu0, proc0 = time.perf_counter(), cpu_times(), process_cpu()
    job = import_start(user=user, chunks=chunks(), request_url="bench")  # queues the job (not eager: see setup)
    job = import_run(job_id=str(job.pk))  # what the Celery worker runs
    import_s, cpu1 = time.perf_counter() - t0, cpu_times()
    # The validation workers are shut down without waiting: reap them, so their CPU is in RUSAGE_CHILDREN.
    import multiprocessing

    for _ in range(200):
        if not multiprocessing.active_children():  # joins (reaps) the ones that have exited
            break
        time.sleep(0.05)
    proc1 = process_cpu()
    # The whole machine (this job, its validation worker, PostgreSQL): how busy, and CPU per line. With every core
    # busy, a rate is bound by CPU per line: cores / (CPU per line) is the most this machine could import.
    machine = {"busy_pct": busy_pct(cpu0, cpu1), "cpu_us_per_line": round(cpu_seconds(cpu0, cpu1) * 1e6 / total, 1),
               "cores": os.cpu_count(),
               # Who used it (% of the machine's busy CPU): the job's process, its validation workers, PostgreSQL.
               "split_pct": {SPLIT_NAMES.get(k, k): v for k, v in process_split(proc0, proc1, cpu_seconds(cpu0, cpu1)).items()}}
    print(f"machine: {machine}", file=sys.stderr)
    assert job is not None and job.status == "completed", job
    written = sum(v for k, v in job.counts.items() if not k.startswith("_"))
    rejected = job.issues.filter(severity="error").count()
    print(f"import: {written} written, {rejected} rejected, {import_s:.1f} s", file=sys.stderr)
    return written, rejected, import_s, total, user, machine


def deferred_work() -> dict[str, Any]:
    """What production's other Celery workers and beat do after the import (queued, not run, above): the CDS
    re-check of every imported order and the audit sequencer. Timed separately, in this process."""
    from omnicare.audit.services import audit_sequence
    from omnicare.cds.services import orders_recheck
    from omnicare.fhir.models import ResourceVersion

    keys = list(ResourceVersion.objects.filter(resource_type="MedicationRequest", deleted=False)
                .values_list("resource_id", "version_id"))
    t0 = time.perf_counter()
    checked = orders_recheck(keys=keys)
    recheck_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    audit_sequence()
    audit_s = time.perf_counter() - t0
    out = {"orders_rechecked": checked, "recheck_seconds": round(recheck_s, 1), "audit_sequence_seconds": round(audit_s, 2)}
    print(f"deferred (other workers in production): {json.dumps(out)}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=int(os.environ.get("RECORD_BENCH_COPIES", "14")))
    ap.add_argument("--database-url", default=os.environ.get("RECORD_BENCH_DATABASE_URL", DEFAULT_DB))
    ap.add_argument("--results", default=str(REPO / "bench" / "results.json"))
    ap.add_argument("--report", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--worker-export", default="")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the database and the import figures of the last run; measure the export again")
    ap.add_argument("--import-only", action="store_true",
                    help="measure the import alone; keep the export figures of the last run")
    args = ap.parse_args()
    if args.reuse and args.import_only:
        ap.error("--reuse measures the export again; --import-only the import alone: pick one")
    if args.worker_export:
        setup_django(os.environ["DATABASE_URL"])
        worker_export(args.worker_export)
        return 0
    if not args.reuse:
        reset_database(args.database_url)
    setup_django(args.database_url)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    tmp = Path(tempfile.mkdtemp(prefix="record_bench_"))
    settings.OMNICARE_BULK_DIR = tmp / "bulk"
    os.environ["OMNICARE_BULK_DIR"] = str(tmp / "bulk")
    if args.reuse:
        previous = json.loads(Path(args.results).read_text())
        user = get_user_model().objects.get(username="bench.integration")
        total = int(previous["record_bench"]["resources"])
        import_s = float(previous["record_bench"]["import_seconds"])
        written = round(previous["metrics"]["bulk_import_per_s"] * import_s)
        rejected = int(previous["record_bench"]["import_rejected"])
        machine = previous["record_bench"].get("import_machine", {})
    else:
        written, rejected, import_s, total, user, machine = bench_import(args.copies, tmp)
    deferred = {} if args.reuse else {"deferred": deferred_work()}
    if args.import_only:
        metrics = {"bulk_import_per_s": round(written / import_s, 1)}
        detail = {"resources": total, "import_seconds": round(import_s, 1), "import_rejected": rejected, **deferred,
                  "import_machine": machine,
                  "load_avg": os.getloadavg(), "python": platform.python_version()}
        print(json.dumps({"metrics": metrics, "detail": detail}, indent=1))
        write_results(Path(args.results), metrics, detail)
        merged = json.loads(Path(args.results).read_text())
        if "bulk_export_per_s" in merged["metrics"] and "export_seconds" in merged["record_bench"]:
            write_report(Path(args.report), merged["metrics"], merged["record_bench"], import_only=True)
        return 0
    full = run_export(args.database_url, user, None)
    # About a quarter of the data, by type (smallest types first until a quarter is reached).
    from django.db.models import Count

    from omnicare.fhir.models import Resource

    per_type = dict(Resource.objects.values_list("resource_type").annotate(n=Count("id")))
    quarter: list[str] = []
    acc = 0
    for t, n in sorted(per_type.items(), key=lambda x: x[1]):
        if acc >= total / 4:
            break
        quarter.append(t)
        acc += n
    small = run_export(args.database_url, user, quarter)
    metrics = {
        "bulk_import_per_s": round(written / import_s, 1),
        "bulk_export_per_s": round(full["resources"] / full["seconds"], 1),
        "bulk_export_peak_rss_mb": round(full["peak_rss_mb"], 1),
        "bulk_export_peak_rss_mb_quarter": round(small["peak_rss_mb"], 1),
    }
    detail = {"resources": total, "import_seconds": round(import_s, 1), "import_rejected": rejected, **deferred,
              "import_machine": machine,
              "export_seconds": round(full["seconds"], 1), "export_resources": full["resources"],
              "quarter_resources": small["resources"], "chunk_bytes": settings.OMNICARE_BULK_CHUNK_BYTES,
              "load_avg": os.getloadavg(), "python": platform.python_version()}
    print(json.dumps({"metrics": metrics, "detail": detail}, indent=1))
    write_results(Path(args.results), metrics, detail)
    write_report(Path(args.report), metrics, detail)
    return 0


def write_results(path: Path, metrics: dict[str, Any], detail: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("metrics", {}).update(metrics)
    data.setdefault("record_bench", {}).update(detail)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _deferred_text(d: dict[str, Any]) -> str:
    dw = d.get("deferred")
    if not dw:
        return "not measured in this run"
    return (f"CDS re-check of {dw['orders_rechecked']:,} orders {dw['recheck_seconds']} s, audit sequencing "
            f"{dw['audit_sequence_seconds']} s")


def _machine_text(d: dict[str, Any]) -> str:
    mc = d.get("import_machine") or {}
    if not mc.get("cpu_us_per_line"):
        return ""
    bound = mc["cores"] * 1e6 / mc["cpu_us_per_line"]
    return (f"During the import the whole machine was **{mc['busy_pct']} % busy** (the job, its validation worker and "
            f"PostgreSQL, from /proc/stat): **{mc['cpu_us_per_line']:,} µs of CPU a line**, so at this cost "
            f"{mc['cores']} cores import at most {bound:,.0f} lines/s however the work is split "
            f"(`import_machine` in results.json)." + _split_text(mc))


def _split_text(mc: dict[str, Any]) -> str:
    sp = mc.get("split_pct")
    if not sp:
        return ""
    names = {"job": "the job's process", "validation_workers": "its validation worker", "postgres": "PostgreSQL",
             "other": "everything else"}
    return " That CPU went to " + ", ".join(f"{names.get(k, k)} {v} %" for k, v in sp.items()) + "."


def write_report(path: Path, m: dict[str, Any], d: dict[str, Any], *, import_only: bool = False) -> None:
    alone = (" Import measured alone (`--import-only`); the export figures are those of the last full run."
             if import_only else "")
    section = f"""{BEGIN}
## Bulk Data $import / $export (bench/record_bench.py)

`python bench/record_bench.py` on PostgreSQL ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average
{' '.join(f'{x:.2f}' for x in d['load_avg'])} on a shared 2-core machine). Data: the Synthea sample replicated to
{d['resources']:,} resources (real sizes, ~10,000 conditional references per 7,160). Export chunks are bounded by
{d['chunk_bytes'] // 1024} KiB of JSON text, not by a row count.

| metric | value | goal |
|---|---:|---|
| `$import` resources/s (validation, reference resolution, write path, audit) (`bulk_import_per_s`) | {m['bulk_import_per_s']:,} | >= 5,000/s |
| `$export` resources/s, fresh worker process (`bulk_export_per_s`) | {m['bulk_export_per_s']:,} | >= 20,000/s |
| worker peak RSS, export of {d['export_resources']:,} (`bulk_export_peak_rss_mb`) | {m['bulk_export_peak_rss_mb']} MB | flat as data grows |
| worker peak RSS, export of {d['quarter_resources']:,} (`bulk_export_peak_rss_mb_quarter`) | {m['bulk_export_peak_rss_mb_quarter']} MB | (comparison) |

Import took {d['import_seconds']} s ({d['import_rejected']} lines rejected); export {d['export_seconds']} s.{alone}
{_machine_text(d)}
Celery runs as in production (not eager): the import job's CDS re-check of each batch's orders (> 50 a batch)
and the audit sequencer are queued for other workers, then run after the import and timed apart:
{_deferred_text(d)}.
How the import is split (since 2026-12-02): the file is pre-scanned in chunks shared by the job and its
validation worker processes (`omnicare/bulk/validate_pool.py`), every conditional reference is resolved once
per job in batched store lookups, and while batch k is written (COPY, `omnicare/fhir/bulkwrite.py`) batch k+1 is
parsed, substituted and validated in the workers, which also extract its search index and serialise it (since
2026-12-02 with one worker too, as on 2 cores: the job's own CPU 180–200 → 153–167 µs a line). The garbage
collector is kept off the pre-scan's index while the job runs (it was ~1/3 of the job process's CPU).
Validation with `fhir.resources` bounds a 2-core machine well below 5,000/s: ~234 µs a Synthea line of CPU, ~130
since fhir_core's two per-element hooks work out their per-class part once per class
(`omnicare/fhir/fhircore_plans.py`, same verdicts; 2026-12-02).
The export reads each row's stored size (cheap unless the
value is compressed) to plan byte-bounded chunks, then its text as UTF-8 bytes over psycopg's binary protocol.
{END}
"""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
