"""Check the compiled search paths (``omnicare/fhir/data/r4.json``) against ``fhirpathpy`` evaluating the original
R4 SearchParameter expressions, on real data, and time both. The evaluation behind the choice in
``omnicare/fhir/r4.py``; not part of the test suite (fhirpathpy is not a dependency).

    pip install fhirpathpy   # in any venv; then, with the project's venv:
    PYTHONPATH=<that venv's site-packages> OMNICARE_DEBUG=1 .venv/bin/python scripts/compare_fhirpath.py \\
        package/dist/fhir/r4/search-parameters.json ../shared/data/synthea-10/*.ndjson

Prints, per kind, how many (resource, parameter) pairs agree, the disagreements, and µs per evaluation.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")


def _plain(v: Any) -> Any:
    from decimal import Decimal

    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if k != "__path__"}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def canon(values: list[Any]) -> set[str]:
    return {json.dumps(_plain(v), sort_keys=True, default=str) for v in values}


def main(sp_path: str, files: list[str]) -> None:
    import django

    django.setup()
    import fhirpathpy

    from omnicare.fhir.search import SEARCH_PARAMS, walk

    exprs: dict[tuple[str, str], str] = {}
    for e in json.loads(Path(sp_path).read_text())["entry"]:
        r = e["resource"]
        for base in r.get("base", []):
            if r.get("expression") and base in SEARCH_PARAMS and r["code"] in SEARCH_PARAMS[base]:
                parts = [p.strip() for p in r["expression"].split(" | ") if p.strip().startswith((base + ".", "(" + base + "."))]
                exprs[(base, r["code"])] = " | ".join(parts)
    from fhirpathpy.models import models

    # The R4 model lets fhirpathpy resolve choice types (onset.as(dateTime)); it has no resolver for
    # resolve(), so ".where(resolve() is Patient)" yields nothing there (the compiled table keeps the
    # references whose type is Patient: what a server with the target in its store would resolve).
    compiled = {k: fhirpathpy.compile(v, model=models["r4"]) for k, v in exprs.items()}
    agree: Counter[str] = Counter()
    differ: list[str] = []
    t_fp = t_ours = 0.0
    n = 0
    for f in files:
        for line in Path(f).read_text().splitlines():
            res = json.loads(line)
            rt = res["resourceType"]
            for name, param in SEARCH_PARAMS.get(rt, {}).items():
                fn = compiled.get((rt, name))
                if fn is None:
                    continue
                t0 = time.perf_counter()
                try:
                    theirs = fn(res)
                except Exception as exc:  # noqa: BLE001 (fhirpathpy raises on resolve() & co.)
                    theirs = [f"error: {type(exc).__name__}"]
                t1 = time.perf_counter()
                ours = [v for p in param.paths for v in walk(res, p)]
                t2 = time.perf_counter()
                t_fp += t1 - t0
                t_ours += t2 - t1
                n += 1
                if canon(theirs) == canon(ours):
                    agree[param.kind] += 1
                else:
                    differ.append(f"{rt}.{name}: fhirpath {len(theirs)} values, compiled {len(ours)}")
    print(json.dumps({"evaluations": n, "agree": dict(agree), "differ": len(differ),
                      "differ_examples": sorted(Counter(d.split(':')[0] for d in differ).items())[:30],
                      "fhirpathpy_us_per_eval": round(t_fp / max(n, 1) * 1e6, 1),
                      "compiled_us_per_eval": round(t_ours / max(n, 1) * 1e6, 1)}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
