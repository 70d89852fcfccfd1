"""Transaction and batch Bundles (POST to the FHIR base).

transaction: every write in ONE database transaction and one feed bump (via ``FhirStore.apply``); any failing
entry rolls everything back and the whole request fails with that entry's status. ``urn:uuid:`` fullUrls of
new resources are replaced by ``Type/id`` in every ``reference`` of every entry before anything is written.
batch: each entry independent, each with its own status and OperationOutcome.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from django.db import IntegrityError, transaction

from omnicare.core.errors import ApiError, BadRequest, Conflict, MethodNotAllowed

from . import services as svc
from .validation import check_id, check_type, validate_resource

if TYPE_CHECKING:  # the store hands itself in (repository imports this module, so never at run time)
    from .repository import FhirStore

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
# FHIR processing order inside a transaction (writes share one FhirStore.apply call; reads see the writes).
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


@dataclass
class _Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    version: int | None
    query: list[tuple[str, str]]
    resource: dict[str, Any] | None
    if_match: int | None
    full_url: str | None


def parse_if_match(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    text = str(raw).strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    try:
        return int(text)
    except ValueError as exc:
        raise BadRequest('Invalid If-Match (expected W/"<version>")', expression=["If-Match"]) from exc


def _parse_entry(i: int, entry: Any, base_url: str) -> _Entry:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise BadRequest("Every entry needs a request", expression=[f"Bundle.entry[{i}].request"])
    req = entry["request"]
    method = str(req.get("method") or "").upper()
    url = str(req.get("url") or "")
    if method not in ORDER:
        raise MethodNotAllowed(f"Method {method[:10]!r} is not supported in bundles")
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    split = urlsplit(url)
    parts = [p for p in split.path.split("/") if p]
    query = parse_qsl(split.query, keep_blank_values=True)
    if not parts:
        raise BadRequest(
            "Entry request.url must name a resource type", expression=[f"Bundle.entry[{i}].request.url"]
        )
    check_type(parts[0])
    rid = parts[1] if len(parts) > 1 else None
    if rid is not None:
        check_id(rid)
    version = None
    if len(parts) == 4 and parts[2] == "_history":
        try:
            version = int(parts[3])
        except ValueError as exc:
            raise BadRequest("Invalid version in request.url") from exc
    elif len(parts) > 2:
        raise BadRequest("Unsupported request.url", expression=[f"Bundle.entry[{i}].request.url"])
    if method in ("POST",) and (rid is not None or query):
        raise BadRequest("POST entries must target the type (conditional create is not supported)")
    if method in ("PUT", "DELETE") and (rid is None or query):
        raise BadRequest(f"{method} entries must target Type/id (conditional operations are not supported)")
    if req.get("ifNoneExist") or req.get("ifNoneMatch") or req.get("ifModifiedSince"):
        raise BadRequest("Conditional requests in bundles are not supported", code="not-supported")
    resource = entry.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise BadRequest("POST/PUT entries need a resource", expression=[f"Bundle.entry[{i}].resource"])
        resource = copy.deepcopy(resource)
    full_url = entry.get("fullUrl")
    return _Entry(
        i,
        method,
        parts[0],
        rid,
        version,
        query,
        resource,
        parse_if_match(req.get("ifMatch")),
        full_url if isinstance(full_url, str) else None,
    )


def _rewrite(node: Any, mapping: dict[str, str], where: str) -> None:
    """Replace every ``reference`` pointing at a bundle-local urn:uuid with the assigned ``Type/id``."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:"):
            if ref not in mapping:
                raise BadRequest(
                    f"Unresolved reference {ref[:80]} (no entry has this fullUrl)", expression=[where]
                )
            node["reference"] = mapping[ref]
        for value in node.values():
            _rewrite(value, mapping, where)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, mapping, where)


def _response(result: svc.WriteResult, method: str) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    out: dict[str, Any] = {}
    v = result.version
    if v is not None:
        resp["location"] = f"{v.resource_type}/{v.resource_id}/_history/{v.version_id}"
        resp["etag"] = f'W/"{v.version_id}"'
        resp["lastModified"] = v.body.get("meta", {}).get("lastUpdated")
        if method != "DELETE":
            out["fullUrl"] = f"{v.resource_type}/{v.resource_id}"
            out["resource"] = v.body
    out["response"] = resp
    return out


def _get(user: svc.User, e: _Entry, base_url: str) -> dict[str, Any]:
    if e.resource_id is None:
        bundle = svc.resource_search(
            user=user, resource_type=e.resource_type, params=e.query, base_url=base_url
        )
        return {"resource": bundle, "response": {"status": "200 OK"}}
    if e.version is not None:
        row: Any = svc.resource_vread(
            user=user, resource_type=e.resource_type, resource_id=e.resource_id, version_id=e.version
        )
    else:
        row = svc.resource_read(user=user, resource_type=e.resource_type, resource_id=e.resource_id)
    return {
        "resource": row.body,
        "response": {
            "status": "200 OK",
            "etag": f'W/"{row.version_id}"',
            "lastModified": row.body["meta"]["lastUpdated"],
        },
    }


def _to_write(e: _Entry) -> svc.Write:
    if e.method == "DELETE":
        assert e.resource_id is not None
        return svc.Write(e.resource_type, e.resource_id, None, expected_version=e.if_match)
    assert e.resource is not None
    validate_resource(e.resource, expected_type=e.resource_type)
    assert e.resource_id is not None  # POST ids are assigned before
    if e.method == "POST":
        return svc.Write(e.resource_type, e.resource_id, e.resource, expected_version=0)
    if e.resource.get("id") != e.resource_id:
        raise BadRequest("The id in the resource does not match request.url", expression=["id"])
    return svc.Write(e.resource_type, e.resource_id, e.resource, expected_version=e.if_match)


def _with_entry(exc: ApiError, i: int) -> ApiError:
    exc.diagnostics = f"Bundle.entry[{i}]: {exc.diagnostics}"
    exc.args = (exc.diagnostics,)
    exc.expression = [f"Bundle.entry[{i}]"] + (exc.expression or [])
    return exc


def _transaction(store: FhirStore, entries: list[Any], base_url: str) -> dict[str, Any]:
    parsed: list[_Entry] = []
    for i, raw in enumerate(entries):
        try:
            parsed.append(_parse_entry(i, raw, base_url))
        except ApiError as exc:
            raise _with_entry(exc, i) from exc
    mapping: dict[str, str] = {}
    for e in parsed:
        if e.method == "POST":
            e.resource_id = svc.new_id()
            assert e.resource is not None
            e.resource["id"] = e.resource_id
        if e.full_url and e.resource_id and e.method in ("POST", "PUT"):
            mapping[e.full_url] = f"{e.resource_type}/{e.resource_id}"
    writes: list[svc.Write] = []
    write_entries: list[_Entry] = []
    for e in sorted(parsed, key=lambda x: ORDER[x.method]):
        if e.method == "GET":
            continue
        try:
            if e.resource is not None:
                _rewrite(e.resource, mapping, f"Bundle.entry[{e.index}].resource")
            writes.append(_to_write(e))
        except ApiError as exc:
            raise _with_entry(exc, e.index) from exc
        write_entries.append(e)
    out: list[dict[str, Any] | None] = [None] * len(parsed)
    try:
        with transaction.atomic():
            fresh = frozenset((e.resource_type, e.resource_id) for e in write_entries if e.method == "POST")
            # _to_write validated every body (its errors name the entry): the store takes them as they are.
            results = store.apply(writes, fresh=fresh, join_care_team=True)
            for e, res in zip(write_entries, results, strict=True):
                out[e.index] = _response(res, e.method)
            for e in parsed:
                if e.method == "GET":
                    try:
                        out[e.index] = _get(store.user, e, base_url)
                    except ApiError as exc:
                        raise _with_entry(exc, e.index) from exc
    except IntegrityError as exc:
        raise Conflict("Concurrent write to the same resource; retry") from exc
    return {"resourceType": "Bundle", "id": svc.new_id(), "type": "transaction-response", "entry": out}


def _batch(store: FhirStore, entries: list[Any], base_url: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(entries):
        try:
            e = _parse_entry(i, raw, base_url)
            if e.method == "GET":
                out.append(_get(store.user, e, base_url))
                continue
            if e.method == "POST":
                e.resource_id = svc.new_id()
            if e.resource is not None:
                _rewrite(e.resource, {}, f"Bundle.entry[{i}].resource")
            # The store's write runs in a savepoint of its own (a refused entry is undone alone) and answers a
            # concurrent create of the same id as 409 itself.
            out.append(_response(store.apply([_to_write(e)], join_care_team=True)[0], e.method))
        except ApiError as exc:
            out.append({"response": {"status": str(exc.status), "outcome": exc.outcome()}})
    return {"resourceType": "Bundle", "id": svc.new_id(), "type": "batch-response", "entry": out}


def bundle_process(*, store: FhirStore, bundle: Any, base_url: str = "") -> dict[str, Any]:
    """Process a ``transaction`` or ``batch`` Bundle for ``store`` (its user reads, its policy checks every
    write) and return the response Bundle. Called by ``FhirStore.bundle``, which records the audit events."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("Expected a Bundle", expression=["resourceType"])
    kind = bundle.get("type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be a list", expression=["Bundle.entry"])
    if kind == "transaction":
        return _transaction(store, entries, base_url)
    if kind == "batch":
        return _batch(store, entries, base_url)
    raise BadRequest(
        "Only transaction and batch Bundles can be POSTed to the base", expression=["Bundle.type"]
    )
