"""Authentication and the single authorization check every API path goes through.

``access_check`` is THE place where the server decides whether a user may do an
action on a resource type (and, for patient data, on which patients): the role ×
resource type × action matrix in ``roles.py``, the care-team scope and active break-the-glass grants, both in ``visible_patient_ids`` (the ONE
"which patients may this user see" function).
Callers never decide. Also here: break-the-glass, lost-device revocation, login
throttling and ending a disabled account's sessions.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from omnicare.audit import services as audit
from omnicare.core.errors import ApiError, BadRequest, Conflict, Forbidden, NotAuthenticated, NotFound
from omnicare.core.feed_horizon import FEED_XMAX_SQL, FEED_XMIN_SQL, feed_horizon_applies, feed_settled
from omnicare.core.references import parse_reference
from omnicare.keys.services import secret_get, secret_put
from pyclient import outcome
from pyclient.authors import practitioner_display
from pyclient.views.break_glass import reason_problem

from . import roles as rbac
from .device_ids import DEVICE_ID_RE
from .directory import directory
from .models import (
    ApiToken,
    DeviceRevocation,
    EmergencyAccessGrant,
    LoginFailure,
    MfaEnrollment,
    PasswordResetRequired,
)

log = logging.getLogger("omnicare.access")

ACTIONS = frozenset({"read", "vread", "search", "history", "create", "update", "delete"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_hash(token: str) -> str:
    """The stored form of a bearer token (SHA-256 hex)."""
    return _hash(token)


def token_create(*, user: AbstractBaseUser, name: str, expires: datetime | None = None) -> str:
    """Create a bearer token for ``user`` and return it (shown once; only its hash is kept)."""
    token = "oc_" + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, token_hash=_hash(token), expires=expires)
    return token


def token_authenticate(*, token: str) -> AbstractBaseUser | None:
    """Return the active user owning ``token``, or None (unknown, revoked, expired or inactive).

    The same query loads the user's roles and active break-the-glass grants (two correlated subqueries): every
    API request needs both, and as separate queries they were two of a FHIR read's seven round trips. They are
    kept on this request's user instance only (see :func:`_principal_preload`).

    Nothing is cached between requests: the database answers every request, so a revoked or expired token, a
    deactivated user, a removed role or an ended grant counts from the very next request, in every process.
    The query is SQL written once per process (:func:`_token_query`): built through the ORM (a select_related
    join and two annotated subqueries) it cost more CPU than all the rest of a FHIR read."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    now = timezone.now()
    sql, fields, convert = _token_query(connection)
    roles: Any = list(rbac.ROLE_NAMES)
    if connection.vendor != "postgresql":
        import json

        roles = json.dumps(roles)  # json_each (see _token_query)
    with connection.cursor() as cursor:
        cursor.execute(sql, [roles, now, now, _hash(token)])
        row = cursor.fetchone()
    if row is None:
        return None
    row = [value if fns is None else _converted(value, fns, connection) for value, fns in zip(row, convert, strict=True)]
    expires, bound, role_names, grants, values = row[0], row[1], row[2], row[3], row[4:]
    if expires is not None and expires <= now:
        return None
    user = get_user_model().from_db(connection.alias, fields, values)
    if not user.is_active:
        return None
    _principal_preload(user, roles=role_names, grants=grants)
    # The device this token is bound to ("" before its first sync contact), read by the same query: the sync
    # routes' device_bind then needs no query of its own (BearerAuth puts it on the request).
    user._omnicare_token_device = bound
    return user


_TOKEN_QUERY: dict[str, tuple[str, list[str], list[Any]]] = {}


def _token_query(connection: Any) -> tuple[str, list[str], list[Any]]:
    """The token lookup, made once per process and database: SQL selecting the token's expiry, the user's role
    names and granted patient ids (comma-joined: neither ever holds a comma, role names are fixed and FHIR ids
    are ``[A-Za-z0-9.-]``), then every column of the user row; the user's field names for ``Model.from_db``;
    and per column the ORM's value converters (None where there are none, e.g. every column on PostgreSQL)."""
    hit = _TOKEN_QUERY.get(connection.alias)
    if hit is not None:
        return hit
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    U = get_user_model()
    qn = connection.ops.quote_name
    pg = connection.vendor == "postgresql"
    through = U._meta.get_field("groups").remote_field.through._meta  # type: ignore[union-attr]
    in_roles = "= ANY(%s)" if pg else "IN (SELECT value FROM json_each(%s))"
    agg = "string_agg({}, ',')" if pg else "group_concat({}, ',')"
    expires_field = ApiToken._meta.get_field("expires")
    device_field = ApiToken._meta.get_field("device_id")
    user_fields = list(U._meta.concrete_fields)
    # Identifiers from model metadata, values as parameters.
    sql = (
        f"SELECT t.{qn(expires_field.column)}, t.{qn(device_field.column)}, "  # noqa: S608
        f"(SELECT {agg.format('g.name')} FROM {qn(through.db_table)} ug JOIN {qn(Group._meta.db_table)} g "
        f"ON g.id = ug.group_id WHERE ug.user_id = t.user_id AND g.name {in_roles}), "
        f"(SELECT {agg.format('e.patient_id')} FROM {qn(EmergencyAccessGrant._meta.db_table)} e "
        f"WHERE e.user_id = t.user_id AND e.ended IS NULL AND e.started <= %s AND e.expires > %s), "
        + ", ".join(f"u.{qn(f.column)}" for f in user_fields)
        + f" FROM {qn(ApiToken._meta.db_table)} t JOIN {qn(U._meta.db_table)} u"
        f" ON u.{qn(U._meta.pk.column)} = t.user_id WHERE t.token_hash = %s AND NOT t.revoked"
    )

    def converters(field: Any) -> Any:  # as the ORM's compiler applies them (SQLite: datetimes, booleans)
        col = field.get_col(field.model._meta.db_table)
        return [(fn, col) for fn in connection.ops.get_db_converters(col) + col.get_db_converters(connection)] or None

    convert = [converters(expires_field), None, None, None, *(converters(f) for f in user_fields)]
    _TOKEN_QUERY[connection.alias] = hit = (sql, [f.attname for f in user_fields], convert)
    return hit


def _converted(value: Any, fns: list[Any], connection: Any) -> Any:
    for fn, col in fns:
        value = fn(value, col, connection)
    return value


def _principal_preload(user: Any, *, roles: str | None, grants: str | None) -> None:
    """Seed the per-instance role cache (``roles.user_roles``) and this request's grant set. The user object
    is made for this one request by the authenticator, so nothing outlives it; the grant set also expires
    after :data:`_PRELOAD_GRANTS_SECONDS` for callers that keep a user longer."""
    import time

    rbac.roles_preload(user, frozenset(r for r in (roles or "").split(",") if r))
    user._omnicare_grants = (time.monotonic(), frozenset(p for p in (grants or "").split(",") if p))


_PRELOAD_GRANTS_SECONDS = 5.0


def _preloaded_grants(user: Any) -> frozenset[str] | None:
    import time

    hit = getattr(user, "_omnicare_grants", None)
    if hit is None or time.monotonic() - hit[0] > _PRELOAD_GRANTS_SECONDS:
        return None
    return hit[1]  # type: ignore[no-any-return]


def grants_preload_clear(user: Any) -> None:
    """Forget the grant set loaded at authentication (a grant of this user just started or ended)."""
    if user is not None:
        user.__dict__.pop("_omnicare_grants", None)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


# --- Authorization ------------------------------------------------------------------------------
#
# Which patients a user may see is decided in ONE place, :func:`visible_patient_ids`: the FHIR REST
# search/history filter, ``access_check``, the sync pull (device scope), the sync push and WebSocket hint
# routing all call it. The care-team rule lives here too (it is access policy, not sync mechanics).

USER_IDENTIFIER_SYSTEM = "urn:omnicare:user"
INACTIVE_CARETEAM = frozenset({"inactive", "entered-in-error"})


class AllPatients:
    """Sentinel: no patient restriction (a role with scope ``all`` for the action). Never iterate it."""

    _instance: AllPatients | None = None

    def __new__(cls) -> AllPatients:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_PATIENTS"


ALL_PATIENTS = AllPatients()

# Per-request memo (see :func:`visible_patients_cache`): a push of 100 mutations asks ~200 times.
_memo: contextvars.ContextVar[dict[str, dict[Any, Any]] | None] = contextvars.ContextVar(
    "omnicare_visible_patients", default=None
)


@contextlib.contextmanager
def visible_patients_cache() -> Iterator[None]:
    """Within this block the care-team scope is computed once per user, and patients registered in the
    block (:func:`patient_registered`) count as the registering user's own. Nesting reuses the outer
    memo. Call :func:`visible_patients_cache_clear` after a write that can change scope (CareTeam,
    Practitioner)."""
    if _memo.get() is not None:
        yield
        return
    token = _memo.set({"scope": {}, "registered": {}})
    try:
        yield
    finally:
        _memo.reset(token)


def visible_patients_cache_clear() -> None:
    memo = _memo.get()
    if memo is not None:
        memo["scope"].clear()
        memo.get("grants", {}).clear()
        memo.get("practitioners", {}).clear()


def patient_registered(*, user: Any, patient_id: str) -> None:
    """Remember, for the rest of this request, that ``user`` just created Patient ``patient_id``.

    Offline registration: a new Patient, the CareTeam that puts its author on it and the first notes
    arrive in one push; until the CareTeam lands the patient is not in anybody's scope, so writes into
    the compartment of a patient *this user registered in this same request* are allowed (never anyone
    else's existing chart). No-op outside :func:`visible_patients_cache`.
    """
    memo = _memo.get()
    key = getattr(user, "pk", None)
    if memo is not None and key is not None:
        memo["registered"].setdefault(key, set()).add(str(patient_id))


def _registered_here(user: Any) -> set[str]:
    memo = _memo.get()
    if memo is None:
        return set()
    return set(memo["registered"].get(getattr(user, "pk", None), ()))


def user_practitioner_ids(*, user: Any) -> set[str]:
    """Ids of the live Practitioner resources that identify ``user`` (``urn:omnicare:user|<username>``)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    memo = _memo.get()  # within visible_patients_cache: once per request and user (a pull asked up to 4 times)
    key = getattr(user, "pk", None)
    if memo is not None and key is not None and key in memo.setdefault("practitioners", {}):
        return set(memo["practitioners"][key])
    found = directory().practitioner_ids(system=USER_IDENTIFIER_SYSTEM, code=user.get_username())
    if memo is not None and key is not None:
        memo["practitioners"][key] = frozenset(found)
    return found


def user_practitioner(*, user: Any) -> dict[str, str] | None:
    """The signed-in user's own Practitioner as ``{"id", "display"}`` (the device writes authors as references
    to it, issue 18 item 6); None when the user has none. With several, the lowest id (stable)."""
    ids = sorted(user_practitioner_ids(user=user))
    if not ids:
        return None
    body = directory().practitioner_body(ids[0])
    full = (user.get_full_name() or "").strip() or user.get_username()
    return {"id": ids[0], "display": (practitioner_display(body) if isinstance(body, dict) else "") or full}


def registration_clinicians(*, user: Any) -> list[dict[str, str]] | None:
    """The clinicians a new patient can be given to, for a user who may register patients but joins no care team
    (the front desk; issue 18): ``[{"id", "display"}]`` of the Practitioners of active users with a care-team
    role — those sharing one of the user's wards when the user works on wards — sorted by name. None for
    everyone else (a registering clinician joins the team themselves, ``fhir.services._registrant_care_teams``).
    Shipped in the sign-in answer so an offline registration can still name one."""
    from django.contrib.auth import get_user_model

    held = rbac.user_roles(user)
    if not held or any(rbac.ROLES[r].scope == "care-team" for r in held):
        return None
    if not any("C" in rbac.ROLES[r].grants.get("Patient", "") for r in held):
        return None
    care_roles = [name for name, role in rbac.ROLES.items() if role.scope == "care-team"]
    wards = set(user_ward_ids(user=user))
    # The same rules as user_practitioner_ids / user_ward_ids / user_practitioner per clinician, read for all of
    # them at once: a constant number of queries however many clinicians the hospital has.
    clinicians = {u.get_username(): u for u in
                  get_user_model().objects.filter(is_active=True, groups__name__in=care_roles).distinct()}
    own: dict[str, set[str]] = {}  # username -> their Practitioner ids
    for username, pid in directory().practitioner_ids_by_code(system=USER_IDENTIFIER_SYSTEM, codes=sorted(clinicians)):
        own.setdefault(username, set()).add(pid)
    if wards:
        works_on: dict[str, set[str]] = {}  # Practitioner id -> wards of its active roles
        for body in _refs_to("PractitionerRole", "practitioner", "Practitioner", set().union(*own.values())):
            who = _ref_id(body.get("practitioner"), "Practitioner")
            if who is not None and body.get("active") is not False:
                works_on.setdefault(who, set()).update(
                    i for i in (_ref_id(x, "Location") for x in body.get("location") or []) if i)
        own = {u: ids for u, ids in own.items() if wards & set().union(*(works_on.get(i, set()) for i in ids))}
    first = {u: min(ids) for u, ids in own.items()}  # with several, the lowest id (as user_practitioner)
    bodies = directory().practitioner_bodies(sorted(set(first.values())))
    out: dict[str, str] = {}
    for username, pid in first.items():
        body, u = bodies.get(pid), clinicians[username]
        full = (u.get_full_name() or "").strip() or u.get_username()
        out[pid] = (practitioner_display(body) if isinstance(body, dict) else "") or full
    return [{"id": i, "display": d} for i, d in sorted(out.items(), key=lambda kv: (kv[1].casefold(), kv[0]))]


# The care team across requests (issue 16): every pull page and every physician's FHIR read recomputed it (three
# queries and a parse of every CareTeam body of the user's teams). An entry is reused only while the store's
# CareTeam/Practitioner versions are as they were when it was computed, checked with one query of index probes
# (:func:`_care_team_epoch`): once the highest version of a type is settled (no smaller position still in
# flight: core.feed_horizon.feed_settled), every later commit of that type raises max(seq); an entry is stored only at
# a settled epoch (_settled_epoch). This transaction's own uncommitted writes carry fresh negative
# provisional positions from a sequence (never reused), which lower min(seq). So no process ever serves a care
# team older than what its transaction can read. PostgreSQL only: on SQLite positions are taken inline from a
# counter row that a rollback rewinds, so an equal position can mean different teams.
_CARE_TEAM_CACHE: dict[tuple[str, Any, str], tuple[tuple[Any, ...], frozenset[str]]] = {}
_CARE_TEAM_CACHE_MAX = 10_000


def _epoch_sql(types: Sequence[str]) -> str:
    """Per type: max(seq), min(seq) and the allocation stamp of the max row (index probes), then the
    snapshot's bounds (for :func:`_settled_epoch`)."""
    probes = []
    for t in types:  # fixed type names, no input
        probes += [
            f"(SELECT max(seq) FROM fhir_resourceversion WHERE resource_type = '{t}')",  # noqa: S608
            f"(SELECT min(seq) FROM fhir_resourceversion WHERE resource_type = '{t}')",  # noqa: S608
            f"(SELECT xmin::text::bigint FROM fhir_resourceversion WHERE resource_type = '{t}' "  # noqa: S608
            "ORDER BY seq DESC LIMIT 1)",
        ]
    return ("SELECT " + ", ".join(probes) + ", pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint")


def _settled_epoch(row: Sequence[Any] | None) -> tuple[tuple[Any, ...], Callable[[], bool]] | None:
    """The epoch of an :func:`_epoch_sql` row, and a check of whether an entry computed now may be STORED under
    it: only once every type's highest version is settled (core.feed_horizon.feed_settled), since until then a
    smaller position of that type may still commit without raising max(seq). A hit needs no such check: an
    entry stored at a settled epoch stays valid exactly while the probes are unchanged."""
    if not row:
        return None
    *probes, xmin, xmax = row
    stamps = [int(stamp) for stamp in probes[2::3] if stamp is not None]

    def storable() -> bool:
        if not feed_horizon_applies() or all(feed_settled(st, int(xmin), int(xmax)) for st in stamps):
            return True
        # The plain snapshot xmin counts every database of the cluster; the feed's own horizon leaves out the
        # others' transactions (~1 ms, so only when the cheap check says no). A later snapshot is fine here:
        # whatever committed in between is in the value, computed before this is asked.
        with connection.cursor() as cur:
            cur.execute(f"SELECT {FEED_XMIN_SQL}, {FEED_XMAX_SQL}")  # noqa: S608 - constants
            got = cur.fetchone()
        return got is not None and all(feed_settled(st, int(got[0]), int(got[1])) for st in stamps)

    return tuple(probes), storable


_CARE_TEAM_EPOCH_SQL = _epoch_sql(("CareTeam", "Practitioner"))


def _care_team_epoch() -> tuple[tuple[Any, ...], Callable[[], bool]] | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cur:
        cur.execute(_CARE_TEAM_EPOCH_SQL)
        got = _settled_epoch(cur.fetchone())
    return ((connection.alias, *got[0]), got[1]) if got is not None else None


def care_team_patient_ids(*, user: Any) -> frozenset[str]:
    """Patients whose current CareTeam lists, as a ``participant.member``, a Practitioner identifying ``user``.

    A CareTeam with status ``inactive`` or ``entered-in-error`` (or deleted) does not count. This is the
    care-team half of :func:`visible_patient_ids`; callers want that function, not this one. Reused across
    requests while no CareTeam or Practitioner changed (see ``_CARE_TEAM_CACHE``).
    """
    got = _care_team_epoch()
    epoch, storable = got if got is not None else (None, lambda: False)
    key = (str(epoch[0]) if epoch else "", getattr(user, "pk", None), user.get_username())
    if epoch is not None and key[1] is not None:
        hit = _CARE_TEAM_CACHE.get(key)
        if hit is not None and hit[0] == epoch:
            return hit[1]
    value = _care_team_compute(user)
    if epoch is not None and key[1] is not None and storable():
        if len(_CARE_TEAM_CACHE) >= _CARE_TEAM_CACHE_MAX:
            _CARE_TEAM_CACHE.clear()  # bounded; a full clear is rare and only costs a recompute
        _CARE_TEAM_CACHE[key] = (epoch, value)
    return value


def _care_team_compute(user: Any) -> frozenset[str]:
    practitioners = user_practitioner_ids(user=user)
    if not practitioners:
        return frozenset()
    patients: set[str] = set()
    for body in directory().care_team_bodies(sorted(practitioners)):
        if body.get("status") in INACTIVE_CARETEAM:
            continue
        members = {
            parse_reference(str((p.get("member") or {}).get("reference") or ""))
            for p in body.get("participant") or []
            if isinstance(p, dict)
        }
        if not any(m is not None and m[0] == "Practitioner" and m[1] in practitioners for m in members):
            continue
        subject = parse_reference(str((body.get("subject") or {}).get("reference") or ""))
        if subject is not None and subject[0] == "Patient":
            patients.add(subject[1])
    return frozenset(patients)


# --- Ward census and schedule (issue 13, item 1) ----------------------------------------------------------
#
# Besides the care team and grants, a user may see the current inpatients of the wards/units they work on and
# the patients of their schedule for today and tomorrow:
#
#   ward census: an Encounter with status ``in-progress`` and an inpatient class (v3 ActCode IMP, ACUTE,
#   NONAC) whose current ``location`` (status ``active``, or no status and no ``period.end``) is a Location the
#   user works on — one named by a PractitionerRole (``active`` not false) whose ``practitioner`` is the user's;
#   schedule: an Appointment (not cancelled, noshow or entered-in-error) whose participants include the user's
#   Practitioner and whose ``start`` falls within the next SCHEDULE_DAYS days (the site's time zone); its Patient
#   participants (today's and tomorrow's are pinned on devices, later ones ranked);
#   recently on the ward: patients who left one of those wards in the last WARD_RECENT_DAYS days (ranked).

_INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
_APPOINTMENT_OFF = frozenset({"cancelled", "noshow", "entered-in-error"})


def _refs_to(
    resource_type: str, param: str, target_type: str, ids: Iterable[str], *,
    codes: tuple[str, Iterable[str]] | None = None, ends_after: tuple[Iterable[str], datetime] | None = None,
    starts_within: tuple[str, datetime, datetime] | None = None,
) -> list[dict[str, Any]]:
    """Live bodies of ``resource_type`` whose ``param`` references one of ``target_type``/``ids``, narrowed in
    the search index (never by reading bodies: a ward's or a practitioner's whole history would be loaded):
    ``codes`` (param, codes) a token; ``ends_after`` (params, instant) a date/period of one of the params
    ending after the instant (an open end is unbounded); ``starts_within`` (param, lo, hi) a date starting in
    [lo, hi). The caller still checks the body: the index only cuts the rows read, so these filters must be
    supersets of the rule."""
    return directory().referencing(resource_type, param, target_type, ids, codes=codes, ends_after=ends_after,
                                   starts_within=starts_within)


def _ref_id(ref: Any, rtype: str) -> str | None:
    parsed = parse_reference(str((ref or {}).get("reference") or "")) if isinstance(ref, dict) else None
    return parsed[1] if parsed is not None and parsed[0] == rtype else None


def user_ward_ids(*, user: Any) -> dict[str, str]:
    """Location id -> name of the wards/units ``user`` works on (their Practitioner's active PractitionerRoles)."""
    practitioners = user_practitioner_ids(user=user)
    if not practitioners:
        return {}
    wards: set[str] = set()
    for body in _refs_to("PractitionerRole", "practitioner", "Practitioner", practitioners):
        if body.get("active") is False:
            continue
        wards.update(i for i in (_ref_id(x, "Location") for x in body.get("location") or []) if i)
    names = directory().location_names(sorted(wards))
    return {w: str(names.get(w) or "ward") for w in sorted(wards)}


def _current_locations(encounter: dict[str, Any]) -> set[str]:
    out = set()
    for loc in encounter.get("location") or []:
        if not isinstance(loc, dict):
            continue
        status, end = loc.get("status"), (loc.get("period") or {}).get("end")
        if status == "active" or (status is None and not end):
            lid = _ref_id(loc.get("location"), "Location")
            if lid:
                out.add(lid)
    return out


def ward_census(*, user: Any) -> dict[str, str]:
    """Patient id -> ward name for the current inpatients of the wards ``user`` works on."""
    wards = user_ward_ids(user=user)
    if not wards:
        return {}
    out: dict[str, str] = {}
    for body in _refs_to("Encounter", "location", "Location", wards, codes=("status", ["in-progress"])):
        klass = body.get("class") or {}
        if body.get("status") != "in-progress" or (isinstance(klass, dict) and klass.get("code")) not in _INPATIENT_CLASSES:
            continue
        here = _current_locations(body) & wards.keys()
        pid = _ref_id(body.get("subject"), "Patient")
        if here and pid:
            out[pid] = wards[sorted(here)[0]]
    return out


#: How far back a ward's former patients stay in scope, and how far ahead the schedule reaches (issue 13:
#: the part of the scope a device holds only if the budget allows, ranked by the prefetch model).
WARD_RECENT_DAYS = 14
SCHEDULE_DAYS = 7


def ward_recent(*, user: Any, now: datetime | None = None) -> dict[str, str]:
    """Patient id -> ward name for patients who left the user's wards (discharge or transfer) in the last
    ``WARD_RECENT_DAYS`` days: the discharge summary, the readmission, the question from the GP."""
    wards = user_ward_ids(user=user)
    if not wards:
        return {}
    since = _now(now) - timedelta(days=WARD_RECENT_DAYS)
    out: dict[str, str] = {}
    # Only stays (or location periods) ending after ``since``, or still open: not the ward's whole history.
    for body in _refs_to("Encounter", "location", "Location", wards, ends_after=(("date", "location-period"), since)):
        if body.get("status") in ("entered-in-error", "cancelled"):
            continue
        pid = _ref_id(body.get("subject"), "Patient")
        enc_end = (body.get("period") or {}).get("end")
        for loc in body.get("location") or []:
            lid = _ref_id((loc or {}).get("location"), "Location") if isinstance(loc, dict) else None
            end = (loc.get("period") or {}).get("end") or enc_end if lid else None
            try:
                left = datetime.fromisoformat(str(end).replace("Z", "+00:00")) if end else None
            except ValueError:
                left = None
            if pid and lid in wards and left is not None and timezone.is_aware(left) and left >= since:
                out[pid] = wards[lid]
    return out


def schedule_patients(*, user: Any, now: datetime | None = None) -> dict[str, str]:
    """Patient id -> ``appointment-today`` | ``appointment-tomorrow`` | ``appointment-week`` (later in the next
    ``SCHEDULE_DAYS`` days) for ``user``'s schedule."""
    practitioners = user_practitioner_ids(user=user)
    if not practitioners:
        return {}
    today = timezone.localdate(_now(now))
    out: dict[str, str] = {}
    # The window in the index, a day wider on each side (a start without a zone is indexed as UTC; the site's
    # zone may be up to 14 h away); the days are decided below in the site's zone, as before.
    midnight = timezone.make_aware(datetime.combine(today, datetime.min.time()), timezone.get_current_timezone())
    window = ("date", midnight - timedelta(days=1), midnight + timedelta(days=SCHEDULE_DAYS + 2))
    for body in _refs_to("Appointment", "practitioner", "Practitioner", practitioners, starts_within=window):
        if body.get("status") in _APPOINTMENT_OFF or not body.get("start"):
            continue
        try:
            start = datetime.fromisoformat(str(body["start"]).replace("Z", "+00:00"))
        except ValueError:
            continue
        day = timezone.localtime(start).date() if timezone.is_aware(start) else start.date()
        ahead = (day - today).days
        which = {0: "appointment-today", 1: "appointment-tomorrow"}.get(ahead)
        if which is None and 1 < ahead <= SCHEDULE_DAYS:
            which = "appointment-week"
        if which is None:
            continue
        rank = ("appointment-today", "appointment-tomorrow", "appointment-week")
        for p in body.get("participant") or []:
            pid = _ref_id((p or {}).get("actor"), "Patient") if isinstance(p, dict) else None
            if pid and (pid not in out or rank.index(which) < rank.index(out[pid])):
                out[pid] = which
    return out


def scope_reasons(*, user: Any, now: datetime | None = None) -> dict[str, list[str]]:
    """Why each patient of ``user``'s device scope is in it: ``care-team``, ``grant``, ``ward:<name>``,
    ``appointment-today``/``-tomorrow`` (the words of ``pyclient.device_set``). Keys == the device scope."""
    out: dict[str, list[str]] = {}
    for pid in care_team_patient_ids(user=user):
        out.setdefault(pid, []).append("care-team")
    for pid in patient_ids_granted(user=user, now=now):
        out.setdefault(pid, []).append("grant")
    census = ward_census(user=user)
    for pid, ward in census.items():
        out.setdefault(pid, []).append(f"ward:{ward}")
    for pid, ward in ward_recent(user=user, now=now).items():
        if pid not in census:
            out.setdefault(pid, []).append(f"ward-recent:{ward}")
    for pid, which in schedule_patients(user=user, now=now).items():
        out.setdefault(pid, []).append(which)
    return out


def _team_and_grants(user: Any) -> frozenset[str]:
    memo = _memo.get()
    key = getattr(user, "pk", None)
    if memo is not None and key is not None and key in memo["scope"]:
        return memo["scope"][key]  # type: ignore[no-any-return]
    value = care_team_patient_ids(user=user) | frozenset(patient_ids_granted(user=user)) | _wards_and_schedule(user)
    if memo is not None and key is not None:
        memo["scope"][key] = value
    return value


# The ward and schedule part of the scope (census, recent ward patients, appointments: issue 13) is reused
# across requests like the care team: while no version of the types it reads changed (one query of index
# probes, the same reasoning as _CARE_TEAM_EPOCH_SQL), and within the same clock hour (it depends on the time:
# "the last 14 days", "today and tomorrow"). Without it every physician's read cost six more queries.
_WARD_SCOPE_TYPES = ("PractitionerRole", "Encounter", "Appointment", "Location", "Practitioner")
_WARD_SCOPE_EPOCH_SQL = _epoch_sql(_WARD_SCOPE_TYPES)
_WARD_SCOPE_CACHE: dict[tuple[Any, ...], tuple[tuple[Any, ...], frozenset[str]]] = {}


def _wards_and_schedule(user: Any) -> frozenset[str]:
    from django.db import connection

    def compute() -> frozenset[str]:
        return frozenset(ward_census(user=user)) | frozenset(ward_recent(user=user)) | frozenset(
            schedule_patients(user=user))

    if connection.vendor != "postgresql" or getattr(user, "pk", None) is None:
        return compute()
    with connection.cursor() as cur:
        cur.execute(_WARD_SCOPE_EPOCH_SQL)
        got = _settled_epoch(cur.fetchone())
    if got is None:
        return compute()
    epoch, storable = got
    key = (connection.alias, user.pk, user.get_username(), timezone.localtime().strftime("%Y-%m-%d %H"))
    hit = _WARD_SCOPE_CACHE.get(key)
    if hit is not None and hit[0] == epoch:
        return hit[1]
    value = compute()
    if storable():
        if len(_WARD_SCOPE_CACHE) >= _CARE_TEAM_CACHE_MAX:
            _WARD_SCOPE_CACHE.clear()
        _WARD_SCOPE_CACHE[key] = (epoch, value)
    return value


def visible_patient_ids(
    *, user: Any, action: str | None = None, resource_type: str | None = None, device: bool = False
) -> AllPatients | frozenset[str]:
    """THE answer to "which patients may ``user`` see": :data:`ALL_PATIENTS` or a set of patient ids.

    Considers the user's roles that grant ``action`` on ``resource_type`` (any action / any type when
    omitted; ``"*"`` = every clinical type). A role with scope ``all`` → :data:`ALL_PATIENTS`; a role with
    scope ``care-team`` → the patients of the user's care teams plus active break-the-glass grants; scope
    ``none`` (or no role, or not signed in) → the empty set.

    ``device=True`` asks what may be *replicated to a device* (sync pull, WebSocket hints): never
    :data:`ALL_PATIENTS` — a tablet does not carry the whole hospital (a lost device exposes only the
    user's own patients) — so roles with scope ``all`` replicate their care teams and grants like everyone;
    they reach other charts online through FHIR REST. Memoised within :func:`visible_patients_cache`.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    held = [rbac.ROLES[r] for r in sorted(rbac.user_roles(user))]
    if action is not None or resource_type is not None:
        wanted = rbac.normalize_action(action) if action is not None else None
        types = [resource_type] if resource_type is not None else list(rbac.RESOURCE_TYPES)
        held = [
            r for r in held
            if any(wanted in rbac.allowed_actions(r.name, t) if wanted else rbac.allowed_actions(r.name, t)
                   for t in types)
        ]
    scopes = {r.scope for r in held}
    if "all" in scopes and not device:
        return ALL_PATIENTS
    if scopes & {"care-team", "all"}:
        return _team_and_grants(user)
    return frozenset()


def patients_within(*, patient_ids: Iterable[str], visible: AllPatients | frozenset[str] | set[str]) -> bool:
    """THE rule for a record (or one version of it) that names patients: it is visible only if EVERY patient
    it names is visible. A Communication about an in-scope patient sent to an out-of-scope one is withheld
    on every path — read, vread, search, history (per version), sync pull and WebSocket hints — not shown on
    some and refused on others (issue 10). A record naming no patient is not decided here (callers: non-
    compartment types such as Practitioner follow their own rule)."""
    if isinstance(visible, AllPatients):
        return True
    named = {str(p) for p in patient_ids if p}
    return bool(named) and named <= visible


def patient_recreate_check(*, user: Any) -> None:
    """Recreating a deleted Patient (a PUT/push onto its tombstone) would hand its old chart to whoever does it
    (issue 10, item 11): only the ``integration`` role (interface engines, merges) may; if that role does not
    exist in ``roles.ROLES`` nobody may. Raises ``Forbidden``."""
    if "integration" in rbac.ROLES and "integration" in rbac.user_roles(user):
        return
    raise Forbidden("This patient record was deleted and cannot be recreated (ask the records team)")


def access_check(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    action: str,
    resource_type: str,
    patient_ids: Iterable[str] = (),
) -> None:
    """Raise unless ``user`` may do ``action`` on ``resource_type`` for these patients.

    Allowed when one of the user's roles grants the action on the type (``roles.ROLES``)
    and every patient in ``patient_ids`` is within :func:`visible_patient_ids` for that action
    and type. Empty ``patient_ids`` is a type-level check (a search across patients: the caller
    filters results with :func:`visible_patient_ids`). Creating a new Patient is exempt from the
    scope test (the patient is not on any care team yet), and so are create/update into the
    compartment of a patient that does not exist yet or that this user registered earlier in the
    same request (offline registration: patient, CareTeam and first notes synced in one push).
    Raises ``NotAuthenticated`` (401) or ``Forbidden`` (403); returns None when allowed.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated("Authentication required")
    if action not in ACTIONS:
        raise Forbidden(f"Unknown action {action!r}")
    wanted = rbac.normalize_action(action)
    patients = {str(p) for p in patient_ids if p}
    held = rbac.user_roles(user)
    if not any(wanted in rbac.allowed_actions(r, resource_type) for r in held):
        raise Forbidden(f"Your role does not allow {action} on {resource_type}")
    if not patients or (resource_type == "Patient" and wanted == "create"):
        return
    visible = visible_patient_ids(user=user, action=wanted, resource_type=resource_type)
    if isinstance(visible, AllPatients):
        return
    if not visible and not any(
        rbac.ROLES[r].scope == "care-team" for r in held if wanted in rbac.allowed_actions(r, resource_type)
    ):
        raise Forbidden("Your role does not give access to patient data")
    outside = patients - visible
    if not outside:
        return
    if wanted in ("create", "update"):
        outside -= _registered_here(user)
        if not outside or _not_yet_registered(user, outside, set(visible)):
            # Offline registration: a new patient, their CareTeam and first notes arrive in one batch,
            # and the patient only enters scope once the CareTeam lands. Nobody's existing chart is touched.
            return
    raise Forbidden("Patient is outside your care team (break-the-glass can grant emergency access)")


def _not_yet_registered(user: Any, patients: set[str], allowed: set[str]) -> bool:
    """True if none of ``patients`` has ever existed: no Patient row (live OR deleted) and no record in their
    compartment. A deleted patient's chart is still someone's chart: a CareTeam naming it must not put its
    author in scope of the old records (issue 10, item 11)."""
    return not directory().patients_ever_existed(sorted(patients))


def may_access(**kwargs: Any) -> bool:
    """``access_check`` as a boolean (for hiding actions in UIs; never a substitute on the server)."""
    try:
        access_check(**kwargs)
    except ApiError:
        return False
    return True


# --- Break-the-glass -----------------------------------------------------------------------------


def break_glass_duration() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "OMNICARE_BREAK_GLASS_SECONDS", 4 * 3600)))


def patient_ids_granted(*, user: Any, now: datetime | None = None) -> set[str]:
    """Patients ``user`` holds an active (started, not ended, not expired) emergency grant for.

    The sync scope adds these to the care-team scope, so the records sync to the clinician's
    device for the grant's duration and drop out of scope afterwards.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    memo = _memo.get() if now is None else None  # within visible_patients_cache: once per request and user
    key = getattr(user, "pk", None)
    if memo is not None and key in memo.setdefault("grants", {}):
        return set(memo["grants"][key])
    preloaded = _preloaded_grants(user) if now is None else None
    if preloaded is not None:
        return set(preloaded)
    now = _now(now)
    granted = set(
        # Not ended *by* ``now``: a past ``now`` (the prefetch training replay) sees a grant ended later as held.
        EmergencyAccessGrant.objects.filter(user=user, started__lte=now, expires__gt=now)
        .filter(Q(ended__isnull=True) | Q(ended__gt=now)).values_list("patient_id", flat=True)
    )
    if memo is not None and key is not None:
        memo["grants"][key] = frozenset(granted)
    return granted


def break_glass_request(
    *, user: Any, patient_id: str, reason: str, device_id: str = "", now: datetime | None = None,
    duration: timedelta | None = None,
) -> EmergencyAccessGrant:
    """Grant ``user`` emergency access to ``patient_id`` for 4 hours, recorded as a security alert.

    Fails closed: the grant and its audit event commit together, and if the audit write
    fails no grant exists (``AuditUnavailable`` propagates; the API answers 503).
    """
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAuthenticated("Authentication required")
    if not any(rbac.ROLES[r].break_glass for r in rbac.user_roles(user)):
        raise Forbidden("Your role may not use break-the-glass")
    reason = (reason or "").strip()
    problem = reason_problem(reason)  # the rule the device checks too (pyclient.views.break_glass)
    if problem:
        raise BadRequest(problem, expression=["reason"])
    patient_id = str(patient_id or "").strip()
    if not patient_id or len(patient_id) > 128:
        raise BadRequest("patient id is required", expression=["patient"])
    if device_id:
        device_id_check(device_id=device_id)
    now = _now(now)

    if not directory().patient_exists(patient_id):
        raise NotFound("No such patient")  # no grant, and no grant for a patient id that could be created later
    with transaction.atomic():
        # One active grant per user and patient: asking again while one runs returns it (not a second one).
        active = (EmergencyAccessGrant.objects.select_for_update()
                  .filter(user=user, patient_id=patient_id, ended__isnull=True, started__lte=now, expires__gt=now)
                  .order_by("-started").first())
        if active is not None:
            return active
        grant = EmergencyAccessGrant.objects.create(
            user=user, patient_id=patient_id, reason=reason[:2000], started=now,
            expires=now + (duration or break_glass_duration()), device_id=device_id[:64],
        )
        event = audit.audit_record(
            user=user, action="break-glass-start", resource_type="Patient", resource_id=patient_id,
            patient_ids=[patient_id], purpose="ETREAT", category="security", device_id=device_id or None,
            detail={"grant": grant.pk, "reason": grant.reason, "expires": grant.expires.isoformat()}, now=now,
            sequence=True,  # the grant records the event's seq (break-the-glass is rare: it may wait for the head)
        )
        EmergencyAccessGrant.objects.filter(pk=grant.pk).update(start_event_seq=event.seq)
        grant.start_event_seq = event.seq
    visible_patients_cache_clear()  # the grant widens this user's scope for the rest of the request
    grants_preload_clear(user)
    return grant


def _stop(grant: EmergencyAccessGrant, *, by: Any, end_reason: str, at: datetime, now: datetime) -> None:
    with transaction.atomic():
        locked = EmergencyAccessGrant.objects.select_for_update().get(pk=grant.pk)
        if locked.stop_event_seq is not None:
            return
        event = audit.audit_record(
            user=by, action="break-glass-stop", resource_type="Patient", resource_id=locked.patient_id,
            patient_ids=[locked.patient_id], purpose="ETREAT", category="security",
            detail={"grant": locked.pk, "end": end_reason, "grantee": locked.user.get_username()}, now=now,
            sequence=True,
        )
        EmergencyAccessGrant.objects.filter(pk=locked.pk).update(ended=at, end_reason=end_reason,
                                                                 stop_event_seq=event.seq)
        # The grantee's open sockets learn it at once (PROTOCOL.md §8 ``emergency-ended``), not at the device's
        # next 15 s poll: the chart leaves the screen within a second or two. After commit, like every hint.
        ended = (locked.user_id, locked.pk, locked.patient_id)
        transaction.on_commit(lambda: break_glass_notify(user_id=ended[0], grant_id=ended[1], patient_id=ended[2]))
    visible_patients_cache_clear()  # the grant no longer counts, even later in this request


def break_glass_notify(*, user_id: Any, grant_id: int, patient_id: str) -> None:
    """Tell ``user_id``'s open sync sockets that this grant of theirs ended (best effort: the device also asks
    ``GET /api/access/break-glass`` every 15 s and checks the expiry by its clock)."""
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(f"oc.user.{user_id}", {
                "type": "emergency.ended", "grantId": grant_id, "patientId": patient_id})
    except Exception:
        log.exception("could not tell open sockets that an emergency grant ended")


def break_glass_revoke(*, by: Any, grant_id: int, now: datetime | None = None) -> EmergencyAccessGrant:
    """A privacy officer ends someone's running emergency grant (the admin's "revoke" action): recorded as a
    ``break-glass-stop`` by ``by`` with end ``revoked``; an already ended grant is left as it is."""
    now = _now(now)
    grant = EmergencyAccessGrant.objects.filter(pk=grant_id).select_related("user").first()
    if grant is None:
        raise NotFound("No such emergency access grant")
    if grant.stop_event_seq is None:
        if grant.expires > now:
            _stop(grant, by=by, end_reason="revoked", at=now, now=now)
        else:
            _stop(grant, by=grant.user, end_reason="expired", at=grant.expires, now=now)
    grant.refresh_from_db()
    return grant


def break_glass_end(*, user: Any, grant_id: int, now: datetime | None = None) -> EmergencyAccessGrant:
    """End one's own emergency grant early (records 'emergency override stopped')."""
    now = _now(now)
    grant = EmergencyAccessGrant.objects.filter(pk=grant_id, user=user).first()
    if grant is None:
        raise NotFound("No such emergency access grant")
    if grant.stop_event_seq is None:
        if grant.expires > now:
            _stop(grant, by=user, end_reason="ended", at=now, now=now)
        else:  # already expired but the beat job has not recorded it yet: record the stop now, as expired
            _stop(grant, by=user, end_reason="expired", at=grant.expires, now=now)
    grant.refresh_from_db()
    grants_preload_clear(user)
    if grant.end_reason == "expired":
        raise Conflict("This emergency access grant had already expired (its end is recorded)")
    return grant


def break_glass_expire(*, now: datetime | None = None) -> int:
    """Record 'emergency override stopped' for grants past their expiry (beat job). Returns how many."""
    now = _now(now)
    n = 0
    for grant in EmergencyAccessGrant.objects.filter(stop_event_seq__isnull=True, expires__lte=now).select_related("user"):
        _stop(grant, by=grant.user, end_reason="expired", at=grant.expires, now=now)
        n += 1
    return n


# --- Devices: lost or stolen ---------------------------------------------------------------------


class DeviceRevoked(ApiError):
    """The device was reported lost: no sync; the client must erase its local data.

    Response: 403, OperationOutcome issue code ``security`` with details code ``device-revoked``,
    and the header ``OmniCare-Device: revoked; wipe``. The PWA, on seeing either, deletes its
    IndexedDB databases, caches and keys, then signs out.
    """

    status, code = 403, "security"
    WIPE_HEADER = ("OmniCare-Device", "revoked; wipe")

    def __init__(self) -> None:
        super().__init__("This device has been revoked. Local data must be erased.",
                         headers={self.WIPE_HEADER[0]: self.WIPE_HEADER[1]})

    def outcome(self) -> dict[str, Any]:
        out = super().outcome()
        out["issue"][0]["details"] = {
            "coding": [{"system": "urn:omnicare:device", "code": "device-revoked", "display": "wipe local data"}],
            "text": "wipe",
        }
        return out


def device_revoke(
    *, owner: Any, device_id: str, by: Any, reason: str, now: datetime | None = None
) -> DeviceRevocation:
    """Revoke ``owner``'s device ``device_id`` (lost or stolen). Idempotent; audited as a security event.

    Only administrators (or the device's owner, reporting their own tablet lost) may revoke.
    """
    if by is None or not by.is_authenticated or not by.is_active:
        raise NotAuthenticated("Authentication required")
    if rbac.ADMINISTRATOR not in rbac.user_roles(by) and not by.is_superuser and by.pk != owner.pk:
        raise Forbidden("Only administrators revoke other users' devices")
    device_id_check(device_id=device_id)
    now = _now(now)
    with transaction.atomic():
        row, created = DeviceRevocation.objects.get_or_create(
            user=owner, device_id=device_id, defaults={"revoked": now, "revoked_by": by, "reason": reason[:200]}
        )
        if created:
            ended = device_credentials_end(user=owner, device_id=device_id)
            audit.audit_record(user=by, action="device-revoke", category="security", device_id=device_id,
                         purpose="HOPERAT", detail={"owner": owner.get_username(), "reason": reason[:200],
                                                    "sessionsEnded": ended[0], "tokensRevoked": ended[1]}, now=now)
    return row


SESSION_DEVICE = "oc_device"
SESSION_REVOKED = "oc_device_revoked"


def device_credentials_end(*, user: Any, device_id: str) -> tuple[int, int]:
    """End the sessions and revoke the bearer tokens bound to ``user``'s device ``device_id``, and tell its open
    WebSockets to close (within seconds). Returns (sessions ended, tokens revoked)."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    sessions = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = session.get_decoded()
        if str(data.get("_auth_user_id")) == str(user.pk) and data.get(SESSION_DEVICE) == device_id:
            # Not deleted but marked: every further request with it is refused with the wipe order (403
            # DeviceRevoked), so the tablet erases itself instead of just being asked to sign in again.
            store = SessionStore(session_key=session.session_key)
            store[SESSION_REVOKED] = True
            store.save()
            sessions += 1
    tokens = ApiToken.objects.filter(user=user, device_id=device_id, revoked=False).update(revoked=True)
    transaction.on_commit(lambda: credentials_notify(user_id=user.pk, device_id=device_id))
    return sessions, tokens


def credentials_notify(*, user_id: Any, device_id: str | None = None) -> None:
    """Tell ``user_id``'s open sockets (all, or only ``device_id``'s) to re-check their credentials now
    (the sync consumer closes when they are gone). Best effort: sockets also re-check every few seconds."""
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(f"oc.user.{user_id}", {"type": "credentials.changed",
                                                                    "deviceId": device_id})
    except Exception:
        log.exception("could not notify open sockets of a credential change")


def device_bind(*, request: Any, device_id: str) -> None:
    """Bind the caller's session or bearer token to ``device_id`` at its first sync contact; a later contact
    from another device id with the same credentials is refused (403). A wiped or revoked device's session
    can thus not be reused by "another" device, and revoking a device ends exactly its credentials."""
    session = getattr(request, "session", None)
    th = getattr(request, "_omnicare_token_hash", None)
    bound = getattr(request, "_omnicare_token_device", None)
    if th and bound is not None:  # read by this request's token lookup (token_authenticate)
        if not bound:
            ApiToken.objects.filter(token_hash=th, device_id="").update(device_id=device_id)
        elif bound != device_id:
            raise Forbidden("This token belongs to another device; create a token for this one")
        return
    if th:
        row = ApiToken.objects.filter(token_hash=th).only("pk", "device_id").first()
        if row is not None:
            if not row.device_id:
                ApiToken.objects.filter(pk=row.pk, device_id="").update(device_id=device_id)
            elif row.device_id != device_id:
                raise Forbidden("This token belongs to another device; create a token for this one")
        return
    if session is not None and getattr(request.user, "is_authenticated", False):
        bound = session.get(SESSION_DEVICE)
        if bound is None:
            session[SESSION_DEVICE] = device_id
        elif bound != device_id:
            raise Forbidden("This session belongs to another device; sign in again on this one")


DEVICE_HEADER = "OmniCare-Device-Id"


def session_device_check(*, request: Any) -> None:
    """A session bound to a device (at its first sync contact) is accepted only from that device: every request
    with it must carry the device's id in the ``OmniCare-Device-Id`` header (the PWA sends it on every call).
    Why: a tablet signed out offline wipes its keys and its device id at once, but the server hears of the
    sign-out only when the browser is back online; until then the cookie alone (a stale cookie, a copied
    profile) reads nothing, on FHIR REST as on sync (issue 10, item 15). ``/api/auth/`` stays open to the bare
    cookie so that the pending sign-out itself (and ``me``) can complete."""
    bound = request.session.get(SESSION_DEVICE)
    if not bound or request.path.startswith("/api/auth/"):
        return
    sent = request.headers.get(DEVICE_HEADER)
    if sent is None:
        raise NotAuthenticated("This session belongs to a device that did not identify itself "
                               "(signed out or wiped?); sign in again")
    if sent != bound:
        raise Forbidden("This session belongs to another device; sign in again on this one")


def token_device_revoked_check(*, token: str) -> None:
    """Raise :class:`DeviceRevoked` if ``token`` was revoked together with the device it was bound to: the
    tablet still holding it learns to wipe itself (it gets no data either way)."""
    row = ApiToken.objects.filter(token_hash=_hash(token), revoked=True).exclude(device_id="").first()
    if row is not None and DeviceRevocation.objects.filter(user_id=row.user_id, device_id=row.device_id).exists():
        revoked_device_contact(user=row.user, device_id=row.device_id)
        raise DeviceRevoked()


def revoked_device_contact(*, user: Any, device_id: str) -> None:
    """A revoked device's credentials were used again: a security event (best effort), then the wipe order."""
    # The caller answers with the wipe order: record the first time, as device_check does (the dashboard's
    # "told to wipe").
    DeviceRevocation.objects.filter(user=user, device_id=device_id, wipe_told__isnull=True).update(wipe_told=_now(None))
    try:
        audit.audit_record(user=user, action="revoked-device-contact", category="security", outcome="denied",
                     purpose="HOPERAT", device_id=device_id, detail={"owner": user.get_username()})
    except Exception:
        log.exception("could not audit a revoked device's contact")


def device_id_ever_revoked(*, device_id: str) -> bool:
    """A revoked device id is burnt for good: it never registers again, for anyone."""
    return DeviceRevocation.objects.filter(device_id=device_id).exists()




def device_id_check(*, device_id: Any) -> str:
    """THE device-id rule for every route (push, pull, snapshots, WebSocket, registration, revocation):
    1-64 characters of ``A-Z a-z 0-9 . _ : -`` (a client-generated UUID fits). Anything else is a 400."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise BadRequest("deviceId must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
                         expression=["deviceId"])
    return device_id


def device_is_revoked(*, user: Any, device_id: str | None) -> bool:
    if not device_id or user is None or not getattr(user, "is_authenticated", False):
        return False
    return DeviceRevocation.objects.filter(user=user, device_id=device_id).exists()


def device_check(*, user: Any, device_id: str | None, now: datetime | None = None) -> None:
    """Raise :class:`DeviceRevoked` if ``user``'s device is revoked (call on every sync/WS contact).

    A device id that breaks :func:`device_id_check` is a 400 before anything else."""
    if device_id is not None:
        device_id_check(device_id=device_id)
    if not device_is_revoked(user=user, device_id=device_id):
        return
    DeviceRevocation.objects.filter(user=user, device_id=device_id, wipe_told__isnull=True).update(wipe_told=_now(now))
    raise DeviceRevoked()


# --- Login throttling and sessions ----------------------------------------------------------------


class TooManyRequests(ApiError):
    status, code = 429, "throttled"


LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_MAX_PER_USER = 5
LOGIN_MAX_PER_IP = 20
LOGIN_MAX_LOCK = timedelta(minutes=15)


def _lock_until(failures: list[datetime], limit: int) -> datetime | None:
    if len(failures) < limit:
        return None
    # 30 s after the limit-th failure, doubling with each further one, at most 15 minutes.
    lock = min(LOGIN_MAX_LOCK, timedelta(seconds=30 * 2 ** (len(failures) - limit)))
    return max(failures) + lock


def login_attempt_check(*, username: str, ip: str, now: datetime | None = None) -> None:
    """Raise ``TooManyRequests`` (429 + Retry-After) if sign-in for this username or address is locked.

    Call before checking the password; call :func:`login_attempt_record` after.
    """
    now = _now(now)
    since = now - LOGIN_WINDOW
    by_user = list(LoginFailure.objects.filter(username=username.lower(), at__gt=since).values_list("at", flat=True))
    by_ip = list(LoginFailure.objects.filter(ip=ip, at__gt=since).values_list("at", flat=True))
    until = max(
        (u for u in (_lock_until(by_user, LOGIN_MAX_PER_USER), _lock_until(by_ip, LOGIN_MAX_PER_IP)) if u),
        default=None,
    )
    if until is not None and until > now:
        wait = max(1, int((until - now).total_seconds() + 0.999))
        # The sentence the sign-in screen shows as it is (it may paint before the browser's Python is up).
        raise TooManyRequests(outcome.sign_in_paused(wait), headers={"Retry-After": str(wait)})


def login_attempt_record(
    *, username: str, ip: str, success: bool, user: Any = None, now: datetime | None = None
) -> None:
    """Remember a sign-in outcome: failures count toward the lock, success clears the username's count.

    Also writes a security audit event (best effort: a sign-in is not refused because the trail
    is down, but the failure is logged).
    """
    now = _now(now)
    if success:
        LoginFailure.objects.filter(username=username.lower()).delete()
    else:
        LoginFailure.objects.create(username=username.lower()[:150], ip=ip[:45], at=now)
        LoginFailure.objects.filter(at__lt=now - 4 * LOGIN_WINDOW).delete()  # keep the table small
    try:
        audit.audit_record(user=user if success else None, action="login", category="security",
                     outcome="success" if success else "failure", purpose="HOPERAT",
                     detail={"username": username[:150], "ip": ip[:45]}, now=now)
    except Exception:
        log.exception("could not audit a sign-in")


def sessions_end(*, user: Any) -> int:
    """Delete every server-side session of ``user`` (disabling an account calls this). Returns how many."""
    from django.contrib.sessions.models import Session

    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk):
            session.delete()
            ended += 1
    ApiToken.objects.filter(user=user, revoked=False).update(revoked=True)
    transaction.on_commit(lambda: credentials_notify(user_id=user.pk))
    return ended


# --- TOTP second factor (RFC 6238) ----------------------------------------------------------------

TOTP_STEP, TOTP_DIGITS = 30, 6


def totp_code(secret: bytes, step: int, digits: int = TOTP_DIGITS) -> str:
    """HOTP(secret, step) per RFC 4226 with SHA-1 (what authenticator apps use)."""
    import hmac
    import struct

    mac = hmac.new(secret, struct.pack(">Q", step), "sha1").digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def mfa_required(*, user: Any) -> bool:
    """Whether sign-in must ask for a TOTP code: enrolled users always; clinical roles when enforced.

    ``OMNICARE_MFA_ENFORCE=1`` requires it of physicians, nurses and pharmacists (an unenrolled
    one is sent to enrol first). Off by default so the demo signs in with a password only.
    """
    if MfaEnrollment.objects.filter(user=user, confirmed__isnull=False).exists():
        return True
    clinical = any(rbac.ROLES[r].scope == "care-team" for r in rbac.user_roles(user))
    return clinical and bool(getattr(settings, "OMNICARE_MFA_ENFORCE", False))


def totp_enroll(*, user: Any, issuer: str = "OmniCare") -> str:
    """Start (or restart) enrolment; returns the ``otpauth://`` URI for the authenticator app's QR code."""
    import base64 as b64
    from urllib.parse import quote

    secret = secrets.token_bytes(20)
    secret_put(name=f"totp:{user.pk}", value=secret)
    MfaEnrollment.objects.update_or_create(user=user, defaults={"confirmed": None, "last_step": 0})
    label = quote(f"{issuer}:{user.get_username()}")
    key = b64.b32encode(secret).decode().rstrip("=")
    return f"otpauth://totp/{label}?secret={key}&issuer={quote(issuer)}&algorithm=SHA1&digits=6&period=30"


def totp_verify(*, user: Any, code: str, now: datetime | None = None) -> bool:
    """Check a 6-digit code (±1 step of clock drift). A code is accepted once; the first success confirms."""
    import hmac

    code = (code or "").strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return False
    with transaction.atomic():
        row = MfaEnrollment.objects.select_for_update().filter(user=user).first()
        if row is None:
            return False
        secret = secret_get(name=f"totp:{user.pk}")
        step_now = int(_now(now).timestamp()) // TOTP_STEP
        for step in (step_now - 1, step_now, step_now + 1):
            if step > row.last_step and hmac.compare_digest(totp_code(secret, step), code):
                row.last_step = step
                row.confirmed = row.confirmed or _now(now)
                row.save(update_fields=["last_step", "confirmed"])
                return True
    return False


# --- One sign-in policy (PWA /api/auth/login and /admin/login/) -------------------------------------------------


class MfaRequired(NotAuthenticated):
    """Password accepted, second factor missing or wrong: the sign-in screen asks for the code."""

    def outcome(self) -> dict[str, Any]:
        out = super().outcome()
        out["issue"][0]["details"] = {
            "coding": [{"system": "urn:omnicare:auth", "code": "mfa-required"}], "text": "mfa-required"}
        return out


class PasswordChangeRequired(NotAuthenticated):
    """Password (and code) accepted, but an administrator set it: choose a new one before signing in."""

    def outcome(self) -> dict[str, Any]:
        out = super().outcome()
        out["issue"][0]["details"] = {
            "coding": [{"system": "urn:omnicare:auth", "code": "password-change-required"}],
            "text": "password-change-required"}
        return out


def sign_in(*, request: Any, username: str, password: str, code: str = "", new_password: str = "") -> Any:
    """:func:`sign_in_check`, then the session (``django.contrib.auth.login``). Returns the user."""
    from django.contrib.auth import login

    user = sign_in_check(request=request, username=username, password=password, code=code,
                         new_password=new_password)
    login(request, user)  # rotates the session key and the CSRF token
    return user


def sign_in_check(*, request: Any, username: str, password: str, code: str = "", new_password: str = "") -> Any:
    """THE sign-in: throttling and lockout, password, TOTP when required, forced password change after an
    administrator's reset, audit of every outcome. The PWA's ``/api/auth/login`` (through :func:`sign_in`) and
    the admin's ``/admin/login/`` (its form, then Django's LoginView starts the session) both call this.

    Raises ``TooManyRequests`` (429), ``NotAuthenticated`` (401), ``MfaRequired`` (401, details
    ``mfa-required``), ``PasswordChangeRequired`` (401, details ``password-change-required``) or
    ``BadRequest`` (a new password the validators refuse). Returns the signed-in user.
    """
    from django.contrib.auth import authenticate
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    ip = str(request.META.get("REMOTE_ADDR") or "")
    username = (username or "").strip()
    login_attempt_check(username=username, ip=ip)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        login_attempt_record(username=username, ip=ip, success=False)
        raise NotAuthenticated("Wrong username or password")  # one message: no account enumeration
    if rbac.token_only(user):  # integrations use bearer tokens; they never hold a UI or admin session
        login_attempt_record(username=username, ip=ip, success=False)
        raise NotAuthenticated("Wrong username or password")
    if mfa_required(user=user):
        if not (code or "").strip():
            raise MfaRequired("Enter the 6-digit code from your authenticator app")
        if not totp_verify(user=user, code=code):
            login_attempt_record(username=username, ip=ip, success=False)
            raise MfaRequired("That verification code is not correct")
    if PasswordResetRequired.objects.filter(user=user).exists():
        if not new_password:
            raise PasswordChangeRequired("Your password was reset by an administrator: choose a new password")
        if new_password == password:
            raise BadRequest("Choose a password different from the one you were given", expression=["newPassword"])
        try:
            validate_password(new_password, user)
        except ValidationError as exc:
            raise BadRequest(" ".join(exc.messages)[:500], expression=["newPassword"]) from None
        with transaction.atomic():
            user.set_password(new_password)
            user.save()  # ends every other session and token (credentials_changed)
            PasswordResetRequired.objects.filter(user=user).delete()
    login_attempt_record(username=username, ip=ip, success=True, user=user)
    return user


def password_reset_by_admin(*, user: Any, by: Any, now: datetime | None = None) -> None:
    """An administrator set ``user``'s password: the user must choose a new one at the next sign-in. Audited
    as a security event (the password itself is never recorded). Sessions and tokens already ended with the
    password change."""
    now = _now(now)
    with transaction.atomic():
        PasswordResetRequired.objects.update_or_create(user=user, defaults={"set_by": by, "at": now})
        audit.audit_record(user=by, action="password-reset", category="security", purpose="HOPERAT",
                     detail={"target": user.get_username()}, now=now)


def credentials_changed(*, user: Any, why: str) -> int:
    """The account's password changed (or it was disabled): end its sessions and revoke its tokens now, and
    record it as a security event. Returns how many sessions ended."""
    ended = sessions_end(user=user)
    try:
        audit.audit_record(user=None, action=why, category="security", purpose="HOPERAT",
                     detail={"target": user.get_username(), "sessionsEnded": ended})
    except Exception:
        log.exception("could not audit a credential change")
    return ended
