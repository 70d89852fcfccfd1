"""PROTOCOL.md names every message on every channel (issue 11): each HTTP path and method the server answers
outside FHIR REST is a row of §10, each row is still a path, each message type and close code ``/ws/sync`` sends
is in §8 (and each ``/ws/ping`` message in §10), and each OperationOutcome code the server raises is in §9."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "pyclient" / "PROTOCOL.md").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    start = PROTOCOL.index(heading)
    nxt = PROTOCOL.find("\n## ", start + 1)
    return PROTOCOL[start: nxt if nxt != -1 else len(PROTOCOL)]


def _index_rows() -> list[tuple[set[str], set[str]]]:
    """(methods, paths) of every row of §10's table."""
    rows = []
    for line in _section("## 10. Index").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].startswith("`/"):
            rows.append((set(re.findall(r"`([A-Z]+)`", cells[0])), set(re.findall(r"`(/[^`]*)`", cells[1]))))
    return rows


def _served() -> set[tuple[str, str]]:
    from omnicare.api import api

    return {(method.upper(), path) for path, ops in api.get_openapi_schema()["paths"].items()
            if not path.startswith("/fhir/") for method in ops}


def test_every_path_the_server_answers_is_in_the_index() -> None:
    rows = _index_rows()
    missing = sorted((m, p) for m, p in _served() if not any(m in ms and p in ps for ms, ps in rows))
    assert missing == []


def test_every_path_in_the_index_is_served() -> None:
    served = _served()
    stale = sorted((m, p) for ms, ps in _index_rows() for p in ps for m in ms
                   if (m, p) not in served and not any(sp == p for _, sp in served))
    assert stale == []


def test_every_sync_socket_message_and_close_code_is_in_section_8() -> None:
    src = (ROOT / "omnicare" / "sync" / "consumers.py").read_text(encoding="utf-8")
    sent = set(re.findall(r'send_json\(\s*\{\s*"type":\s*"([^"]+)"', src))
    received = set(re.findall(r'content\.get\("type"\) == "([^"]+)"', src))
    assert {"ready", "sync.hint", "pong", "device-revoked", "emergency-ended"} <= sent
    ws = _section("## 8. WebSocket")
    assert sorted(t for t in sent | received if f'{{"type": "{t}"' not in ws) == []
    constants = dict(re.findall(r"^(CLOSE_\w+) = (\d+)", src, re.M))
    codes = {constants.get(c, c) for c in re.findall(r"close\(code=(\w+)\)", src)}
    assert codes and sorted(c for c in codes if f"**{c}**" not in ws) == []


def test_every_outcome_code_the_server_raises_is_in_section_9() -> None:
    outcomes = _section("## 9. Outcomes")
    issue_types: set[str] = set()
    details: set[str] = set()
    for path in (ROOT / "omnicare").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        src = path.read_text(encoding="utf-8")
        issue_types |= set(re.findall(r'(?:Error|Request|Found|Forbidden|Unavailable|Failed|Large)\([^()]*code="([a-z-]+)"',
                                      src))
        issue_types |= set(re.findall(r'status, code = \d+, "([a-z-]+)"', src))
        issue_types |= set(re.findall(r'operation_outcome\(code="([a-z-]+)"', src))
        details |= set(re.findall(r'"system": "urn:omnicare:(?:device|auth)", "code": "([a-z-]+)"', src))
    from omnicare.api import FIXED_OUTCOMES

    issue_types |= {code for _, code, _, _ in FIXED_OUTCOMES.values()}
    assert {"invalid", "forbidden", "deleted", "transient"} <= issue_types
    assert details == {"device-revoked", "mfa-required", "password-change-required"}
    assert sorted(c for c in issue_types | details if f"`{c}`" not in outcomes) == []


def test_every_ping_socket_message_and_close_code_is_tabled() -> None:
    src = (ROOT / "omnicare" / "core" / "consumers.py").read_text(encoding="utf-8")
    sent = set(re.findall(r'send_json\(\s*\{\s*"type":\s*"([^"]+)"', src))
    assert sent == {"pong", "broadcast"}
    index = _section("## 10. Index")
    assert sorted(t for t in sent if f'{{"type": "{t}"' not in index) == []
    codes = set(re.findall(r"close\(code=(\d+)\)", src))
    assert codes and sorted(c for c in codes if f"**{c}**" not in index) == []
