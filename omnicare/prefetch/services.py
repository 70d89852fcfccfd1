"""The prefetch ranking on the real server (issue 13, item 2): train it from the site's history, rank a scope.

Training (:func:`prefetch_train`, the Celery beat task ``omnicare.prefetch.train``) replays the last
``OMNICARE_PREFETCH_HISTORY_DAYS`` days at every shift start (07:00 and 19:00, site time): for each user who
opened charts, for each patient of their current scope or that they opened, the features as they stood at
that moment, labelled by whether the user opened the chart in the next 12 hours. Sources:

* chart opens: ``AuditEvent`` action ``read``, resource_type ``Patient``, ``detail.view == "chart"`` (what
  ``pyclient.adapters.browser_app`` records when a chart is shown; offline opens carry ``device_time``) —
  the user's own (counts in 1/3/7/14 days, days since the last, opened in their last shift of the same
  kind) and colleagues' (counts in 1 and 7 days);
* admissions, transfers and discharges: inpatient ``Encounter`` periods, ``location`` periods (a transfer
  ends one ward's period) and participants;
* the schedule: ``Appointment`` start dates (today, tomorrow) with the user's Practitioner;
* the care team (current membership; ``CareTeam`` changed in the last 7 days) and new results
  (``Observation``/``DiagnosticReport`` versions: in the last day, how many flagged abnormal, how many since
  the user last opened the chart);
* time of day and week (night shift, weekend).

The features themselves are :func:`omnicare.prefetch.features.features_at`, the one function the evaluation
(``bench/prefetch_eval.py``) also runs; this module only loads the History it reads. The training replay
sees each past shift as the server saw it then (:func:`training_examples`): the care team, the wards, the
stays, the bookings and the grants of that moment, and the scope of that moment as the candidates. With fewer than ``OMNICARE_PREFETCH_MIN_OPENS`` chart opens in the
window a ``heuristic`` version is stored and ranks with fixed weights. Each run stores a new
:class:`~omnicare.prefetch.models.PrefetchModelVersion` row.

Ranking (:func:`prefetch_rank`) scores exactly the patients of the user's device scope
(``access.services.scope_reasons``): a prediction orders the scope and never adds to it.
"""

from __future__ import annotations

import pickle  # noqa: S403 - the estimator is written and read only by this server, in its own database
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Sum, TextField
from django.db.models.functions import Cast, Length
from django.utils import timezone

from omnicare.access import roles as rbac
from omnicare.access.services import (
    INACTIVE_CARETEAM,  # the same rule, replayed
    SCHEDULE_DAYS,
    WARD_RECENT_DAYS,
    care_team_patient_ids,
    patient_ids_granted,
    scope_reasons,
    user_practitioner_ids,
    user_ward_ids,
)
from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import (
    Resource,
    ResourcePatient,
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchToken,
)
from pyclient.device_set import Candidate, DeviceSetOffer
from pyclient.views.fullchart import vital_flag

from .features import FEATURES, History, Stay, UserContext, features_at, heuristic_scores, known_at
from .model import train_classifier
from .models import PrefetchModelVersion

#: The feature columns, in order (stored with each trained version): the shared list of :mod:`.features`.
SERVER_FEATURES: tuple[str, ...] = FEATURES
SHIFT_STARTS = (time(7, 0), time(19, 0))
SHIFT = timedelta(hours=12)
_INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})
_LOINC = "http://loinc.org"
_FLAG_KEYS = ("code", "interpretation", "valueQuantity", "referenceRange", "component")  # what vital_flag reads


def _ref(ref: Any, rtype: str) -> str | None:
    raw = str((ref or {}).get("reference") or "") if isinstance(ref, dict) else ""
    t, _, i = raw.partition("/")
    return i if t == rtype and i else None


def _dt(raw: Any) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if timezone.is_aware(value) else timezone.make_aware(value)


def _abnormal(body: dict[str, Any]) -> bool:
    """An Observation flagged abnormal (its interpretation, its range or the device's vital-sign ranges: the
    chart's own rule, ``pyclient.views.fullchart.vital_flag``), itself or any component."""
    def loinc(item: dict[str, Any]) -> str:
        code = item.get("code")
        codings = (code.get("coding") or []) if isinstance(code, dict) else []
        return next((str(c.get("code")) for c in codings if isinstance(c, dict) and c.get("system") == _LOINC), "")

    items = [body, *(c for c in body.get("component") or [] if isinstance(c, dict))]
    return any(vital_flag(i, loinc(i))["abnormal"] for i in items)


def _stay(body: dict[str, Any], since: datetime, known: tuple[datetime | None, datetime | None] = (None, None),
          ) -> Stay | None:
    klass = body.get("class") or {}
    if not isinstance(klass, dict) or klass.get("code") not in _INPATIENT:
        return None
    if body.get("status") in ("entered-in-error", "cancelled"):
        return None
    period = body.get("period") or {}
    start, end = _dt(period.get("start")), _dt(period.get("end"))
    pid = _ref(body.get("subject"), "Patient")
    if pid is None or (end is not None and end < since):
        return None
    locations = []
    for x in body.get("location") or []:
        lid = _ref((x or {}).get("location"), "Location") if isinstance(x, dict) else None
        if lid is None:
            continue
        frm, until = _dt((x.get("period") or {}).get("start")), _dt((x.get("period") or {}).get("end"))
        if until is None and x.get("status") == "completed":
            until = frm or start  # left at an unknown time: not on the ward now, recently if it began lately
        locations.append((lid, frm, until))
    practitioners = frozenset(
        i for i in (_ref((x or {}).get("individual"), "Practitioner") for x in body.get("participant") or []
                    if isinstance(x, dict)) if i)
    return Stay(pid, start, end, tuple(locations), practitioners, *known)


#: One stored version of a resource: (resource id, body, current from, current until - None: still current).
_Version = tuple[str, dict[str, Any], datetime, datetime | None]


def resource_versions(rtype: str, *, since: datetime | None = None) -> Iterable[_Version]:
    """Every live version of every ``rtype`` resource with the interval in which it was the current one (a
    delete ends the last interval and has none of its own); intervals that ended before ``since`` are left
    out. What a replay of a past shift reads to see what the server held then, not what it holds now."""
    rows = ResourceVersion.objects.filter(resource_type=rtype).order_by("resource_id", "seq").values_list(
        "resource_id", "last_updated", "deleted", "body")
    prev: tuple[str, datetime, bool, Any] | None = None
    for row in rows.iterator():
        if prev is not None and prev[0] == row[0]:
            yield from _version(prev, row[1], since)
        elif prev is not None:
            yield from _version(prev, None, since)
        prev = row
    if prev is not None:
        yield from _version(prev, None, since)


def _version(row: tuple[str, datetime, bool, Any], until: datetime | None, since: datetime | None) -> list[_Version]:
    rid, at, deleted, body = row
    if deleted or not isinstance(body, dict) or (since is not None and until is not None and until < since):
        return []
    return [(str(rid), body, at, until)]


def history_load(*, since: datetime) -> History:
    """Chart opens, stays, appointments, care-team changes and results since ``since`` (stays: all open ones).
    Stays and appointments are read from every version (each known while it was current): a training replay
    of a past shift must see the Encounter and the Appointment as they stood then."""
    h = History()
    rows = AuditEvent.objects.filter(
        action="read", resource_type="Patient", outcome="success", detail__view="chart", received_at__gte=since,
    ).values_list("user_id", "resource_id", "device_time", "received_at")
    for uid, pid, dev_t, rec_t in rows.iterator():
        if uid is None or not pid:
            continue
        h.opens[int(uid)].append((dev_t or rec_t, str(pid)))
    for _rid, body, frm, until in resource_versions("Encounter", since=since):
        stay = _stay(body, since, (frm, until))
        if stay is not None:
            h.stays.append(stay)
    _appointments(h, ((body, frm, until) for _rid, body, frm, until in resource_versions(
        "Appointment", since=since)), since)
    for ids, at in ResourceVersion.objects.filter(resource_type="CareTeam", last_updated__gte=since).values_list(
            "patient_ids", "last_updated"):
        for p in ids or []:
            h.team_changed[str(p)].append(at)
    _results(h, ResourceVersion.objects.filter(
        resource_type__in=("Observation", "DiagnosticReport"), last_updated__gte=since, deleted=False))
    return h


def _appointments(h: History, versions: Iterable[tuple[dict[str, Any], datetime | None, datetime | None]],
                  since: datetime) -> None:
    """Bookings from Appointment versions, each held while its version was current (a cancelled one: not)."""
    for body, frm, until in versions:
        start = _dt(body.get("start"))
        if start is None or start < since or body.get("status") in ("cancelled", "noshow", "entered-in-error"):
            continue
        actors = [(x or {}).get("actor") for x in body.get("participant") or [] if isinstance(x, dict)]
        pats = [i for i in (_ref(a, "Patient") for a in actors) if i]
        for prac in (i for i in (_ref(a, "Practitioner") for a in actors) if i):
            h.appointments[prac].extend((start, p, frm, until) for p in pats)


def _results(h: History, versions: Any, patients: set[str] | None = None) -> None:
    # Only the parts of a result its flag reads (a site's week of results is large; the whole bodies are not
    # needed for one ranking).
    for rtype, ids, at, *parts in versions.values_list(
            "resource_type", "patient_ids", "last_updated", *(f"body__{k}" for k in _FLAG_KEYS)).iterator():
        body = {k: v for k, v in zip(_FLAG_KEYS, parts, strict=True) if v is not None}
        abnormal = rtype == "Observation" and _abnormal(body)
        for p in ids or []:
            if patients is None or str(p) in patients:
                h.results[str(p)].append((at, abnormal))


def history_for_rank(*, u: UserContext, patients: Iterable[str], now: datetime) -> History:
    """What :func:`features_at` reads at ``now`` for ``u`` and ``patients`` from ``history_load(since=now - 8
    days)``, and nothing more — the offer's history (:func:`history_load` replays a whole site for training).
    Narrowed in the indexes, never by reading every body: the user's own opens (8 days) and colleagues' opens
    of these patients (7 days, the longest window of a colleague feature); these patients' inpatient stays still
    open or ended in the 8 days; the user's appointments around today and tomorrow; care-team changes and
    results of these patients of the 8 days. The same features (tests/omnicare/prefetch/test_rank_history.py),
    except for a result re-linked to another patient: found by its current compartment here."""
    from django.db.models import Q  # noqa: PLC0415

    mine = set(patients)
    ordered = sorted(mine)
    since = now - timedelta(days=8)
    h = History()
    opens = AuditEvent.objects.filter(action="read", resource_type="Patient", outcome="success", detail__view="chart")
    for uid, pid, dev_t, rec_t in opens.filter(user_id=u.user_id, received_at__gte=since).values_list(
            "user_id", "resource_id", "device_time", "received_at").iterator():
        if pid:
            h.opens[int(uid)].append((dev_t or rec_t, str(pid)))
    # A colleague's open counts for 7 days (features_at); it is received at or after it happened.
    for uid, pid, dev_t, rec_t in opens.filter(received_at__gte=now - timedelta(days=7)).exclude(
            user_id=u.user_id).values_list("user_id", "resource_id", "device_time", "received_at").iterator():
        if uid is not None and pid in mine:
            h.opens[int(uid)].append((dev_t or rec_t, str(pid)))
    # The scope's encounters (the compartment index) still open or ended since ``since`` (the period's end,
    # an index range), or in progress; the class is checked on the bodies this leaves.
    recent = (Q(pk__in=SearchDate.objects.filter(resource_type="Encounter", param="date", end__gte=since)
                .values("resource_id"))
              | Q(pk__in=SearchToken.objects.filter(resource_type="Encounter", param="status", code="in-progress")
                  .values("resource_id")))
    for start in range(0, len(ordered), 900):  # SQLite's bound-parameter limit, as compartment_sizes
        chunk = ordered[start:start + 900]
        stays = Resource.objects.filter(resource_type="Encounter", deleted=False, pk__in=ResourcePatient.objects.filter(
            resource_type="Encounter", patient_id__in=chunk).values("resource_id")).filter(recent)
        for body in stays.values_list("body", flat=True).iterator():
            st = _stay(body, since)
            if st is not None and st.patient in mine:
                h.stays.append(st)
        # Results of these patients changed since ``since`` (the current row's time bounds its versions').
        touched = Resource.objects.filter(
            resource_type__in=("Observation", "DiagnosticReport"), last_updated__gte=since,
            pk__in=ResourcePatient.objects.filter(patient_id__in=chunk).values("resource_id"),
        ).values("resource_id")
        _results(h, ResourceVersion.objects.filter(
            resource_type__in=("Observation", "DiagnosticReport"), resource_id__in=touched, last_updated__gte=since,
            deleted=False), mine)
    if u.practitioners:
        midnight = timezone.make_aware(datetime.combine(timezone.localtime(now).date(), time(0, 0)),
                                       timezone.get_current_timezone())
        appts = Resource.objects.filter(
            resource_type="Appointment", deleted=False,
            pk__in=SearchReference.objects.filter(
                resource_type="Appointment", param="practitioner", target_type="Practitioner",
                target_id__in=sorted(u.practitioners)).values("resource_id"),
        ).filter(pk__in=SearchDate.objects.filter(  # today and tomorrow, a day wider each side (zones)
            resource_type="Appointment", param="date", start__gte=midnight - timedelta(days=1),
            start__lt=midnight + timedelta(days=3)).values("resource_id"))
        _appointments(h, ((b, None, None) for b in appts.values_list("body", flat=True)), since)
    for ids, at in ResourceVersion.objects.filter(resource_type="CareTeam", last_updated__gte=since).values_list(
            "patient_ids", "last_updated"):
        for p in ids or []:
            if str(p) in mine:
                h.team_changed[str(p)].append(at)
    return h


def user_context(user: Any) -> UserContext:
    return UserContext(int(user.pk), frozenset(user_practitioner_ids(user=user)),
                       frozenset(user_ward_ids(user=user)), care_team_patient_ids(user=user))


def _features(h: History, u: UserContext, patients: Sequence[str], at: datetime) -> list[list[float]]:
    return features_at(h, u, patients, at, timezone.get_current_timezone())


def _shift_starts(since: datetime, until: datetime) -> list[datetime]:
    out = []
    day = timezone.localtime(since).date()
    while True:
        for t in SHIFT_STARTS:
            at = timezone.make_aware(datetime.combine(day, t), timezone.get_current_timezone())
            if at + SHIFT > until:
                return out
            if at >= since:
                out.append(at)
        day += timedelta(days=1)


#: One CareTeam version: when, its subject, its Practitioner members, and whether it counts (status, deletion).
_TeamVersion = tuple[datetime, str | None, frozenset[str], bool]


def care_team_versions() -> dict[str, list[_TeamVersion]]:
    """Every CareTeam's versions, oldest first: what a training replay needs to know who was on which team
    at a past shift start (the current membership would tell it about patients who joined later)."""
    out: dict[str, list[_TeamVersion]] = defaultdict(list)
    rows = ResourceVersion.objects.filter(resource_type="CareTeam").order_by("seq").values_list(
        "resource_id", "last_updated", "deleted", "body")
    for rid, at, deleted, body in rows.iterator():
        body = body if isinstance(body, dict) else {}
        members = frozenset(
            i for i in (_ref((p or {}).get("member"), "Practitioner") for p in body.get("participant") or []
                        if isinstance(p, dict)) if i)
        counts = not deleted and body.get("status") not in INACTIVE_CARETEAM
        out[str(rid)].append((at, _ref(body.get("subject"), "Patient"), members, counts))
    return out


def care_team_at(versions: dict[str, list[_TeamVersion]], practitioners: frozenset[str], at: datetime) -> frozenset[str]:
    """Patients whose CareTeam, as its latest version before ``at`` stood, listed one of ``practitioners``
    (the rule of ``access.services.care_team_patient_ids``, replayed)."""
    out = set()
    for vs in versions.values():
        current = next((v for v in reversed(vs) if v[0] < at), None)
        if current is not None and current[3] and current[1] and current[2] & practitioners:
            out.add(current[1])
    return frozenset(out)


def wards_at(versions: Iterable[_Version], practitioners: frozenset[str], at: datetime) -> frozenset[str]:
    """Locations ``practitioners`` worked on at ``at``: their PractitionerRoles as they stood then, the rule of
    ``access.services.user_ward_ids`` (a role not ``active: false`` names the wards) replayed."""
    out: set[str] = set()
    for _rid, body, frm, until in versions:
        if not known_at(frm, until, at) or body.get("active") is False:
            continue
        if _ref(body.get("practitioner"), "Practitioner") in practitioners:
            out.update(i for i in (_ref(x, "Location") for x in body.get("location") or []) if i)
    return frozenset(out)


def _schedule_then(h: History, u: UserContext, at: datetime) -> set[str]:
    """Patients with an appointment of the user's, as booked at ``at``, from that day to ``SCHEDULE_DAYS`` on
    (the schedule part of ``access.services.scope_reasons``, replayed)."""
    today = timezone.localtime(at).date()
    return {p for prac in u.practitioners for start, p, frm, until in h.appointments.get(prac, [])
            if known_at(frm, until, at) and 0 <= (timezone.localtime(start).date() - today).days <= SCHEDULE_DAYS}


#: One training example: (user id, shift start, patient, feature row, opened in the shift).
Example = tuple[int, datetime, str, list[float], int]


def training_examples(*, now: datetime, days: int) -> list[Example]:
    """Every (user, shift start, patient of the user's scope *as it stood then*) of the last ``days`` days, with
    the features as they stood then and whether the user opened the chart in that shift.

    Point in time, all of it: the care team from the CareTeam versions, the wards from the PractitionerRole
    versions, stays and bookings from the Encounter and Appointment versions that were current then, grants
    held then. The candidates are the scope of that moment (care team, grants, the wards' census and recent
    patients, the schedule), not today's: a patient who joined the team later is neither a candidate nor
    ``care_team`` in an earlier shift, and a chart opened outside the scope then is not an example (the
    offer ranks the scope and only it)."""
    start = now - timedelta(days=days)
    h = history_load(since=start - timedelta(days=WARD_RECENT_DAYS))
    teams = care_team_versions()
    roles = list(resource_versions("PractitionerRole"))
    users = get_user_model().objects.filter(pk__in=list(h.opens), is_active=True)
    ix = {f: i for i, f in enumerate(FEATURES)}
    ward_cols = (ix["ward_census"], ix["ward_recent_14d"])
    out: list[Example] = []
    for user in users:
        u = user_context(user)
        mine = {k: vs for k, vs in teams.items() if any(v[2] & u.practitioners for v in vs)}
        for at in _shift_starts(start, now):
            then = replace(u, team=care_team_at(mine, u.practitioners, at),
                           wards=wards_at(roles, u.practitioners, at))
            sure = then.team | patient_ids_granted(user=user, now=at) | _schedule_then(h, then, at)
            maybe = sorted(sure | {s.patient for s in h.stays if any(loc in then.wards for loc, _f, _u in s.locations)})
            opened = {p for t, p in h.opens[u.user_id] if at <= t < at + SHIFT}
            for p, row in zip(maybe, _features(h, then, maybe, at), strict=True):
                if p in sure or any(row[c] for c in ward_cols):
                    out.append((u.user_id, at, p, row, int(p in opened)))
    return out


def training_rows(*, now: datetime, days: int) -> tuple[list[list[float]], list[int]]:
    """(features, labels) of :func:`training_examples`."""
    examples = training_examples(now=now, days=days)
    return [e[3] for e in examples], [e[4] for e in examples]


def prefetch_train(*, now: datetime | None = None, site: str | None = None) -> PrefetchModelVersion:
    """Train (or fall back to the heuristic) and store a new version for ``site``. Idempotent in effect:
    a rerun stores another version trained on the same history."""
    now = now or timezone.now()
    site = site or settings.OMNICARE_PREFETCH_SITE
    x, y = training_rows(now=now, days=settings.OMNICARE_PREFETCH_HISTORY_DAYS)
    positives = sum(y)
    kind, blob = PrefetchModelVersion.HEURISTIC, b""
    if positives >= settings.OMNICARE_PREFETCH_MIN_OPENS and positives < len(y):
        clf = train_classifier(x, y, seed=0)
        kind, blob = PrefetchModelVersion.LEARNED, pickle.dumps(clf)
    last = PrefetchModelVersion.objects.filter(site=site).order_by("-version").values_list("version", flat=True)
    return PrefetchModelVersion.objects.create(
        site=site, version=(last.first() or 0) + 1, kind=kind, trained_at=now, n_examples=len(y),
        n_positive=positives, features=list(SERVER_FEATURES), blob=blob,
    )


def current_model(*, site: str | None = None) -> PrefetchModelVersion | None:
    site = site or settings.OMNICARE_PREFETCH_SITE
    return PrefetchModelVersion.objects.filter(site=site).order_by("-version").first()


_LOADED: dict[int, Any] = {}


def _scores(row: PrefetchModelVersion | None, rows: list[list[float]]) -> list[float]:
    if not rows:
        return []
    if row is None or row.kind != PrefetchModelVersion.LEARNED or list(row.features) != list(SERVER_FEATURES):
        return heuristic_scores(rows)
    clf = _LOADED.get(row.pk)
    if clf is None:
        _LOADED.clear()  # one site, one current version: keep only the newest in memory
        clf = _LOADED[row.pk] = pickle.loads(bytes(row.blob))  # noqa: S301 - our own row, see the import
    return [float(p) for p in clf.predict_proba(rows)[:, 1]]


def compartment_sizes(patients: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Patient id -> (JSON bytes, records) of the live resources of its compartment."""
    out: dict[str, tuple[int, int]] = {}
    for start in range(0, len(patients), 900):  # SQLite's bound-parameter limit
        q = (ResourcePatient.objects.filter(patient_id__in=list(patients[start:start + 900]), resource__deleted=False)
             .values("patient_id")
             .annotate(n=Count("resource_id"), size=Sum(Length(Cast("resource__body", TextField())))))
        for r in q:
            out[str(r["patient_id"])] = (int(r["size"] or 0), int(r["n"]))
    return out


def device_budget(*, user: Any, device: Any) -> int:
    """Bytes ``device`` may hold: its own setting, else the largest of its user's roles', else its platform's."""
    if device is not None and device.storage_budget_bytes is not None:
        return int(device.storage_budget_bytes)

    by_role = [settings.OMNICARE_ROLE_BUDGET_BYTES[r] for r in rbac.user_roles(user)
               if r in settings.OMNICARE_ROLE_BUDGET_BYTES]
    if by_role:
        return max(by_role)
    platform = getattr(device, "platform", "web") or "web"
    budgets = settings.OMNICARE_DEVICE_BUDGET_BYTES
    return int(budgets.get(platform, budgets["web"]))


def prefetch_rank(*, user: Any, device: Any = None, now: datetime | None = None) -> DeviceSetOffer:
    """The device-set offer for ``device``: the user's scope (and only it), with reasons, probabilities and
    sizes, most likely first (pinned patients are decided on the device, by ``pyclient.device_set``)."""
    now = now or timezone.now()
    reasons = scope_reasons(user=user, now=now)
    patients = sorted(reasons)
    row = current_model()
    u = user_context(user)
    scores = _scores(row, _features(history_for_rank(u=u, patients=patients, now=now), u, patients, now))
    sizes = compartment_sizes(patients)
    cands = [
        Candidate(p, tuple(reasons[p]), round(min(1.0, max(0.0, s)), 6), *sizes.get(p, (0, 0)))
        for p, s in zip(patients, scores, strict=True)
    ]
    cands.sort(key=lambda c: (-c.score, c.patient_id))
    version = row.label if row is not None else "heuristic"
    return DeviceSetOffer(device_budget(user=user, device=device), version, tuple(cands))


__all__ = [
    "SERVER_FEATURES",
    "compartment_sizes",
    "current_model",
    "device_budget",
    "features_at",
    "heuristic_scores",
    "history_for_rank",
    "history_load",
    "prefetch_rank",
    "prefetch_train",
    "resource_versions",
    "training_examples",
    "training_rows",
    "wards_at",
]
