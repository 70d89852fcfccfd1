"""CDS services: signed knowledge bundles, the CDS Hooks 2.0 service, and the server re-check of every order.

The checks themselves are ``pyclient.cds.check`` - the code the device runs before saving an order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources as pkg_resources
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from omnicare.access.services import access_check
from omnicare.audit.services import NewEvent, append_events, audit_record
from omnicare.core.errors import ApiError, BadRequest, NotAuthenticated, NotFound
from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write
from omnicare.keys.services import key_version, sign
from pyclient.cds import Context, KnowledgeBase, KnowledgeBaseError, check, default_kb, shipped_bytes
from pyclient.cds.decisions import detected_issue, order_acknowledgements
from pyclient.cds.engine import is_active_medication

from .models import CdsClient, JwtSeen, KnowledgeBundle, OrderCheck

log = logging.getLogger("omnicare.cds")

STATEMENT_FORMAT = "omnicare-signed-bundle-v1"
RECHECK_TYPES = ("MedicationRequest", "MedicationStatement", "AllergyIntolerance", "Observation", "Condition")
MAX_DRAFTS = 100
JWT_ALGORITHMS = ("ES384", "ES256", "RS384", "RS256", "EdDSA")
JWT_MAX_LIFETIME = 300  # CDS Hooks: exp no more than 5 minutes in the future


class PreconditionFailed(ApiError):
    status = 412
    code = "not-found"


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


# ---------------------------------------------------------------------------------------------- bundles


def guidelines_shipped() -> bytes:
    return pkg_resources.files("omnicare.cds").joinpath("data", "guidelines.json").read_bytes()


def bundle_statement(*, kind: str, version: str, sha256: str, published_at: str) -> bytes:
    """The exact bytes signed for a bundle (the device verifies these, then the payload's SHA-256)."""
    return _canonical({"format": STATEMENT_FORMAT, "kind": kind, "version": version, "sha256": sha256,
                       "publishedAt": published_at})


def _check_payload(kind: str, data: Any) -> str:
    if kind == KnowledgeBundle.KB:
        try:
            return KnowledgeBase.from_json(data).version
        except KnowledgeBaseError as exc:
            raise BadRequest(f"Not a usable knowledge base: {exc}") from exc
    if kind == KnowledgeBundle.GUIDELINES:
        if not isinstance(data, dict) or data.get("format") != "omnicare-guidelines" or not isinstance(
                data.get("version"), str) or not isinstance(data.get("guidelines"), list):
            raise BadRequest("Not an OmniCare guideline library")
        for g in data["guidelines"]:
            if not isinstance(g, dict) or not g.get("id") or not g.get("title") or not g.get("sources"):
                raise BadRequest("Every guideline needs an id, a title and its sources")
        return str(data["version"])
    raise BadRequest(f"Unknown bundle kind {kind!r}")


def bundle_publish(*, kind: str, data: Any, now: datetime | None = None) -> KnowledgeBundle:
    """Sign and publish ``data`` as version ``data["version"]`` (idempotent for identical content)."""
    version = _check_payload(kind, data)
    payload = _canonical(data)
    digest = hashlib.sha256(payload).hexdigest()
    existing = KnowledgeBundle.objects.filter(kind=kind, version=version).first()
    if existing is not None:
        if existing.sha256 != digest:
            raise BadRequest(f"{kind} version {version} is already published with other content; bump the version")
        return existing
    moment = now or timezone.now()
    statement = bundle_statement(kind=kind, version=version, sha256=digest, published_at=_iso(moment))
    key_id, signature = sign(data=statement)
    _newest_kb_forget()
    try:
        with transaction.atomic():
            return KnowledgeBundle.objects.create(
                kind=kind, version=version, sha256=digest, payload=payload, statement=statement, key_id=key_id,
                signature=signature, published_at=moment)
    except IntegrityError:  # published concurrently
        return KnowledgeBundle.objects.get(kind=kind, version=version)


def bundles_ensure() -> None:
    """Publish the shipped knowledge base and guideline library if this server has not yet."""
    for kind, raw in ((KnowledgeBundle.KB, shipped_bytes()), (KnowledgeBundle.GUIDELINES, guidelines_shipped())):
        data = json.loads(raw)
        if not KnowledgeBundle.objects.filter(kind=kind, version=data["version"]).exists():
            bundle_publish(kind=kind, data=data)


def bundle_latest(*, kind: str) -> KnowledgeBundle:
    if kind not in (KnowledgeBundle.KB, KnowledgeBundle.GUIDELINES):
        raise NotFound(f"Unknown bundle kind {kind[:32]!r}")
    bundles_ensure()
    row = KnowledgeBundle.objects.filter(kind=kind).order_by("-published_at", "-id").first()
    if row is None:
        raise NotFound("No bundle published")
    return row


def bundle_json(row: KnowledgeBundle) -> dict[str, Any]:
    key = key_version(key_id=row.key_id)
    return {
        "kind": row.kind, "version": row.version, "sha256": row.sha256, "publishedAt": _iso(row.published_at),
        "keyId": row.key_id, "publicKey": _b64(bytes(key.public_key or b"")), "algorithm": "Ed25519",
        "statement": _b64(bytes(row.statement)), "signature": _b64(bytes(row.signature)),
        "payload": _b64(bytes(row.payload)),
    }


def bundle_index() -> list[dict[str, Any]]:
    bundles_ensure()
    return [{"kind": r.kind, "version": r.version, "sha256": r.sha256, "publishedAt": _iso(r.published_at)}
            for r in KnowledgeBundle.objects.order_by("kind", "-published_at")]


_KB_BY_SHA: dict[str, KnowledgeBase] = {}


def _kb_of_row(*, sha256: str, pk: int) -> KnowledgeBase:
    """Parse a published knowledge base once per process (payloads are immutable per digest)."""
    kb = _KB_BY_SHA.get(sha256)
    if kb is None:
        payload = KnowledgeBundle.objects.filter(pk=pk).values_list("payload", flat=True).first()
        kb = KnowledgeBase.from_bytes(bytes(payload or b""))
        if len(_KB_BY_SHA) > 16:
            _KB_BY_SHA.clear()
        _KB_BY_SHA[sha256] = kb
    return kb


#: How long a process trusts its answer to "which knowledge base is newest" (a CDS Hooks call asks every
#: time). A publication in this process clears it at once; one made by another process is seen within this.
NEWEST_KB_SECONDS = 5.0
_newest_kb: tuple[float, KnowledgeBase] | None = None


def _newest_kb_forget() -> None:
    global _newest_kb
    _newest_kb = None


def kb_for_version(*, version: str | None) -> tuple[KnowledgeBase, bool]:
    """The knowledge base of that version (as published here), else the newest one; (kb, exact match)."""
    global _newest_kb
    shipped = default_kb()
    if version is None:
        # Cached only outside a transaction: inside one (a test, a write) a rollback could leave it stale.
        cacheable = not transaction.get_connection().in_atomic_block
        held = _newest_kb
        if cacheable and held is not None and held[0] > time.monotonic():
            return held[1], False
        row = KnowledgeBundle.objects.filter(kind=KnowledgeBundle.KB).order_by("-published_at", "-id").values_list(
            "sha256", "pk").first()
        kb = _kb_of_row(sha256=row[0], pk=row[1]) if row is not None else shipped
        if cacheable:
            _newest_kb = (time.monotonic() + NEWEST_KB_SECONDS, kb)
        return kb, False
    if version == shipped.version:
        return shipped, True
    row = KnowledgeBundle.objects.filter(kind=KnowledgeBundle.KB, version=version).values_list(
        "sha256", "pk").first()
    if row is not None:
        return _kb_of_row(sha256=row[0], pk=row[1]), True
    return kb_for_version(version=None)[0], False


# ---------------------------------------------------------------------------------------------- CDS Hooks

LABS_QUERY = ",".join(f"http://loinc.org|{c}" for c in ("2823-3", "6298-4", "33914-3", "62238-1", "98979-8",
                                                        "48642-3", "48643-1"))
PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active,on-hold,draft",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "labs": "Observation?patient={{context.patientId}}&code=" + LABS_QUERY,
}


@dataclass(frozen=True)
class HookService:
    id: str
    hook: str
    title: str
    description: str


SERVICES: dict[str, HookService] = {s.id: s for s in (
    HookService("omnicare-medication-safety-select", "order-select", "OmniCare medication safety (order select)",
                "Drug-drug, drug-allergy (with class cross-sensitivity), duplicate therapy and drug-lab checks "
                "for the selected draft medication orders."),
    HookService("omnicare-medication-safety-sign", "order-sign", "OmniCare medication safety (order sign)",
                "The same checks for every draft medication order before it is signed."),
)}


def cds_discovery() -> dict[str, Any]:
    return {"services": [{"hook": s.hook, "id": s.id, "title": s.title, "description": s.description,
                          "prefetch": dict(PREFETCH)} for s in SERVICES.values()]}


@dataclass(frozen=True)
class Caller:
    """Who calls a CDS service: an OmniCare user (API token / session) or a registered CDS client (JWT)."""

    user: Any = None
    client: CdsClient | None = None

    @property
    def label(self) -> str:
        return f"client:{self.client.client_id}" if self.client is not None else "omnicare-token"


def _str(value: Any, where: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} must be a non-empty string", expression=[where])
    return value


def _parse_request(service: HookService, body: Any) -> tuple[str, str, list[dict[str, Any]], list[dict[str, Any]],
                                                          dict[str, Any] | None]:
    """(hookInstance, patientId, drafts to check, other drafts, prefetch) or a 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("The CDS Hooks request must be a JSON object", code="structure")
    hook = _str(body.get("hook"), "hook")
    if hook != service.hook:
        raise BadRequest(f"Service {service.id} answers the {service.hook} hook, not {str(hook)[:40]!r}",
                         expression=["hook"])
    instance = _str(body.get("hookInstance"), "hookInstance")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and not isinstance(fhir_server, str):
        raise BadRequest("fhirServer must be a URL string", expression=["fhirServer"])
    ctx = body.get("context")
    if not isinstance(ctx, dict):
        raise BadRequest("context must be an object", expression=["context"])
    _str(ctx.get("userId"), "context.userId")
    patient_id = _str(ctx.get("patientId"), "context.patientId")
    draft_bundle = ctx.get("draftOrders")
    if not isinstance(draft_bundle, dict) or draft_bundle.get("resourceType") != "Bundle" or not isinstance(
            draft_bundle.get("entry", []), list):
        raise BadRequest("context.draftOrders must be a FHIR Bundle", expression=["context.draftOrders"])
    entries = draft_bundle.get("entry", [])
    if len(entries) > MAX_DRAFTS:
        raise BadRequest(f"At most {MAX_DRAFTS} draft orders per request", expression=["context.draftOrders"])
    resources: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadRequest(f"context.draftOrders.entry[{i}].resource must be a FHIR resource",
                             expression=[f"context.draftOrders.entry[{i}]"])
        resources.append(res)
    meds = [r for r in resources if r["resourceType"] in ("MedicationRequest", "MedicationStatement")]
    if service.hook == "order-select":
        selections = ctx.get("selections")
        if not isinstance(selections, list) or not selections or not all(isinstance(s, str) for s in selections):
            raise BadRequest("context.selections must be a non-empty list of references",
                             expression=["context.selections"])
        known = {f"{r['resourceType']}/{r.get('id')}" for r in resources}
        missing = [s for s in selections if s not in known]
        if missing:
            raise BadRequest(f"context.selections names {missing[0][:80]!r}, which is not in draftOrders",
                             expression=["context.selections"])
        chosen = set(selections)
        drafts = [m for m in meds if f"{m['resourceType']}/{m.get('id')}" in chosen]
        others = [m for m in meds if f"{m['resourceType']}/{m.get('id')}" not in chosen]
    else:
        drafts, others = meds, []
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise BadRequest("prefetch must be an object", expression=["prefetch"])
    return str(instance), str(patient_id), drafts, others, prefetch


def _from_database(*, caller: Caller, patient_id: str) -> list[dict[str, Any]]:
    """An internal caller without prefetch: the patient's chart as that user may see it."""
    if caller.user is None:
        raise PreconditionFailed("No prefetch supplied and this service cannot query your FHIR server: "
                                 "send the prefetch named in the discovery document")
    types = ("MedicationRequest", "AllergyIntolerance", "Observation")
    for rt in types:
        access_check(user=caller.user, action="search", resource_type=rt, patient_ids=[patient_id])
    rows = Resource.objects.filter(patients__patient_id=patient_id, resource_type__in=types, deleted=False)
    return [r.body for r in rows]


def cds_hooks_call(*, service_id: str, body: Any, caller: Caller) -> dict[str, Any]:
    """Answer one CDS Hooks request: ``{"cards": [...]}``. Uses ``prefetch`` when supplied, nothing else."""
    service = SERVICES.get(service_id)
    if service is None:
        raise NotFound(f"No CDS service {service_id[:64]!r}")
    instance, patient_id, drafts, others, prefetch = _parse_request(service, body)
    kb, _ = kb_for_version(version=None)
    supplied = {k: v for k, v in (prefetch or {}).items() if k in PREFETCH and v is not None}
    if supplied:
        chart: Any = {"medications": supplied.get("medications"), "allergies": supplied.get("allergies"),
                      "labs": supplied.get("labs"),
                      "patient": supplied.get("patient") if isinstance(supplied.get("patient"), dict) else None}
        source = "prefetch"
    else:
        chart = {"medications": _from_database(caller=caller, patient_id=patient_id)}
        source = "database"
    chart["now"] = _iso(timezone.now())
    ctx = Context.of(chart)
    for r in others:
        ctx.add(r)  # order-select: the drafts not selected still interact with the selected ones
    cards = check(drafts, ctx, kb=kb)
    audit_record(
        user=caller.user, action="cds-hooks", resource_type="Patient", resource_id=patient_id,
        patient_ids=[patient_id],
        detail={"service": service.id, "hookInstance": instance[:64], "caller": caller.label, "data": source,
                "drafts": len(drafts), "cards": len(cards), "kbVersion": kb.version},
    )
    return {"cards": [c.to_cds_hooks(kb_version=kb.version) for c in cards]}


# ---------------------------------------------------------------------------------------------- JWT clients


def client_register(*, client_id: str, name: str, jwks: Any) -> CdsClient:
    """Register (or update) a CDS Hooks client and the public keys its JWTs are signed with."""
    import jwt

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise BadRequest('jwks must be {"keys": [...]} with at least one key')
    for k in jwks["keys"]:
        if not isinstance(k, dict) or any(p in k for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise BadRequest("jwks must hold public keys only")
        try:
            jwt.PyJWK(k)
        except jwt.PyJWTError as exc:
            raise BadRequest(f"Unusable key in jwks: {exc}") from exc
    row, _ = CdsClient.objects.update_or_create(client_id=client_id, defaults={"name": name, "jwks": jwks,
                                                                                "active": True})
    return row


_JWK_CACHE: dict[tuple[str, str], Any] = {}
_jti_purged_at = 0.0
_jti_lock = threading.Lock()
JTI_PURGE_SECONDS = 60.0


def _jwk_key(jwk: Mapping[str, Any], alg: str) -> Any:
    """The public key object of a registered JWK, parsed once per process per (key, alg): parsing an EC/RSA
    key costs more than verifying a signature with it. Keyed by the JWK's content, so a re-registered key
    is parsed afresh; a deactivated client is refused before this (its row is read on every call)."""
    import jwt

    cache_key = (json.dumps(jwk, sort_keys=True), alg)
    key = _JWK_CACHE.get(cache_key)
    if key is None:
        key = jwt.PyJWK(dict(jwk), algorithm=alg).key
        if len(_JWK_CACHE) > 256:
            _JWK_CACHE.clear()
        _JWK_CACHE[cache_key] = key
    return key


def _jti_purge(moment: datetime) -> None:
    """Forget used jtis that expired over a minute ago - once a minute per process, not on every call (the
    unique (client, jti) row is what refuses a replay; expired rows only take space)."""
    global _jti_purged_at
    with _jti_lock:
        if time.monotonic() - _jti_purged_at < JTI_PURGE_SECONDS and _jti_purged_at:
            return
        _jti_purged_at = time.monotonic()
    JwtSeen.objects.filter(expires_at__lt=moment - timedelta(minutes=1)).delete()


def jwt_authenticate(*, token: str, audience: str, now: datetime | None = None) -> CdsClient:
    """Verify a CDS Hooks client JWT (signature with the client's registered key, iss, aud, exp, iat, jti).

    Raises ``NotAuthenticated`` with the reason; a jti is accepted once (replays are refused).
    """
    import jwt

    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise NotAuthenticated("Malformed JWT") from exc
    alg = header.get("alg")
    if alg not in JWT_ALGORITHMS:
        raise NotAuthenticated(f"JWT algorithm {str(alg)[:16]!r} is not accepted")
    iss = unverified.get("iss")
    client = CdsClient.objects.filter(client_id=iss, active=True).first() if isinstance(iss, str) else None
    if client is None:
        raise NotAuthenticated("Unknown or inactive CDS client")
    keys = [k for k in client.jwks.get("keys", []) if isinstance(k, dict)]
    kid = header.get("kid")
    candidates = [k for k in keys if k.get("kid") == kid] if kid else keys
    if not candidates:
        raise NotAuthenticated("No registered key matches the JWT kid")
    moment = now or timezone.now()
    last: Exception | None = None
    claims: dict[str, Any] | None = None
    for k in candidates:
        try:
            key = _jwk_key(k, str(alg))
            claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=iss, leeway=30,
                                options={"require": ["iss", "aud", "exp", "iat", "jti"]})
            break
        except jwt.PyJWTError as exc:
            last = exc
    if claims is None:
        raise NotAuthenticated(f"JWT rejected: {last}")
    if float(claims["exp"]) - moment.timestamp() > JWT_MAX_LIFETIME + 30:
        raise NotAuthenticated("JWT lifetime exceeds 5 minutes")
    _jti_purge(moment)
    try:
        with transaction.atomic():
            JwtSeen.objects.create(client=client, jti=str(claims["jti"])[:255],
                                   expires_at=datetime.fromtimestamp(float(claims["exp"]), tz=UTC))
    except IntegrityError as exc:
        raise NotAuthenticated("JWT already used (jti replay)") from exc
    return client


# ---------------------------------------------------------------------------------------------- re-check


#: Up to this many orders from one write are re-checked right after the commit, in the request (a device push:
#: the DetectedIssue is in the store before the push answers); larger writes (imports) go to Celery.
INLINE_RECHECK_MAX = 50


def orders_written(*, versions: Sequence[Any]) -> None:
    """Signal hook (inside the write transaction): re-check each new MedicationRequest version after commit."""
    keys = [(v.resource_id, v.version_id) for v in versions
            if v.resource_type == "MedicationRequest" and not v.deleted]
    if not keys:
        return

    def run() -> None:
        try:
            if len(keys) <= INLINE_RECHECK_MAX:
                orders_recheck(keys=keys)
            else:
                from .tasks import recheck_orders  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

                recheck_orders.delay([list(k) for k in keys])
        except Exception:  # noqa: BLE001 - the order is committed; a failed re-check must not fail the write
            log.exception("CDS re-check of %d order(s) failed", len(keys))

    transaction.on_commit(run)


def _patient_of(body: Mapping[str, Any]) -> str | None:
    ref = (body.get("subject") or {}).get("reference") if isinstance(body.get("subject"), Mapping) else None
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/", 1)[1]
    return None


def orders_recheck(*, keys: Iterable[Sequence[Any]], now: datetime | None = None) -> int:
    """Re-check order versions ``[(id, version), ...]`` with the engine and the knowledge base version each
    device used; returns how many were checked.

    A critical card whose uuid the order does not list as acknowledged gets a DetectedIssue (status
    preliminary, "not acknowledged at order time"), written through the FHIR store (so it syncs to devices
    and shows in the chart) and audited as a system action. Idempotent: the DetectedIssue id is derived from
    the card and each order version is checked once. Batched: a bulk import of 1,000 orders costs a handful
    of queries, not thousands.
    """
    wanted = {(str(rid), int(ver)) for rid, ver in keys}
    if not wanted:
        return 0
    rows = [r for r in Resource.objects.filter(resource_type="MedicationRequest",
                                               resource_id__in=sorted({k[0] for k in wanted}))
            if not r.deleted and (r.resource_id, r.version_id) in wanted]
    done = set(OrderCheck.objects.filter(resource_id__in=[r.resource_id for r in rows]).values_list(
        "resource_id", "version_id"))
    rows = [r for r in rows if (r.resource_id, r.version_id) not in done]
    if not rows:
        return 0
    moment = now or timezone.now()
    when = _iso(moment)
    patients = sorted({p for r in rows if (p := _patient_of(r.body))})
    charts: dict[str, list[dict[str, Any]]] = {p: [] for p in patients}
    for pid, body in Resource.objects.filter(
            patients__patient_id__in=patients, resource_type__in=RECHECK_TYPES, deleted=False,
    ).values_list("patients__patient_id", "body"):
        charts[pid].append(body)
    checks: list[OrderCheck] = []
    issues: dict[str, tuple[dict[str, Any], str, str]] = {}
    # One knowledge base lookup per device version and one Context per patient, not per order: an import of
    # 1,000 orders from 10 patients was a query and a chart sort per order (~1 ms each).
    kbs: dict[str | None, KnowledgeBase] = {}
    contexts: dict[str, Context] = {}
    for row in rows:
        patient_id = _patient_of(row.body) or ""
        device_version, acknowledged = order_acknowledgements(row.body)
        if device_version not in kbs:
            kbs[device_version] = kb_for_version(version=device_version)[0]
        kb = kbs[device_version]
        if patient_id and patient_id not in contexts:
            ctx = Context(charts.get(patient_id, []), now=when)
            # ``check`` only ever uses the active ones (engine.check); filtering once here instead of per
            # order keeps a chart of hundreds of past prescriptions from costing hundreds per order.
            ctx.medications = [m for m in ctx.medications if is_active_medication(m)]
            contexts[patient_id] = ctx
        cards = check([row.body], contexts[patient_id], kb=kb) if patient_id else []
        critical = [c for c in cards if c.needs_override]
        missing = [c for c in critical if c.uuid not in acknowledged]
        for c in missing:
            issue = detected_issue(c, decision="unacknowledged", reason=None, patient_id=patient_id, kb=kb,
                                   when=when)
            issues.setdefault(issue["id"], (issue, patient_id, row.resource_id))
        checks.append(OrderCheck(resource_id=row.resource_id, version_id=row.version_id, patient_id=patient_id,
                                 kb_version=kb.version, device_kb_version=device_version or "",
                                 cards=len(cards), critical=len(critical), unacknowledged=len(missing),
                                 checked_at=moment))
    present = set(Resource.objects.filter(resource_type="DetectedIssue", resource_id__in=sorted(issues),
                                          deleted=False).values_list("resource_id", flat=True))
    fresh = {k: v for k, v in issues.items() if k not in present}
    with transaction.atomic():
        OrderCheck.objects.bulk_create(checks, ignore_conflicts=True)
        if fresh:
            FhirStore.system().apply(  # the system, not a person
                [Write.valid("DetectedIssue", k, v[0], expected_version=0) for k, v in fresh.items()])
            append_events([
                NewEvent(action="create", user=None, resource_type="DetectedIssue", resource_id=k,
                         patient_ids=[pid] if pid else [], purpose="HOPERAT",
                         detail={"reason": "cds-recheck-unacknowledged", "order": f"MedicationRequest/{order}"})
                for k, (_, pid, order) in fresh.items()
            ])
    return len(checks)
