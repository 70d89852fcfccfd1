"""The ONE decoder for JSON request bodies: every API path (FHIR, sync, auth, audit) parses through it.

Beyond ``json.loads`` it refuses, as a 400 OperationOutcome and before anything is written:

* nesting deeper than :data:`MAX_DEPTH` (100,000 ``[`` made ``json.loads`` and later recursive code raise
  ``RecursionError``, a 500);
* a lone UTF-16 surrogate such as ``"\\ud800"`` (valid JSON, but not a Unicode string: encoding it as
  UTF-8 for hashing or storage fails);
* the NUL character ``\\u0000`` (PostgreSQL ``text`` and ``jsonb`` cannot hold it; FHIR strings forbid it).

The checks cost one scan of the decoded value; the surrogate walk only runs when the raw body contains a
``\\u`` escape of a surrogate.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import BadRequest

MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUL_ESCAPE = re.compile(rb"\\u0000")


class BadJson(BadRequest):
    """A body that is not acceptable JSON (always a 400 with ``code``)."""


def _depth_and_strings(value: Any, *, check_strings: bool) -> None:
    """Iteratively walk ``value``: raise if deeper than MAX_DEPTH or (``check_strings``) a lone surrogate."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels", code="too-costly")
            for k, v in node.items():
                if check_strings and _SURROGATE.search(k):
                    raise BadJson("JSON contains an unpaired UTF-16 surrogate", code="structure")
                if isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
                elif check_strings and isinstance(v, str) and _SURROGATE.search(v):
                    raise BadJson("JSON contains an unpaired UTF-16 surrogate", code="structure")
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels", code="too-costly")
            for v in node:
                if isinstance(v, (dict, list)):
                    stack.append((v, depth + 1))
                elif check_strings and isinstance(v, str) and _SURROGATE.search(v):
                    raise BadJson("JSON contains an unpaired UTF-16 surrogate", code="structure")
        elif check_strings and isinstance(node, str) and _SURROGATE.search(node):
            raise BadJson("JSON contains an unpaired UTF-16 surrogate", code="structure")


def json_body_loads(raw: bytes | str, *, empty: Any = ...) -> Any:
    """Decode a request body with the rules above; malformed JSON is a 400 ``structure``.

    ``empty``: the value of an empty body (default: an empty body is malformed).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if not data.strip() and empty is not ...:
        return empty
    if _NUL_ESCAPE.search(data):
        raise BadJson("JSON contains a NUL character (\\u0000), which cannot be stored", code="invalid")
    try:
        value = json.loads(data)
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels", code="too-costly") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        raise BadJson("Malformed JSON body", code="structure") from None
    _depth_and_strings(value, check_strings=bool(_SURROGATE_ESCAPE.search(data)))
    return value
