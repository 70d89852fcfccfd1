"""The tablet as a witness of the audit log, in real Chromium: it keeps the newest checkpoint the server proved
consistent, and notices when the server's history was rewritten (issue 10 item 1, CT-style gossip)."""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import poll, sign_in_and_sync

REWRITE = """
from django.db import connection
from omnicare.audit import dbguard, merkle, services
from omnicare.audit.models import AuditEvent, ChainHead
services.audit_sequence()
with connection.cursor() as cur:
    for name in dbguard.sqlite_triggers():
        cur.execute(f"DROP TRIGGER IF EXISTS {name}")
    kept = list(AuditEvent.objects.filter(seq__isnull=False).order_by("seq"))[1:]  # erase event 1
    cur.execute("DELETE FROM audit_checkpoint")
    cur.execute("DELETE FROM audit_auditevent WHERE seq IS NOT NULL")
    cur.execute("DELETE FROM audit_chainhead")
    prev, frontier = services.GENESIS, merkle.Frontier()
    for n, ev in enumerate(kept, 1):
        ev.seq, ev.prev_hash = n, prev
        ev.hash = services.event_hash(prev, services.event_fields(ev))
        ev.pk = None
        ev._state.adding = True
        ev.save()
        frontier.append(bytes.fromhex(ev.hash))
        prev = ev.hash
    ChainHead.objects.create(pk=1, seq=len(kept), hash=prev, frontier=frontier.to_json())
    for sql in dbguard.sqlite_triggers().values():
        cur.execute(sql)
for i in range(40):  # the log grows on past what the tablet holds
    services.audit_record(user=None, action="login", category="security", outcome="failure",
                          detail={"username": f"probe{i}"})
services.audit_checkpoint()  # signed with the server's real key: only a witness can tell
print("rewritten", len(kept))
"""


def _state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("() => window.omnicare.py.call('audit_log_state')"))


def test_the_tablet_checks_each_new_checkpoint_and_flags_a_rewritten_history(
    new_context: Any, server: Server
) -> None:
    page = sign_in_and_sync(new_context(), "dr.adams")
    poll(page, "async () => (await window.omnicare.py.call('audit_log_state')).treeSize !== null", timeout=60)
    first = _state(page)
    assert first["violation"] is None
    page.click("#sync-now")  # the first sync itself was audited: the log grew, the proof is checked
    poll(page, f"async () => (await window.omnicare.py.call('audit_log_state')).treeSize > {first['treeSize']}",
         timeout=60)
    assert _state(page)["violation"] is None

    assert "rewritten" in server.manage("shell", "-c", REWRITE)
    page.click("#sync-now")
    poll(page, "async () => (await window.omnicare.py.call('audit_log_state')).violation !== null", timeout=60)
    state = _state(page)
    assert "rewritten" in state["violation"] or "lost" in state["violation"]

    # Reported, not just recorded: the next sync uploads the tablet's security event (once), the server files
    # it as a security event and the privacy officer's dashboard counts it and raises an alert.
    page.click("#sync-now")
    found = _witness_events(server)
    for _ in range(30):
        if found.startswith("1 "):
            break
        page.click("#sync-now")
        page.wait_for_timeout(1000)
        found = _witness_events(server)
    count, category, detail = found.split(" ", 2)
    assert count == "1" and category == "security" and ("rewritten" in detail or "lost" in detail)
    page.click("#sync-now")  # seen again at every sync while the tablet keeps its checkpoint: not re-reported
    page.wait_for_timeout(3000)
    assert _witness_events(server).startswith("1 ")
    server.manage("shell", "-c", "from omnicare.audit.services import audit_sequence; from omnicare.ops import services as s; "
                  "audit_sequence(); s.audit_rollup_refresh(); s.alerts_evaluate()")

    officer = new_context()
    p = officer.new_page()
    p.goto("/admin/login/?next=/admin/ops/dashboard/")
    p.fill("#id_username", "privacy.officer")
    p.fill("#id_password", "audit-trail-ledger-161")
    p.click("input[type=submit]")
    p.wait_for_selector("#ops-panels #security")
    assert "the audit history was rewritten" in p.locator('[data-testid="audit-rewrites"]').inner_text()
    assert "Audit history rewritten: 1 device report" in p.locator("#alerts").inner_text()
    for w, h in ((1024, 768), (768, 1024)):
        p.set_viewport_size({"width": w, "height": h})
        p.locator('[data-testid="audit-rewrites"]').scroll_into_view_if_needed()
        shot(p, f"ops-security-audit-rewrite-{w}x{h}", full_page=False)


def _witness_events(server: Server) -> str:
    """'<count> <category of the first> <its reason>' of the server's audit-witness events."""
    out = server.manage("shell", "-c", WITNESS_EVENTS)
    return next(line for line in out.splitlines() if line.startswith("WITNESS ")).removeprefix("WITNESS ")


WITNESS_EVENTS = """
from omnicare.audit.models import AuditEvent
evs = list(AuditEvent.objects.filter(action="audit-witness"))
print("WITNESS", len(evs), evs[0].category if evs else "-", evs[0].detail.get("reason", "") if evs else "-")
"""
