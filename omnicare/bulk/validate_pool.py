"""Structural validation of ``$import`` lines on the other cores, one batch ahead of the writer.

Why: validation with ``fhir.resources`` (pydantic models) is the largest single cost of an import (~38 % of
``import_run`` on the Synthea sample, pyinstrument) and needs nothing from the database, while the rest of
the batch (reference resolution, the write path, COPY, commit) runs in the job's process. So while batch k is
written, batch k+1 is validated by worker processes; every line is still validated exactly as
``fhir.validation.validate_resource`` does (it is the same function), only elsewhere.

The workers are *spawned* (not forked: a Celery worker or the server may hold threads and a database
connection that a fork would copy) and configure Django with the FHIR app alone and no database: they can
import the validators and cannot touch data. Used only for imports of at least ``PARALLEL_MIN`` lines on a
machine with more than one core; anything that goes wrong with the pool (no ``spawn``, a worker killed)
falls back to validating inline in the job's process, so the pool can only make an import faster.

Verdicts are per line: None (valid) or (code, diagnostics, expression) of the first issue, which is what the
job records (``services._issue_from``). Conditional references are resolved after this: a reference's string
is validated the same before and after resolution.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger("omnicare.bulk")

PARALLEL_MIN = 4000
Verdict = tuple[str, str, list[str]] | None


def _init() -> None:
    import threading
    import time

    import django
    from django.conf import settings

    parent = os.getppid()

    def orphaned() -> None:
        # A job process killed outright (SIGKILL, OOM) cannot shut its pool down: the worker notices that its
        # parent is gone and leaves instead of waiting forever on a queue nobody writes to.
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True, name="validate-pool-orphan-check").start()

    if not settings.configured:
        settings.configure(INSTALLED_APPS=["omnicare.fhir"], DATABASES={}, USE_TZ=True)
    django.setup()


def verdicts(lines: list[bytes]) -> list[Verdict]:
    """Validate each raw NDJSON line (worker side; also the inline fallback)."""
    from omnicare.core.errors import ApiError
    from omnicare.fhir.validation import validate_resource

    out: list[Verdict] = []
    for raw in lines:
        try:
            body = json.loads(raw)
        except ValueError:
            out.append(None)  # the job reports malformed JSON itself
            continue
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            out.append(None)
            continue
        try:
            validate_resource(body)
            out.append(None)
        except ApiError as exc:
            first = exc.outcome()["issue"][0]
            out.append((str(first.get("code") or "invalid"), str(first.get("diagnostics") or exc),
                        list(first.get("expression") or [])))
    return out


def spare_cores() -> int:
    """Cores beside the job's own process (0 on a one-core machine: nothing to gain)."""
    return max(0, (os.cpu_count() or 1) - 1)


class Validator:
    """Submit batches ahead; ``result`` gives a batch's verdicts (None: validate inline)."""

    def __init__(self, lines_total: int) -> None:
        self.pool: ProcessPoolExecutor | None = None
        workers = spare_cores()
        if lines_total >= PARALLEL_MIN and workers:
            try:
                import multiprocessing

                self.pool = ProcessPoolExecutor(max_workers=min(workers, 4), initializer=_init,
                                                mp_context=multiprocessing.get_context("spawn"))
            except (OSError, ValueError, RuntimeError):
                log.warning("import validation pool unavailable; validating inline")
                self.pool = None

    def submit(self, lines: list[bytes]) -> Future[list[Verdict]] | None:
        if self.pool is None:
            return None
        try:
            return self.pool.submit(verdicts, lines)
        except RuntimeError:  # the pool broke (a worker died): inline from now on
            self.close()
            return None

    def result(self, fut: Future[list[Verdict]] | None) -> list[Verdict] | None:
        if fut is None:
            return None
        try:
            return fut.result()
        except Exception:  # noqa: BLE001 - any pool failure means: validate this batch inline
            log.warning("import validation worker failed; validating inline")
            self.close()
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


