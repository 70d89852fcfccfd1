"""The prefetch ranking on the real server (issue 13, item 2): train it from the site's history, rank a scope.

Training (:func:`prefetch_train`, the Celery beat task ``omnicare.prefetch.train``) replays the last
``OMNICARE_PREFETCH_HISTORY_DAYS`` days at every shift start (07:00 and 19:00, site time): for each user who
opened charts, for each patient of their current scope or that they opened, the features as they stood at
that moment, labelled by whether the user opened the chart in the next 12 hours. Sources:

* chart opens: ``AuditEvent`` action ``read``, resource_type ``Patient``, ``detail.view == "chart"`` (what
  ``pyclient.adapters.browser_app`` records when a chart is shown; offline opens carry ``device_time``) —
  the user's own (count in 7 days, days since the last) and colleagues' (count in the last day);
* admissions, transfers and discharges: inpatient ``Encounter`` periods, locations and participants;
* the schedule: ``Appointment`` start dates (today, tomorrow) with the user's Practitioner;
* the care team (current membership; ``CareTeam`` changed in the last 7 days) and new results
  (``Observation``/``DiagnosticReport`` versions in the last day);
* time of day and week (night shift, weekend).

Care-team membership and ward assignments are taken as they are now (their history is not replayed):
an approximation written down here. With fewer than ``OMNICARE_PREFETCH_MIN_OPENS`` chart opens in the
window a ``heuristic`` version is stored and ranks with fixed weights. Each run stores a new
:class:`~omnicare.prefetch.models.PrefetchModelVersion` row.

Ranking (:func:`prefetch_rank`) scores exactly the patients of the user's device scope
(``access.services.scope_reasons``): a prediction orders the scope and never adds to it.
"""

from __future__ import annotations

import pickle  # noqa: S403 - the estimator is written and read only by this server, in its own database
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum, TextField
from django.db.models.functions import Cast, Length
from django.utils import timezone

from omnicare.access.services import (
    care_team_patient_ids,
    scope_reasons,
    user_practitioner_ids,
    user_ward_ids,
)
from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import Resource, ResourcePatient, ResourceVersion
from pyclient.device_set import Candidate, DeviceSetOffer

from .models import PrefetchModelVersion

SERVER_FEATURES: tuple[str, ...] = (
    "ward_census",
    "admitted_last_day",
    "discharged_recently",
    "admitted_by_user",
    "appointment_today",
    "appointment_tomorrow",
    "care_team",
    "care_team_changed_7d",
    "result_1d",
    "user_opens_7d",
    "days_since_user_open",
    "colleague_opens_1d",
    "night",
    "weekend",
)
SHIFT_STARTS = (time(7, 0), time(19, 0))
SHIFT = timedelta(hours=12)
_INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})
_HEURISTIC = {
    "appointment_today": 4.0, "appointment_tomorrow": 2.0, "admitted_last_day": 3.0, "ward_census": 2.0,
    "result_1d": 1.0, "care_team": 0.5, "discharged_recently": 0.5, "user_opens_7d": 0.1,
    "colleague_opens_1d": 0.05,
}


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


@dataclass
class _Stay:
    patient: str
    start: datetime | None
    end: datetime | None
    locations: set[str]
    practitioners: set[str]


@dataclass
class History:
    """What the server knows, loaded once for a training run or a ranking (ids and times only)."""

    opens: dict[int, list[tuple[datetime, str]]] = field(default_factory=lambda: defaultdict(list))
    all_opens: list[tuple[datetime, int, str]] = field(default_factory=list)
    stays: list[_Stay] = field(default_factory=list)
    appointments: dict[str, list[tuple[datetime, str]]] = field(default_factory=lambda: defaultdict(list))
    team_changed: dict[str, datetime] = field(default_factory=dict)
    results: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))


def history_load(*, since: datetime) -> History:
    """Chart opens, stays, appointments, care-team changes and results since ``since`` (stays: all open ones)."""
    h = History()
    rows = AuditEvent.objects.filter(
        action="read", resource_type="Patient", outcome="success", detail__view="chart", received_at__gte=since,
    ).values_list("user_id", "resource_id", "device_time", "received_at")
    for uid, pid, dev_t, rec_t in rows.iterator():
        if uid is None or not pid:
            continue
        at = dev_t or rec_t
        h.opens[int(uid)].append((at, str(pid)))
        h.all_opens.append((at, int(uid), str(pid)))
    for body in Resource.objects.filter(resource_type="Encounter", deleted=False).values_list("body", flat=True):
        st = _stay(body)
        if st is not None and (st.end is None or st.end >= since):
            h.stays.append(st)
    _appointments(h, Resource.objects.filter(resource_type="Appointment", deleted=False).values_list(
        "body", flat=True), since)
    for ids, at in ResourceVersion.objects.filter(resource_type="CareTeam", last_updated__gte=since).values_list(
            "patient_ids", "last_updated"):
        for p in ids or []:
            h.team_changed[str(p)] = max(at, h.team_changed.get(str(p), at))
    for ids, at in ResourceVersion.objects.filter(
            resource_type__in=("Observation", "DiagnosticReport"), last_updated__gte=since
    ).values_list("patient_ids", "last_updated"):
        for p in ids or []:
            h.results[str(p)].append(at)
    return h


def _stay(body: dict[str, Any]) -> _Stay | None:
    klass = body.get("class") or {}
    pid = _ref(body.get("subject"), "Patient")
    if not isinstance(klass, dict) or klass.get("code") not in _INPATIENT or pid is None:
        return None
    period = body.get("period") or {}
    return _Stay(
        pid, _dt(period.get("start")), _dt(period.get("end")),
        {i for i in (_ref((x or {}).get("location"), "Location") for x in body.get("location") or []
                     if isinstance(x, dict)) if i},
        {i for i in (_ref((x or {}).get("individual"), "Practitioner") for x in body.get("participant") or []
                     if isinstance(x, dict)) if i},
    )


def history_for_rank(*, u: UserContext, patients: Iterable[str], now: datetime) -> History:
    """What :func:`features_at` reads at ``now`` for ``u`` and ``patients``, and nothing more — the offer's
    history (:func:`history_load` replays a whole site for training). Narrowed in the indexes, never by
    reading every body: the user's own opens (8 days) and colleagues' opens of these patients (the last day);
    inpatient stays of these patients still open (``in-progress``) or whose period ended in the last 8 days;
    the user's appointments around today and tomorrow; care-team changes (7 days) and results (the last day)
    of these patients. The same features as from :func:`history_load` (tests/omnicare/prefetch)."""
    from omnicare.fhir.models import SearchDate, SearchReference, SearchToken  # noqa: PLC0415

    mine = set(patients)
    since = now - timedelta(days=8)
    h = History()
    opens = AuditEvent.objects.filter(action="read", resource_type="Patient", outcome="success", detail__view="chart")
    for uid, pid, dev_t, rec_t in opens.filter(user_id=u.user_id, received_at__gte=since).values_list(
            "user_id", "resource_id", "device_time", "received_at").iterator():
        h.opens[int(uid)].append((dev_t or rec_t, str(pid)))
    # A colleague's open counts for a day (features_at); it is received at or after it happened.
    for uid, pid, dev_t, rec_t in opens.filter(received_at__gte=now - timedelta(days=1)).exclude(
            user_id=u.user_id).values_list("user_id", "resource_id", "device_time", "received_at").iterator():
        if uid is not None and pid in mine:
            h.all_opens.append((dev_t or rec_t, int(uid), str(pid)))
    # The scope's encounters (the compartment index) still open or ended since ``since`` (the period's end,
    # an index range); the class is checked on the bodies this leaves.
    recent = (Q(pk__in=SearchDate.objects.filter(resource_type="Encounter", param="date", end__gte=since)
                .values("resource_id"))
              | Q(pk__in=SearchToken.objects.filter(resource_type="Encounter", param="status", code="in-progress")
                  .values("resource_id")))
    ordered = sorted(mine)
    for start in range(0, len(ordered), 900):  # SQLite's bound-parameter limit, as compartment_sizes
        stays = Resource.objects.filter(resource_type="Encounter", deleted=False, pk__in=ResourcePatient.objects.filter(
            resource_type="Encounter", patient_id__in=ordered[start:start + 900]).values("resource_id")).filter(recent)
        for body in stays.values_list("body", flat=True).iterator():
            st = _stay(body)
            if st is not None and st.patient in mine and (st.end is None or st.end >= since):
                h.stays.append(st)
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
        _appointments(h, appts.values_list("body", flat=True), since)
    for ids, at in ResourceVersion.objects.filter(
            resource_type="CareTeam", last_updated__gte=now - timedelta(days=7)).values_list("patient_ids", "last_updated"):
        for p in ids or []:
            if str(p) in mine:
                h.team_changed[str(p)] = max(at, h.team_changed.get(str(p), at))
    # The newest version of a result is the one that says whether any version is from the last day.
    for pid, at in ResourcePatient.objects.filter(
            resource_type__in=("Observation", "DiagnosticReport"), resource__last_updated__gte=now - timedelta(days=1),
    ).values_list("patient_id", "resource__last_updated").iterator():
        if pid in mine:
            h.results[str(pid)].append(at)
    return h


def _appointments(h: History, bodies: Iterable[dict[str, Any]], since: datetime) -> None:
    for body in bodies:
        start = _dt(body.get("start"))
        if start is None or start < since or body.get("status") in ("cancelled", "noshow", "entered-in-error"):
            continue
        actors = [(x or {}).get("actor") for x in body.get("participant") or [] if isinstance(x, dict)]
        pats = [i for i in (_ref(a, "Patient") for a in actors) if i]
        for prac in (i for i in (_ref(a, "Practitioner") for a in actors) if i):
            h.appointments[prac].extend((start, p) for p in pats)


@dataclass(frozen=True)
class UserContext:
    user_id: int
    practitioners: frozenset[str]
    wards: frozenset[str]
    team: frozenset[str]


def user_context(user: Any) -> UserContext:
    return UserContext(int(user.pk), frozenset(user_practitioner_ids(user=user)),
                       frozenset(user_ward_ids(user=user)), care_team_patient_ids(user=user))


def features_at(h: History, u: UserContext, patients: Sequence[str], at: datetime) -> list[list[float]]:
    """One row of :data:`SERVER_FEATURES` per patient, from what was known before ``at`` only."""
    local = timezone.localtime(at)
    today = local.date()
    mine = [(t, p) for t, p in h.opens.get(u.user_id, []) if t < at]
    recent: dict[str, int] = defaultdict(int)
    last: dict[str, datetime] = {}
    for t, p in mine:
        if at - t <= timedelta(days=7):
            recent[p] += 1
        last[p] = max(t, last.get(p, t))
    colleagues: dict[str, int] = defaultdict(int)
    for t, uid, p in h.all_opens:
        if uid != u.user_id and timedelta(0) <= at - t <= timedelta(days=1):
            colleagues[p] += 1
    ward, new, gone, by_me = set(), set(), set(), set()
    for s in h.stays:
        here = (s.start is None or s.start <= at) and (s.end is None or s.end > at)
        if here and s.locations & u.wards:
            ward.add(s.patient)
        if s.start is not None and timedelta(0) <= at - s.start <= timedelta(days=1):
            new.add(s.patient)
        if s.end is not None and timedelta(0) <= at - s.end <= timedelta(days=2):
            gone.add(s.patient)
        if s.practitioners & u.practitioners:
            by_me.add(s.patient)
    appt_today, appt_tomorrow = set(), set()
    for prac in u.practitioners:
        for start, p in h.appointments.get(prac, []):
            d = (timezone.localtime(start).date() - today).days
            (appt_today if d == 0 else appt_tomorrow if d == 1 else set()).add(p)
    night = float(local.hour >= 19 or local.hour < 7)
    weekend = float(local.weekday() >= 5)
    rows = []
    for p in patients:
        changed = h.team_changed.get(p)
        seen = last.get(p)
        rows.append([
            float(p in ward), float(p in new), float(p in gone), float(p in by_me),
            float(p in appt_today), float(p in appt_tomorrow), float(p in u.team),
            float(changed is not None and timedelta(0) <= at - changed <= timedelta(days=7)),
            float(any(timedelta(0) <= at - t <= timedelta(days=1) for t in h.results.get(p, ()))),
            float(recent.get(p, 0)),
            float(min(30.0, (at - seen).total_seconds() / 86400) if seen is not None else 30.0),
            float(colleagues.get(p, 0)), night, weekend,
        ])
    return rows


def heuristic_scores(rows: Iterable[Sequence[float]], features: Sequence[str] = SERVER_FEATURES) -> list[float]:
    """Fixed weights (no history): schedule, admissions and the ward first. In 0..1 (h / (1 + h))."""
    ix = {f: i for i, f in enumerate(features)}
    out = []
    for r in rows:
        v = sum(w * r[ix[f]] for f, w in _HEURISTIC.items() if f in ix)
        out.append(v / (1.0 + v))
    return out


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


def training_rows(*, now: datetime, days: int) -> tuple[list[list[float]], list[int]]:
    """(features, labels) for every shift start of the last ``days`` days (see the module notes)."""
    start = now - timedelta(days=days)
    h = history_load(since=start - timedelta(days=7))
    users = get_user_model().objects.filter(pk__in=list(h.opens), is_active=True)
    x: list[list[float]] = []
    y: list[int] = []
    for user in users:
        u = user_context(user)
        candidates = sorted(set(scope_reasons(user=user, now=now)) | {p for _t, p in h.opens[u.user_id]})
        if not candidates:
            continue
        for at in _shift_starts(start, now):
            opened = {p for t, p in h.opens[u.user_id] if at <= t < at + SHIFT}
            x.extend(features_at(h, u, candidates, at))
            y.extend(int(p in opened) for p in candidates)
    return x, y


def prefetch_train(*, now: datetime | None = None, site: str | None = None) -> PrefetchModelVersion:
    """Train (or fall back to the heuristic) and store a new version for ``site``. Idempotent in effect:
    a rerun stores another version trained on the same history."""
    now = now or timezone.now()
    site = site or settings.OMNICARE_PREFETCH_SITE
    x, y = training_rows(now=now, days=settings.OMNICARE_PREFETCH_HISTORY_DAYS)
    positives = sum(y)
    kind, blob = PrefetchModelVersion.HEURISTIC, b""
    if positives >= settings.OMNICARE_PREFETCH_MIN_OPENS and positives < len(y):
        from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - heavy, training only

        clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=0)
        clf.fit(x, y)
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
    from omnicare.access import roles as rbac  # noqa: PLC0415 - the role names of this user only

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
    scores = _scores(row, features_at(history_for_rank(u=u, patients=patients, now=now), u, patients, now))
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
    "training_rows",
]
