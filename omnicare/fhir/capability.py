"""The CapabilityStatement, generated from the tables the code runs on (``search.SEARCH_PARAMS``), so it
cannot advertise a parameter we do not index or miss one we do."""

from __future__ import annotations

from typing import Any

from . import hooks
from .search import COMMON_PARAMS, SEARCH_PARAMS, SORTS, SUPPORTED_TYPES

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")
FHIR_VERSION = "4.0.1"

_TYPE_URL = {
    "token": "token",
    "string": "string",
    "date": "date",
    "reference": "reference",
    "uri": "uri",
}


def _revincludes() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for src, params in SEARCH_PARAMS.items():
        for n, p in params.items():
            if p.kind == "reference" and p.target:
                out.setdefault(p.target, []).append(f"{src}:{n}")
    return out


REVINCLUDES = _revincludes()


def capability_statement(*, base_url: str, software_version: str = "0.1.0") -> dict[str, Any]:
    resources = []
    for rtype in SUPPORTED_TYPES:
        params = SEARCH_PARAMS[rtype]
        search_params = [
            {"name": name, "type": kind, "documentation": doc}
            for name, kind, doc in (
                ("_id", COMMON_PARAMS["_id"], "Logical id"),
                ("_lastUpdated", COMMON_PARAMS["_lastUpdated"], "eq/ne/gt/ge/lt/le prefixes"),
            )
        ]
        for name, p in params.items():
            entry: dict[str, Any] = {"name": name, "type": _TYPE_URL[p.kind]}
            if p.doc:
                entry["documentation"] = p.doc
            search_params.append(entry)
        resources.append(
            {
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": False,
                "conditionalUpdate": False,
                "conditionalDelete": "not-supported",
                "searchParam": search_params,
                "searchInclude": [f"{rtype}:{n}" for n, p in params.items() if p.kind == "reference"],
                "searchRevInclude": REVINCLUDES.get(rtype, []),
            }
        )
        extensions = hooks.capability_extensions(rtype)
        if extensions is not None:  # e.g. Subscription: the backport's topic list (omnicare/subscriptions/apps.py)
            resources[-1]["extension"] = [ext for contribution in extensions for ext in contribution()]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "publisher": "OmniCare",
        "kind": "instance",
        "software": {"name": "OmniCare", "version": software_version},
        "implementation": {"description": "OmniCare FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Unknown search parameters are ignored unless 'Prefer: handling=strict'. "
                "Paging uses keyset cursors in the next link; _count max is OMNICARE_PAGE_MAX. "
                f"_sort: {', '.join(SORTS)} (prefix - for descending). _summary=count and _total=none are "
                "supported. Modifiers: string :exact/:contains, token :not, reference :[type].",
                "security": {
                    "description": "Bearer token (API clients) or session cookie with CSRF (the PWA)."
                },
                "resource": resources,
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }
