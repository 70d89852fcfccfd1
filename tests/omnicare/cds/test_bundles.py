"""Signed, versioned bundles: the server publishes the knowledge base and the guideline library; a device
verifies the Ed25519 signature and the digest before using one."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.test import Client

from pyclient.cds import KnowledgeBase, default_kb
from pyclient.cds.bundles import BundleError, accept, newest, to_verify


def verified(bundle: dict[str, Any]) -> bool:
    pub, sig, statement = to_verify(bundle)
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, statement)
    except InvalidSignature:
        return False
    return True


@pytest.fixture
def api(db: Any, user: Any, token_for: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")


def test_knowledge_base_bundle_verifies_and_is_the_shipped_base(api: Client) -> None:
    r = api.get("/api/cds/bundles/kb/latest")
    assert r.status_code == 200, r.content
    bundle = r.json()
    assert verified(bundle)
    got = accept(bundle, signature_ok=True)
    kb = KnowledgeBase.from_json(got.data())
    assert (got.kind, got.version, kb.version, kb.digest) == ("kb", default_kb().version, default_kb().version,
                                                             default_kb().digest)


def test_guideline_library_bundle(api: Client) -> None:
    bundle = api.get("/api/cds/bundles/guidelines/latest").json()
    assert verified(bundle)
    lib = accept(bundle, signature_ok=True).data()
    ids = {g["id"] for g in lib["guidelines"]}
    assert ids == {"sepsis-screening", "anticoagulation-reversal", "hyperkalaemia"}
    assert all(g["sources"] and g["sections"] for g in lib["guidelines"])
    index = api.get("/api/cds/bundles").json()["bundles"]
    assert {b["kind"] for b in index} == {"kb", "guidelines"}


def test_tampering_is_detected(api: Client) -> None:
    bundle = api.get("/api/cds/bundles/kb/latest").json()
    data = json.loads(base64.b64decode(bundle["payload"]))
    data["interactions"] = []
    forged = dict(bundle, payload=base64.b64encode(json.dumps(data).encode()).decode())
    with pytest.raises(BundleError, match="digest"):
        accept(forged, signature_ok=verified(forged))
    statement = json.loads(base64.b64decode(bundle["statement"]))
    statement["version"] = "2099.1.1"
    restated = dict(bundle, statement=base64.b64encode(json.dumps(statement).encode()).decode())
    assert not verified(restated)
    with pytest.raises(BundleError, match="signature"):
        accept(restated, signature_ok=verified(restated))
    with pytest.raises(BundleError, match="changed"):
        accept(bundle, signature_ok=True, pinned={bundle["keyId"]: b"\x00" * 32})


def test_publishing_a_new_version_and_refusing_a_changed_one(db: Any, api: Client) -> None:
    from omnicare.cds.services import bundle_publish
    from omnicare.core.errors import BadRequest

    data = json.loads(base64.b64decode(api.get("/api/cds/bundles/kb/latest").json()["payload"]))
    data["version"] = "2026.12.2"
    bundle_publish(kind="kb", data=data)
    assert accept(api.get("/api/cds/bundles/kb/latest").json(), signature_ok=True).version == "2026.12.2"
    data["interactions"] = data["interactions"][:3]
    with pytest.raises(BadRequest, match="already published"):
        bundle_publish(kind="kb", data=data)
    with pytest.raises(BadRequest):
        bundle_publish(kind="kb", data={"format": "nope"})


def test_bundles_need_sign_in_and_a_known_kind(db: Any, api: Client) -> None:
    assert Client().get("/api/cds/bundles/kb/latest").status_code == 401
    assert api.get("/api/cds/bundles/recipes/latest").status_code == 404


def test_newest_version_order() -> None:
    assert newest(["2026.12.1", "2026.12.10", "2026.9.3"]) == "2026.12.10"
    assert newest([]) is None
