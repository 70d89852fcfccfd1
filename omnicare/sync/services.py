"""Server sync engine: pull (scoped change feed with an opaque signed cursor), push (idempotent, merged with
pyclient), conflicts, devices, snapshots and push jobs. The API router and Celery tasks only call these.

Pull cursor — why it never skips, and how scope changes are handled
--------------------------------------------------------------------
The feed is ``omnicare.fhir.models.ResourceVersion`` ordered by ``seq``. On PostgreSQL ``seq`` comes from a
sequence with no lock, and every read of the feed stops at the snapshot horizon: the last row with no smaller
position still in flight (``core.feed_horizon.feed_settled``, where the proof is), so ``seq > cursor`` can never
step over a change that commits later. (SQLite serialises writers and keeps a counter row.)

A cursor is ``django.core.signing`` of ``{"u": user pk, "s": N, "p": ScopeSet pk, "f": fill-state | absent}``
(salted, HMAC with SECRET_KEY): opaque to clients, bound to the user, and a cursor we never issued is a 400.
It says: "this client holds, as of feed position N, everything in the scope ScopeSet ``p``".

On each pull the current scope S (``scope.scope_keys``) is compared with ``p``:

* S == p: a feed page: versions with ``seq > N`` whose compartment (``ResourceVersion.patient_ids``) meets S,
  tombstones included. The cursor advances to the last version *scanned* (in scope or not), so a page that
  filtered everything out still makes progress; the scan per request is bounded.
* S != p (patients ENTERED or LEFT scope): a transition to target T = S.
  - ``drop``: the live resources in the compartments of patients that left (and that no patient still in
    scope also holds) — the client deletes its copies.
  - backfill ("fill"): the *current* state of every live resource in the compartments of patients that
    entered, whose current version has ``seq <= N``, in seq order (cursor ``f = {"t": T, "a": last seq}``).
    Resources whose current version is newer than N are left to the feed, which resumes at N with scope T,
    so each version reaches the client once and never older-after-newer.
  - If the scope changes again mid-fill, the fill restarts towards the new target (drops for anything in the
    old or the abandoned target that is not in the new one; duplicates of already-sent records are harmless).
  When the fill completes the cursor becomes ``{"s": N, "p": T}`` and the feed continues.
* The first pull (no cursor) is a fill of the whole scope anchored at the current feed head.

Push — per mutation, documented contract
----------------------------------------
The batch shape is validated first (``pyclient.protocol`` parsers): a malformed batch, a duplicated
mutationId, or more than ``MAX_PUSH_MUTATIONS`` (the protocol's 100) mutations is refused whole (400 / 413),
nothing applied. Bigger batches (up to ``MAX_JOB_MUTATIONS``) go to ``/api/sync/push/jobs``: 202 + job id,
applied by a Celery job with exactly the same per-mutation rules. Then each mutation is decided on its own,
in order; one bad mutation never blocks the others, and none is ever half applied:

* already seen (same user, same mutationId, same canonical hash) → the stored first result, nothing changes;
  same id, different body → ``rejected`` with a 409 OperationOutcome (not stored).
* unknown type / bad id / invalid resource → ``rejected`` (404 / 400 / 422); base version ahead of the server
  → ``rejected`` 422; a compartment outside the caller's scope → ``rejected`` 403.
* base == current → ``applied`` (new version). Stale base → three-way merge with ``pyclient.merge``
  (base from history): clean → ``merged`` (new version, returned); otherwise a stored :class:`Conflict`
  and ``conflict`` (the server keeps its version; the client's edit is parked in the Conflict row).
* ``supersedes`` (a re-sent edit after a person resolved a conflict on the device) closes the stored
  conflict of that earlier mutation (resolution ``superseded``).

How it is executed: chunks of ``BATCH_CHUNK`` mutations are decided against rows read and locked once
(idempotency log, current rows, base versions) and written with ONE store call (one feed position range),
conflicts and the log bulk-inserted, all in one transaction: rejected mutations simply write nothing. If
anything unusual happens (the same resource twice in a chunk, a write the store refuses, a concurrent
duplicate, a CareTeam/Practitioner write that changes scope mid-batch) the chunk is redone one mutation per
transaction — same answers, slower. The API and job endpoints first run a push with no savepoint at all
(``push.push_attempts``): when the store refuses a write after the chunk wrote something, the whole request
(its writes, log, audit event and hints) rolls back and is redone the careful way above. A push from a known
device reads no device row (one UPDATE at the end) and answers both revocation rules with one query.
"""

# The engine lives in one module per part (cursor, pull, devices, push, jobs, conflicts, snapshots); this
# module keeps their public names importable from one place for tests and scripts. New code imports the part.
# ruff: noqa: F401
from __future__ import annotations

from .conflicts import (
    CONFLICT_SCAN,
    RESOLUTIONS,
    conflict_get,
    conflict_may_access,
    conflict_resolve,
    conflicts_list,
)
from .cursor import (
    CURSOR_SALT,
    CursorState,
    cursor_decode,
    cursor_encode,
)
from .devices import (
    device_register,
    device_registered,
    devices_list,
)
from .jobs import (
    SweepReport,
    push_job_create,
    push_job_enqueue,
    push_job_get,
    push_job_run,
    push_jobs_sweep,
)
from .pull import (
    DEFAULT_PULL_LIMIT,
    MAX_SCAN,
    PullAudit,
    drops_for,
    feed_page,
    fill_page,
    pull,
    pull_json,
    pull_json_page,
)
from .push import (
    BATCH_CHUNK,
    MAX_JOB_MUTATIONS,
    MAX_PUSH_MUTATIONS,
    announce_versions,
    parse_push,
    push,
    push_audit,
)
from .snapshots import (
    snapshot_build,
    snapshot_get,
    snapshot_patients_if_current,
    snapshot_request,
)
