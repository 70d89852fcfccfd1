"""Recovery files (issue 13 item 5; PROTOCOL.md "Recovery files"; format in ``pyclient.recovery``).

The server's recovery key pair is P-256. The private key comes from ``OMNICARE_RECOVERY_PRIVATE_KEY`` (PEM,
PKCS#8) when set, else it is generated on first use and kept as a ``WrappedSecret`` under the key backend's
key-encryption key (``omnicare.keys``: rotating the KEK re-wraps it). Devices fetch the public key and their
recovery token from ``GET /api/sync/recovery-key``. An administrator imports a file in the admin
(Sync → Recovery imports → Import a recovery file); :func:`recovery_import` checks everything first, then
replays the changes through the normal push path as their author and device, in one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from omnicare.audit.models import AuditEvent
from omnicare.audit.services import NewEvent, append_events
from omnicare.core.errors import ApiError
from omnicare.fhir.trail import audited
from omnicare.keys.models import WrappedSecret
from omnicare.keys.services import secret_get, secret_put
from pyclient.adapters.cpython_crypto import recovery_open
from pyclient.protocol import PushRequest
from pyclient.recovery import ALG, RecoveryFile, RecoveryFileError, key_id_of

from . import push as push_svc
from .models import RecoveryImport

SECRET_NAME = "sync.recovery-private-key"  # noqa: S105 (the name of a wrapped secret, not a secret)
ENV = "OMNICARE_RECOVERY_PRIVATE_KEY"


def recovery_private_key() -> ec.EllipticCurvePrivateKey:
    pem = os.environ.get(ENV)
    if pem:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise RecoveryFileError(f"{ENV} must be a P-256 private key (PKCS#8 PEM)")
        return key
    if not WrappedSecret.objects.filter(name=SECRET_NAME).exists():
        fresh = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        try:
            with transaction.atomic():
                if not WrappedSecret.objects.filter(name=SECRET_NAME).exists():
                    secret_put(name=SECRET_NAME, value=fresh)
        except IntegrityError:
            pass  # another process created it first: use theirs
    key = serialization.load_der_private_key(secret_get(name=SECRET_NAME), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def recovery_token(*, key: ec.EllipticCurvePrivateKey, user: Any, device_id: str) -> str:
    """What a device puts inside each sealed change: proof (only this server can compute it) that the
    device held a session of ``user`` — the public key alone would let anyone write a file in their name."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    mac_key = hashlib.sha256(b"omnicare-recovery-token\x00" + der).digest()
    return hmac.new(mac_key, f"{user.pk}\x00{user.get_username()}\x00{device_id}".encode(), "sha256").hexdigest()[:32]


def recovery_key_info(*, user: Any, device_id: str) -> dict[str, Any]:
    """The answer of ``GET /api/sync/recovery-key``."""
    import base64

    key = recovery_private_key()
    raw = _public_raw(key)
    return {"alg": ALG, "keyId": key_id_of(raw), "publicKey": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
            "user": user.get_username(), "token": recovery_token(key=key, user=user, device_id=device_id)}


def recovery_import(*, data: bytes, imported_by: Any) -> RecoveryImport:
    """Check a recovery file completely, then replay it (see the module docstring). Raises
    :class:`RecoveryFileError` (plain words) before anything is written when the file cannot be used."""
    f = RecoveryFile.parse(data)
    key = recovery_private_key()
    payloads = [recovery_open(private_key=key, device_id=f.device_id, item=i) for i in f.items]
    names = {p.user for p in payloads}
    if len(names) != 1:
        raise RecoveryFileError("the file mixes changes of several users")
    author = get_user_model().objects.filter(username=names.pop()).first()
    if author is None or not author.is_active:
        raise RecoveryFileError("the file's author has no active account on this server")
    expected = recovery_token(key=key, user=author, device_id=f.device_id)
    if not all(hmac.compare_digest(p.token, expected) for p in payloads):
        raise RecoveryFileError("the file is not vouched for by this server (wrong user, device or server)")
    request = PushRequest(device_id=f.device_id, mutations=tuple(p.mutation for p in payloads))
    digest = hashlib.sha256(data).hexdigest()
    try:
        with transaction.atomic():
            with audited(user=author, action="sync-push", device_id=f.device_id) as note:
                response = push_svc.push(user=author, request=request)
                push_svc.push_audit(note=note, request=request, response=response)
                note.detail.update({"recovery": "file", "importedBy": imported_by.get_username()[:150]})
            counts: dict[str, int] = {}
            for r in response.results:
                counts[r.status] = counts.get(r.status, 0) + 1
            record = RecoveryImport.objects.create(
                imported_by=imported_by, file_sha256=digest, device_id=f.device_id, author=author,
                changes=len(request.mutations), counts=counts)
            append_events([NewEvent(
                action="sync-recovery-import", user=imported_by, category=AuditEvent.CATEGORY_SECURITY,
                device_id=f.device_id, resource_type="RecoveryImport", resource_id=str(record.id),
                detail={"author": author.get_username()[:150], "changes": len(request.mutations), "counts": counts,
                        "file": digest})])
    except ApiError as exc:  # e.g. the device was revoked: nothing was written
        raise RecoveryFileError(f"the changes cannot be imported: {exc.diagnostics}"[:300]) from None
    return record
