"""The CDS Hooks fast path keeps its guarantees: the audit row is stored before any card leaves (fail closed,
on a real storage failure), the sequencer chains it later, and the cached "newest knowledge base" follows
a publication at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from tests.omnicare.cds.test_hooks import SIGN, bearer, doctor, full_prefetch, order_sign, post  # noqa: F401


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_no_cards_without_the_audit_row(client: Any, doctor: Any, token_for: Any) -> None:  # noqa: F811
    token = token_for(doctor)
    # A real storage failure, not a patched function: the audit table is gone (inside the test's
    # transaction, rolled back afterwards).
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE audit_auditevent RENAME TO audit_auditevent_away")
    r = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token))
    assert r.status_code == 503
    assert "cards" not in r.json() and "Penicillin" not in r.content.decode()
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE audit_auditevent_away RENAME TO audit_auditevent")


def test_the_call_only_inserts_and_the_sequencer_chains_it(client: Any, doctor: Any, token_for: Any,  # noqa: F811
                                                           settings: Any) -> None:
    from omnicare.audit.models import AuditEvent
    from omnicare.audit.services import audit_sequence, audit_verify

    settings.OMNICARE_AUDIT_SEQUENCE_INLINE = False  # as deployed: the sequencer runs beside the web process
    token = token_for(doctor)
    audit_sequence()
    r = post(client, SIGN, order_sign(prefetch=full_prefetch()), **bearer(token))
    assert r.status_code == 200 and r.json()["cards"]
    ev = AuditEvent.objects.filter(action="cds-hooks").order_by("-id").first()
    assert ev is not None and ev.seq is None  # stored before the answer, not yet chained
    assert audit_sequence() >= 1
    ev.refresh_from_db()
    assert ev.seq is not None and ev.hash
    report = audit_verify()
    assert report.ok, report.problems


@pytest.mark.django_db(transaction=True)
def test_newest_knowledge_base_is_cached_but_follows_a_publication(monkeypatch: pytest.MonkeyPatch) -> None:
    from omnicare.cds import services
    from omnicare.cds.models import KnowledgeBundle
    from pyclient.cds import shipped_bytes

    services._newest_kb_forget()
    services.bundles_ensure()
    kb, _ = services.kb_for_version(version=None)
    data = json.loads(shipped_bytes())
    assert kb.version == data["version"]
    # Cached: the next call asks the database nothing.
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as q:
        assert services.kb_for_version(version=None)[0] is kb
    assert not [x for x in q.captured_queries if "cds_knowledgebundle" in x["sql"]]
    # A publication in this process is seen at once.
    newer = {**data, "version": data["version"] + "-next"}
    services.bundle_publish(kind=KnowledgeBundle.KB, data=newer)
    assert services.kb_for_version(version=None)[0].version == newer["version"]
    # One made by another process (a row appearing) is seen once the cache runs out.
    other = {**data, "version": data["version"] + "-other"}
    raw = services._canonical(other)
    import hashlib

    row = KnowledgeBundle.objects.get(version=newer["version"])
    KnowledgeBundle.objects.create(kind=KnowledgeBundle.KB, version=other["version"],
                                   sha256=hashlib.sha256(raw).hexdigest(), payload=raw, statement=row.statement,
                                   key_id=row.key_id, signature=row.signature, published_at=row.published_at)
    assert services.kb_for_version(version=None)[0].version == newer["version"]  # still cached
    monkeypatch.setattr(services, "NEWEST_KB_SECONDS", 0.0)
    services._newest_kb_forget()
    assert services.kb_for_version(version=None)[0].version == other["version"]  # newest row wins
    services._newest_kb_forget()
