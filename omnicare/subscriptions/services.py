"""FHIR Subscriptions for other systems (R4 Subscriptions Backport IG, ``rest-hook`` channel).

A ``Subscription`` is an ordinary stored resource; its ``criteria`` is a search (``Observation?patient=...``,
the R4 form; in the backport's topic form the filter goes in the ``backport-filter-criteria`` extension of
``_criteria``). Whoever writes it through REST owns it (:func:`subscription_registered`): notifications carry
only what that account may read, and each delivered event is an audit event naming its patients.

Matching never runs inside a write: the write path's ``versions_written`` signal queues
``omnicare.subscriptions.dispatch`` on commit, which walks the change feed from each subscription's
``matched_seq`` (so nothing is skipped or matched twice, even across a restart: the position and the numbered
events commit together), stores numbered events and POSTs a ``history`` notification Bundle to the endpoint
with the subscriber's headers. A failed delivery stays ``pending`` and is retried (beat runs dispatch too);
``$events`` replays events by number and ``$status`` reports ``eventsSinceSubscriptionStart``, so a
subscriber that missed notifications catches up (Medplum #4586/#9447: notifications silently dropped).

Topic-based (the backport's own form, ``topics.py``): ``criteria`` is a SubscriptionTopic canonical URL, each
``_criteria`` ``backport-filter-criteria`` extension ANDs ``Type?param=value`` filters (only the topic's
``canFilterBy``; anything else is a 400 naming the extension), the topic's interactions decide whether
creates, updates and deletes trigger, and its ``queryCriteria`` (``previous`` on the version before,
``current`` on the version written, ``resultForCreate`` / ``resultForDelete`` / ``requireBoth``: ``topics.py``)
must hold. Matching is in memory on each version's own body (``ParsedSearch.matches`` over ``index_rows``, the
index's own extraction and semantics), never on the current state, so a batch with several versions of one
resource judges each of them; a delete is filtered on the deleted resource's last version. Heartbeats: a
``backport-heartbeat-period`` (seconds) on the channel makes the server send a ``heartbeat`` notification
whenever nothing was sent for that long (rest-hook: the ``omnicare.subscriptions.heartbeat`` beat job;
websocket: the socket's own consumer), so a subscriber can tell a quiet subscription from a dead one.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from django.db import connection, transaction
from django.utils import timezone

from omnicare.access.services import may_access
from omnicare.audit.services import audit_record
from omnicare.core.errors import BadRequest, NotFound
from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.fhir.search import SUPPORTED_TYPES, IndexRows, ParsedSearch, build_query, index_rows
from omnicare.fhir.services import feed_head, feed_since

from . import topics
from .models import SubscriptionEvent, SubscriptionOwner

log = logging.getLogger("omnicare.subscriptions")

FILTER_EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
CONTENT_EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
HEARTBEAT_EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
MAX_ATTEMPTS = 8
BATCH = 1000


def on_versions(sender: Any, versions: list[ResourceVersion], **_: Any) -> None:
    """Signal receiver (inside the write's transaction): queue a dispatch once it commits."""
    if not versions or not _any_subscription():
        return
    from .tasks import dispatch  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    transaction.on_commit(lambda: dispatch.delay())


def _any_subscription() -> bool:
    """Whether any Subscription exists, asked of the database on every write (a subscription made in another
    process counts from the next write: nothing may be cached). Plain SQL: ``.exists()`` compiled its query on
    every FHIR write, several times the cost of the statement itself."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {connection.ops.quote_name(SubscriptionOwner._meta.db_table)} LIMIT 1")  # noqa: S608
        return cur.fetchone() is not None


@dataclass(frozen=True)
class Criteria:
    """What a Subscription matches: one type, the subscriber's search parameters (all must hold, on the version
    that triggered; on a delete, on the deleted resource's last version), which interactions, and for
    topic-based subscriptions the topic's trigger (``queryCriteria`` previous/current)."""

    resource_type: str
    params: list[tuple[str, str]]
    interactions: frozenset[str]
    topic: str | None = None  # the SubscriptionTopic canonical, for topic-based subscriptions
    trigger: topics.Trigger | None = None
    search: ParsedSearch | None = None  # ``params`` parsed (None: no filters)


def _filters(sub: dict[str, Any]) -> list[str]:
    return [str(ext["valueString"]) for ext in ((sub.get("_criteria") or {}).get("extension") or [])
            if isinstance(ext, dict) and ext.get("url") == FILTER_EXT and ext.get("valueString")]


def subscription_criteria(sub: dict[str, Any]) -> Criteria:
    """The criteria of a Subscription, R4 search form or backport topic form; 400 for what we cannot evaluate
    (a topic whose trigger the server cannot evaluate included: ``topics.topic_trigger``)."""
    raw = str(sub.get("criteria") or "")
    topic = topics.catalogue().get(raw)
    if topic is None and "?" not in raw and ":" in raw:
        raise BadRequest("Subscription.criteria names an unknown SubscriptionTopic (GET SubscriptionTopic lists them)",
                         code="not-supported", expression=["Subscription.criteria"])
    if topic is not None:
        trigger = topics.topic_trigger(topic)
        rtype = trigger.resource_type
        params: list[tuple[str, str]] = []
        for f in _filters(sub):
            ftype, sep, query = f.partition("?")
            if not sep:
                ftype, query = rtype, f
            if ftype != rtype:
                raise BadRequest(f"Filter criteria must be on {rtype}, the topic's resource type",
                                 expression=["Subscription.criteria.extension"])
            params += parse_qsl(query, keep_blank_values=False)
        allowed = {f["filterParameter"] for f in topic["canFilterBy"]} | {"_id", "_lastUpdated"}
        unknown = sorted({k.split(":", 1)[0] for k, _ in params} - allowed)
        if unknown:
            raise BadRequest("Filter parameter(s) not offered by the topic: " + ", ".join(u[:40] for u in unknown[:10]),
                             code="not-supported", expression=["Subscription.criteria.extension"])
        return Criteria(rtype, params, trigger.interactions, str(topic["url"]), trigger, _parsed(rtype, params))
    filters = _filters(sub)
    if filters:  # the older backport drafts: the whole search in the filter extension
        raw = filters[-1]
    rtype, _, query = raw.partition("?")
    if rtype not in SUPPORTED_TYPES:
        raise BadRequest("Subscription.criteria must be a SubscriptionTopic URL or a search on a resource type, "
                         "e.g. Observation?patient=123", expression=["Subscription.criteria"])
    params = parse_qsl(query, keep_blank_values=False)
    return Criteria(rtype, params, frozenset({"create", "update"}), search=_parsed(rtype, params))


def _parsed(rtype: str, params: list[tuple[str, str]]) -> ParsedSearch | None:
    """The filters parsed once (a bad value is a 400 when the Subscription is written, not a failing dispatch)."""
    parsed = build_query(rtype, params)
    return parsed if parsed.terms else None


def criteria_of(sub: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(resource type, search params) of a Subscription; 400 for anything we cannot evaluate."""
    c = subscription_criteria(sub)
    return c.resource_type, c.params


def heartbeat_period(sub: dict[str, Any]) -> int | None:
    """Seconds of the channel's ``backport-heartbeat-period`` (None: no heartbeats asked for)."""
    for ext in (sub.get("channel") or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == HEARTBEAT_EXT:
            try:
                n = int(ext.get("valueUnsignedInt") or 0)
            except (TypeError, ValueError):
                n = 0
            return n if n > 0 else None
    return None


def subscription_registered(*, user: Any, resource: dict[str, Any]) -> None:
    """Called by the REST create/update of a Subscription: remember its owner; start at the feed head."""
    subscription_criteria(resource)
    channel = resource.get("channel") or {}
    for ext in channel.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == HEARTBEAT_EXT and not (
                isinstance(ext.get("valueUnsignedInt"), int) and ext["valueUnsignedInt"] > 0):
            raise BadRequest("The heartbeat period must be a positive number of seconds",
                             expression=["Subscription.channel.extension"])
    rest_hook = channel.get("type") == "rest-hook" and str(channel.get("endpoint") or "").startswith(
        ("http://", "https://"))
    if not rest_hook and channel.get("type") != "websocket":
        raise BadRequest("Supported channels: rest-hook (with an http(s) endpoint) and websocket",
                         expression=["Subscription.channel"])
    SubscriptionOwner.objects.get_or_create(subscription_id=str(resource["id"]),
                                            defaults={"user": user, "matched_seq": feed_head()})


def _active(sub_id: str) -> dict[str, Any] | None:
    row = Resource.objects.filter(resource_type="Subscription", resource_id=sub_id, deleted=False).first()
    if row is None or row.body.get("status") not in ("active", "requested"):
        return None
    return row.body


def dispatch() -> int:
    """Match new feed entries for every subscription, then deliver pending events. Returns events delivered."""
    delivered = 0
    rows: dict[tuple[str, str, int], IndexRows] = {}  # index rows per version, shared by the subscriptions
    for owner_id in list(SubscriptionOwner.objects.values_list("pk", flat=True)):
        try:
            _match(owner_id, rows)
            delivered += _deliver(owner_id)
        except Exception:  # one broken subscriber never stops the others
            log.exception("subscription dispatch failed for owner row %s", owner_id)
    return delivered


#: One version as a matcher sees it: (resource id, lastUpdated, index rows).
_Seen = tuple[str, datetime, IndexRows]


def _match(owner_id: int, rows: dict[tuple[str, str, int], IndexRows] | None = None) -> None:
    """Number and store the events of the next feed batch for one subscription. Each version is judged on its
    own body and, for a topic's ``previous``, on the body of the version before it (both from the history,
    so a batch holding several versions of one resource judges each transition, not the latest state)."""
    rows = {} if rows is None else rows
    with transaction.atomic():
        owner = SubscriptionOwner.objects.select_for_update().select_related("user").get(pk=owner_id)
        sub = _active(owner.subscription_id)
        if sub is None:
            return
        crit = subscription_criteria(sub)
        rtype = crit.resource_type

        versions = feed_since(after_seq=owner.matched_seq, limit=BATCH)  # up to the horizon: never skips
        if not versions:
            return
        mine = [v for v in versions if v.resource_type == rtype]
        trigger = crit.trigger
        # The version before is needed for `previous`, for filtering a delete, and to tell a re-create (after a
        # tombstone) from an update when the topic tells them apart.
        want_body = (trigger is not None and trigger.previous is not None) or (
            crit.search is not None and "delete" in crit.interactions)
        want_kind = ("create" in crit.interactions) != ("update" in crit.interactions)
        before_of = _versions_before(rtype, mine, versions, with_body=want_body) if want_body or want_kind else {}

        def seen(v: ResourceVersion) -> _Seen:
            key = (v.resource_type, v.resource_id, v.version_id)
            if key not in rows:
                if len(rows) > ROWS_CACHE:
                    rows.clear()
                rows[key] = index_rows(v.resource_type, v.body)
            return v.resource_id, v.last_updated, rows[key]

        events = []
        number = owner.events
        for v in mine:
            before = before_of.get((v.resource_id, v.version_id))
            if v.deleted:
                interaction = "delete"
            elif v.version_id == 1 or ((v.resource_id, v.version_id) in before_of and before is None):
                interaction = "create"  # the first version, or the first after a tombstone
            else:
                interaction = "update"
            if interaction not in crit.interactions:
                continue
            after_seen = None if v.deleted else seen(v)
            if trigger is not None and not trigger.fires(
                    interaction, seen(before) if before is not None and trigger.previous is not None else None,
                    after_seen if trigger.current is not None else None):
                continue
            if crit.search is not None:
                target = after_seen or (seen(before) if before is not None else None)
                if target is None or not crit.search.matches(*target):
                    continue
            if not may_access(user=owner.user, action="read", resource_type=rtype, patient_ids=v.patient_ids or []):
                continue  # outside the subscriber's scope: never notified
            number += 1
            events.append(SubscriptionEvent(subscription_id=owner.subscription_id, number=number, seq=v.seq,
                                            resource_type=v.resource_type, resource_id=v.resource_id,
                                            version_id=v.version_id, patient_ids=v.patient_ids or []))
        SubscriptionEvent.objects.bulk_create(events)
        SubscriptionOwner.objects.filter(pk=owner.pk).update(events=number, matched_seq=versions[-1].seq)


ROWS_CACHE = 20_000
_CHUNK = 500


def _versions_before(rtype: str, mine: list[ResourceVersion], batch: list[ResourceVersion], *,
                     with_body: bool) -> dict[tuple[str, int], ResourceVersion | None]:
    """For each version n > 1 of ``mine``: (id, n) → version n-1 of that resource, None when that was a tombstone.
    Versions are numbered without gaps (a delete is a version too), so n-1 is the state before. Taken from the
    batch when it is there, else from the history (one query per chunk)."""
    in_batch = {(v.resource_id, v.version_id): v for v in batch if v.resource_type == rtype}
    out: dict[tuple[str, int], ResourceVersion | None] = {}
    need: dict[tuple[str, int], tuple[str, int]] = {}
    for v in mine:
        if v.version_id <= 1:
            continue
        prev = in_batch.get((v.resource_id, v.version_id - 1))
        if prev is not None:
            out[(v.resource_id, v.version_id)] = None if prev.deleted else prev
        else:
            need[(v.resource_id, v.version_id - 1)] = (v.resource_id, v.version_id)
    keys = list(need)
    fields = ["resource_type", "resource_id", "version_id", "deleted", "last_updated"] + (["body"] if with_body else [])
    for i in range(0, len(keys), _CHUNK):
        chunk = keys[i:i + _CHUNK]
        qs = ResourceVersion.objects.filter(resource_type=rtype, resource_id__in={r for r, _ in chunk},
                                            version_id__in={n for _, n in chunk}).only(*fields)
        for prev in qs:
            later = need.get((prev.resource_id, prev.version_id))
            if later is not None:
                out[later] = None if prev.deleted else prev
    return out


def _notification(sub: dict[str, Any], owner: SubscriptionOwner, events: list[SubscriptionEvent], *,
                  kind: str) -> dict[str, Any]:
    content = "id-only"
    for ext in (sub.get("channel") or {}).get("_payload", {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == CONTENT_EXT:
            content = str(ext.get("valueCode") or content)
    status = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"Subscription/{owner.subscription_id}"}},
            *([{"name": "topic", "valueCanonical": topic}] if (topic := _topic_of(sub)) else []),
            {"name": "status", "valueCode": sub.get("status") or "active"},
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(owner.events)},
            *[{"name": "notification-event", "part": [
                {"name": "event-number", "valueString": str(e.number)},
                {"name": "timestamp", "valueInstant": e.created.isoformat().replace("+00:00", "Z")},
                {"name": "focus", "valueReference": {"reference": f"{e.resource_type}/{e.resource_id}/_history/{e.version_id}"}},
            ]} for e in events],
        ],
    }
    entries: list[dict[str, Any]] = [{"resource": status}]
    if content == "full-resource":
        for e in events:
            v = ResourceVersion.objects.filter(resource_type=e.resource_type, resource_id=e.resource_id,
                                               version_id=e.version_id, deleted=False).first()  # a delete: no body
            if v is not None:
                entries.append({"fullUrl": f"{e.resource_type}/{e.resource_id}", "resource": v.body})
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


def _deliver(owner_id: int) -> int:
    owner = SubscriptionOwner.objects.select_related("user").get(pk=owner_id)
    sub = _active(owner.subscription_id)
    if sub is None:
        return 0
    pending = list(SubscriptionEvent.objects.filter(subscription_id=owner.subscription_id,
                                                    status=SubscriptionEvent.PENDING).order_by("number")[:100])
    if not pending:
        return 0
    channel = sub.get("channel") or {}
    if channel.get("type") == "websocket":
        ok = _ws_send(owner.subscription_id, _notification(sub, owner, pending, kind="event-notification"))
        return _settle(owner, pending, ok)
    ok = _post(channel, _notification(sub, owner, pending, kind="event-notification"))
    return _settle(owner, pending, ok)


def _post(channel: dict[str, Any], bundle: dict[str, Any]) -> bool:
    """POST a notification to a rest-hook endpoint with the subscriber's headers; True on a 2xx."""
    req = urllib.request.Request(str(channel["endpoint"]), data=json.dumps(bundle).encode(),  # noqa: S310 (http(s) only)
                                 method="POST", headers={"Content-Type": "application/fhir+json"})
    for header in channel.get("header") or []:
        name, _, value = str(header).partition(":")
        if name.strip():
            req.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _topic_of(sub: dict[str, Any]) -> str | None:
    raw = str(sub.get("criteria") or "")
    return raw if raw in topics.catalogue() else None


def heartbeat_bundle(*, subscription_id: str) -> dict[str, Any] | None:
    """A ``heartbeat`` notification for this subscription now (None when it is not active)."""
    owner = SubscriptionOwner.objects.filter(subscription_id=subscription_id).first()
    sub = _active(subscription_id)
    if owner is None or sub is None:
        return None
    return _notification(sub, owner, [], kind="heartbeat")


def heartbeats_send(*, now: datetime | None = None) -> int:
    """Beat job: a heartbeat to every active rest-hook subscription with a heartbeat period that has been sent
    nothing for that long (events pending count as sending: their retry is the sign of life). Returns how many
    were sent. Websocket subscriptions get theirs from the consumer holding the socket."""
    now = now or timezone.now()
    sent = 0
    for owner in SubscriptionOwner.objects.all():
        sub = _active(owner.subscription_id)
        period = heartbeat_period(sub) if sub is not None else None
        if sub is None or period is None or (sub.get("channel") or {}).get("type") != "rest-hook":
            continue
        if (owner.last_sent or owner.created) > now - timedelta(seconds=period):
            continue
        if SubscriptionEvent.objects.filter(subscription_id=owner.subscription_id,
                                            status=SubscriptionEvent.PENDING).exists():
            continue
        if _post(sub.get("channel") or {}, _notification(sub, owner, [], kind="heartbeat")):
            SubscriptionOwner.objects.filter(pk=owner.pk).update(last_sent=now)
            sent += 1
    return sent


def _settle(owner: SubscriptionOwner, pending: list[SubscriptionEvent], ok: bool) -> int:
    ids = [e.pk for e in pending]
    if not ok:
        SubscriptionEvent.objects.filter(pk__in=ids).update(attempts=pending[0].attempts + 1)
        SubscriptionEvent.objects.filter(pk__in=ids, attempts__gte=MAX_ATTEMPTS).update(status=SubscriptionEvent.FAILED)
        return 0
    SubscriptionEvent.objects.filter(pk__in=ids).update(status=SubscriptionEvent.DELIVERED)
    SubscriptionOwner.objects.filter(pk=owner.pk).update(last_sent=timezone.now())
    patients = sorted({p for e in pending for p in e.patient_ids})
    audit_record(user=owner.user, action="subscription-notify", resource_type="Subscription",
                 resource_id=owner.subscription_id, patient_ids=patients,
                 detail={"events": [pending[0].number, pending[-1].number]})
    return len(pending)


WS_SALT = "omnicare.subscriptions.ws"
WS_TOKEN_SECONDS = 3600


def ws_group(subscription_id: str) -> str:
    return f"omnicare-subscription-{subscription_id}"


def _ws_send(subscription_id: str, bundle: dict[str, Any]) -> bool:
    """Hand the notification to the sockets bound to this subscription (none bound: stays pending)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    if not SubscriptionOwner.objects.filter(subscription_id=subscription_id, ws_bound=True).exists():
        return False
    layer = get_channel_layer()
    if layer is None:
        return False
    async_to_sync(layer.group_send)(ws_group(subscription_id), {"type": "notify", "sid": subscription_id,
                                                                "text": json.dumps(bundle)})
    return True


def ws_binding_token(*, user: Any, subscription_id: str) -> dict[str, Any]:
    """``$get-ws-binding-token``: a signed, short-lived token the websocket client sends as
    ``bind-with-token <token>`` (never in a URL)."""
    from django.core import signing

    owner, sub = _owned(user, subscription_id)
    if (sub.get("channel") or {}).get("type") != "websocket":
        raise BadRequest("This subscription does not use a websocket channel", expression=["Subscription.channel"])
    token = signing.dumps({"s": subscription_id, "u": owner.user_id}, salt=WS_SALT)
    expires = (timezone.now() + timedelta(seconds=WS_TOKEN_SECONDS)).isoformat()
    return {"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": token}, {"name": "expiration", "valueDateTime": expires},
        {"name": "subscription", "valueString": f"Subscription/{subscription_id}"},
        {"name": "websocket-url", "valueUrl": "/ws/subscriptions"},
    ]}


def ws_heartbeat_period(*, subscription_id: str) -> int | None:
    sub = _active(subscription_id)
    return heartbeat_period(sub) if sub is not None else None


def ws_bind(*, token: str) -> str | None:
    """The subscription id a binding token is good for (its owner still owning it), else None."""
    from django.core import signing

    try:
        data = signing.loads(token, salt=WS_SALT, max_age=WS_TOKEN_SECONDS)
    except signing.BadSignature:
        return None
    sid = str(data.get("s") or "")
    if not SubscriptionOwner.objects.filter(subscription_id=sid, user_id=data.get("u")).exists():
        return None
    SubscriptionOwner.objects.filter(subscription_id=sid).update(ws_bound=True)
    return sid


def _owned(user: Any, sub_id: str) -> tuple[SubscriptionOwner, dict[str, Any]]:
    owner = SubscriptionOwner.objects.filter(subscription_id=sub_id).first()
    row = Resource.objects.filter(resource_type="Subscription", resource_id=sub_id, deleted=False).first()
    if owner is None or row is None or getattr(user, "pk", None) != owner.user_id:
        raise NotFound("No such subscription")
    return owner, row.body


def subscription_status(*, user: Any, subscription_id: str) -> dict[str, Any]:
    owner, sub = _owned(user, subscription_id)
    return {"resourceType": "Bundle", "type": "searchset", "total": 1,
            "entry": [_notification(sub, owner, [], kind="query-status")["entry"][0]]}


def subscription_events(*, user: Any, subscription_id: str, since: int | None, until: int | None) -> dict[str, Any]:
    """Events by number (``eventsSinceNumber`` / ``eventsUntilNumber``), delivered or not, as a notification."""
    owner, sub = _owned(user, subscription_id)
    qs = SubscriptionEvent.objects.filter(subscription_id=subscription_id)
    if since is not None:
        qs = qs.filter(number__gte=since)
    if until is not None:
        qs = qs.filter(number__lte=until)
    events = list(qs.order_by("number")[:1000])
    audit_record(user=user, action="subscription-events", resource_type="Subscription", resource_id=subscription_id,
                 patient_ids=sorted({p for e in events for p in e.patient_ids}))
    return _notification(sub, owner, events, kind="query-event")
