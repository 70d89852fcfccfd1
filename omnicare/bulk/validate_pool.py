"""Everything of an ``$import`` line that needs no database, on the other cores, one batch ahead of the writer.

Why: validation with ``fhir.resources`` (pydantic models) is the largest single cost of an import (~38 % of
``import_run`` on the Synthea sample, pyinstrument), and after it the job's own process spent most of its CPU
on work that needs no database either: the pre-scan's JSON parse, the walk for references, search-index
extraction and JSON serialisation (~45 % of its CPU on the Synthea sample, cProfile). So the file is
pre-scanned in chunks here (``scan``); its conditional references (``Practitioner?identifier=…``, 6,392 of
the 7,160 Synthea lines have one) are then resolved by the job in one batched lookup; and while batch k is
written, batch k+1 is prepared here (``prepare``): parsed, its conditional references substituted from that
map, validated exactly as ``fhir.validation.validate_resource`` does (the same function), and indexed with
``fhir.search.index_rows``/``compartment_patients`` (the same functions the write path calls; it reuses
the result only for a body it writes unchanged). The job then only checks the store, writes with COPY and
commits.

The workers are *spawned* (not forked: a Celery worker or the server may hold threads and a database
connection that a fork would copy) and configure Django with the FHIR app alone and no database: they can
import the validators and indexers and cannot touch data. Used only for imports of at least ``PARALLEL_MIN``
lines on a machine with more than one core; anything that goes wrong with the pool (no ``spawn``, a worker
killed) falls back to the same functions inline in the job's process, so the pool can only make an import
faster.

Verdicts are per line: None (valid) or (code, diagnostics, expression) of the first issue, which is what the
job records (``services._issue_from``). A line is validated after its conditional references are
substituted (a reference's string is validated the same before and after).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, NamedTuple

log = logging.getLogger("omnicare.bulk")

PARALLEL_MIN = 4000
INDEX_AHEAD_WORKERS = 1
GC_YOUNG = 50_000  # allocations between young collections while an import runs (Python's default: 2,000)
Verdict = tuple[str, str, list[str]] | None
LITERAL_REF = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


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
    import gc

    # This process only turns lines into short-lived, acyclic values: the definitions loaded above need
    # never be traversed again, and fewer young collections are enough (the collector was ~1/3 of the
    # job process's CPU on the same work, cProfile + gc.callbacks).
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def _verdict(exc: Any) -> Verdict:
    first = exc.outcome()["issue"][0]
    return (str(first.get("code") or "invalid"), str(first.get("diagnostics") or exc),
            list(first.get("expression") or []))


def references(node: Any, path: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every Reference object (a dict with a string ``reference``) in ``node``, with its element path.

    Why the shape: this walk ran on every element of every line (~700,000 calls for 14,000 Synthea lines,
    ~16 % of the import's own CPU, cProfile): scalars are skipped without a call and a child's path is
    built only for dicts and lists."""
    if isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                yield from references(item, path)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("reference"), str):
        yield node, path
    for k, v in node.items():
        # contained resources reference each other with "#id"
        if isinstance(v, (dict, list)) and k != "contained":
            yield from references(v, f"{path}.{k}" if path else k)


def is_conditional(ref: str) -> bool:
    return "?" in ref and not ref.startswith(("#", "urn:"))


#: What ``scan`` reports per chunk: (type, id) keys, (type, system, value, id) identifiers, conditional references.
Scan = tuple[list[tuple[str, str]], list[tuple[str, str, str, str]], set[str]]


def scan(lines: list[bytes]) -> Scan:
    """The pre-scan of a chunk of the file (worker side or inline): what the file itself holds and which
    conditional references it uses, so they can be resolved in one batched lookup before any batch is
    prepared."""
    keys: list[tuple[str, str]] = []
    idents: list[tuple[str, str, str, str]] = []
    conditional: set[str] = set()
    for raw in lines:
        try:
            body = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        rt, rid = body.get("resourceType"), body.get("id")
        if not isinstance(rt, str) or not isinstance(rid, str):
            continue
        keys.append((rt, rid))
        for ident in body.get("identifier") or []:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                idents.append((rt, str(ident.get("system") or ""), ident["value"], rid))
        conditional.update(r["reference"] for r, _ in references(body) if is_conditional(r["reference"]))
    return keys, idents, conditional


class Line(NamedTuple):
    """One line made ready for the write path (``prepare``).

    ``body`` is the parsed resource with its conditional references substituted: a dict inline, or its JSON
    text from a worker (the job parses it once; shipping the dict costs more than parsing, measured).
    ``bad``: (code, text, expression) when the line is not a FHIR resource at all. ``conditional``: the
    element path of every conditional reference, with whether it was resolved. ``literal``: relative
    references into this server (type, id, path). ``ready``: for a valid line, what the write path would
    compute from it — its search index rows, its compartment patients and the JSON text of everything but
    ``resourceType``/``id``/``meta`` (``fhir.bulkwrite.Ready``). A tuple, not a dataclass: unpickling a
    batch of dataclasses cost the job 42 µs a line, tuples 17 (the job's process is the one to spare)."""

    body: dict[str, Any] | str | None = None
    bad: Verdict = None
    verdict: Verdict = None
    conditional: tuple[tuple[str, bool], ...] = ()
    literal: tuple[tuple[str, str, str], ...] = ()
    ready: Any = None


def prepare(lines: list[bytes], resolved: dict[str, str | None], *, inline: bool = False,
            index: bool = False) -> list[Line]:
    """Parse, substitute conditional references (``resolved``: reference → literal or None), validate and
    (``index``) index each raw line: everything of an import line that needs no database."""
    from omnicare.core.errors import ApiError  # noqa: PLC0415 - deferred: a spawned worker imports this module before _init configures Django
    from omnicare.fhir.bulkwrite import ready_of  # noqa: PLC0415 - deferred: a spawned worker imports this module before _init configures Django
    from omnicare.fhir.validation import validate_resource  # noqa: PLC0415 - deferred: a spawned worker imports this module before _init configures Django

    out: list[Line] = []
    for raw in lines:
        if not raw.strip():
            out.append(Line())
            continue
        try:
            body = json.loads(raw)
        except ValueError:
            out.append(Line(bad=("structure", "Line is not valid JSON", [])))
            continue
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            out.append(Line(bad=("structure", "Line is not a FHIR resource", ["resourceType"])))
            continue
        conditional: list[tuple[str, bool]] = []
        literal: list[tuple[str, str, str]] = []
        substituted = False
        for ref_obj, where in references(body):
            ref = ref_obj["reference"]
            if is_conditional(ref):
                target = resolved.get(ref)
                conditional.append((where, target is not None))
                if target is not None:
                    ref_obj["reference"] = target
                    substituted = True
            elif LITERAL_REF.fullmatch(ref):  # a relative reference into this server
                tt, _, tid = ref.partition("/")
                literal.append((tt, tid, where))
        verdict: Verdict = None
        try:
            validate_resource(body)
        except ApiError as exc:
            verdict = _verdict(exc)
        ready = ready_of(body) if index and verdict is None and isinstance(body.get("id"), str) else None
        shipped: dict[str, Any] | str = body
        if not inline:
            try:
                shipped = json.dumps(body, ensure_ascii=False) if substituted else raw.decode()
            except UnicodeDecodeError:  # JSON in UTF-16/32 (json.loads detects it): ship it re-encoded
                shipped = json.dumps(body, ensure_ascii=False)
        out.append(Line(shipped, None, verdict, tuple(conditional), tuple(literal), ready))
    return out


def spare_cores() -> int:
    """Cores beside the job's own process (0 on a one-core machine: nothing to gain)."""
    return max(0, (os.cpu_count() or 1) - 1)


class Validator:
    """Submit work ahead; ``result`` gives its answer (None: do it inline)."""

    def __init__(self, lines_total: int) -> None:
        self.pool: ProcessPoolExecutor | None = None
        workers = spare_cores()
        # Index extraction and serialisation ahead (``prepare(index=True)``) whenever there is a worker: the
        # job's process is the one that cannot be spread, so it keeps only what needs the database. With one
        # worker (a 2-core machine) this was once the wrong trade (the worker at 475 µs a Synthea line against
        # the job's 284), but validation is a third cheaper since (fhircore_plans): measured on 14,320 Synthea
        # lines (time.process_time, load ~2.7) the job goes 210-224 -> 160-165 µs a line, the worker 161 -> 227.
        # The write path still computes them itself for a body it changes (authorship) or when the pool is gone.
        self.index_ahead = workers >= INDEX_AHEAD_WORKERS
        if lines_total >= PARALLEL_MIN and workers:
            try:
                import multiprocessing

                self.pool = ProcessPoolExecutor(max_workers=min(workers, 4), initializer=_init,
                                                mp_context=multiprocessing.get_context("spawn"))
            except (OSError, ValueError, RuntimeError):
                log.warning("import validation pool unavailable; validating inline")
                self.pool = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any] | None:
        """Run ``fn(*args, **kwargs)`` in a worker (``scan`` or ``prepare``); None: the caller runs it inline."""
        if self.pool is None:
            return None
        try:
            return self.pool.submit(fn, *args, **kwargs)
        except RuntimeError:  # the pool broke (a worker died): inline from now on
            self.close()
            return None

    def result(self, fut: Future[Any] | None) -> Any:
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


