"""The server's key-management interface: sign/verify (audit checkpoints), wrap/unwrap, rotate.

Every key has versions. Exactly one version per purpose is active; rotation makes a new
active version and marks the old one ``retiring``. Signing keys retire at once (their
public key stays to verify old signatures); a KEK stays ``retiring`` until every
``WrappedSecret`` under it has been re-wrapped in resumable batches, then its material is
destroyed. Callers pass ``now``; nothing here reads the clock when a time is given.
"""

from __future__ import annotations

import secrets
import struct
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .backends import SIGNING, WRAPPING, backend_for, default_backend_name
from .models import KeyVersion, WrappedSecret

MAGIC = b"OCW1"
PURPOSES = (SIGNING, WRAPPING)


class KeyNotFound(LookupError):
    pass


def rotation_interval() -> timedelta:
    return timedelta(days=int(getattr(settings, "OMNICARE_KEY_ROTATION_DAYS", 90)))


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def _create_version(*, purpose: str, now: datetime, reason: str, version: int) -> KeyVersion:
    backend = backend_for(default_backend_name())
    key_id = f"{purpose}:v{version}"
    handle, public = backend.create(purpose=purpose, key_id=key_id)
    return KeyVersion.objects.create(
        purpose=purpose, version=version, backend=backend.name, handle=handle, public_key=public,
        status=KeyVersion.ACTIVE, created=now, reason=reason,
    )


def active_key(*, purpose: str, now: datetime | None = None) -> KeyVersion:
    """The active version for ``purpose``, created on first use."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    row = KeyVersion.objects.filter(purpose=purpose, status=KeyVersion.ACTIVE).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            last = KeyVersion.objects.filter(purpose=purpose).order_by("-version").first()
            return _create_version(
                purpose=purpose, now=_now(now), reason="initial", version=(last.version + 1) if last else 1
            )
    except IntegrityError:  # another process made it first
        return KeyVersion.objects.get(purpose=purpose, status=KeyVersion.ACTIVE)


def get_signing_key(*, now: datetime | None = None) -> KeyVersion:
    """The active audit-signing key version (Ed25519)."""
    return active_key(purpose=SIGNING, now=now)


def key_version(*, key_id: str) -> KeyVersion:
    purpose, _, v = key_id.rpartition(":v")
    row = KeyVersion.objects.filter(purpose=purpose, version=int(v) if v.isdigit() else -1).first()
    if row is None:
        raise KeyNotFound(key_id)
    return row


def sign(*, data: bytes, now: datetime | None = None) -> tuple[str, bytes]:
    """Sign ``data`` with the active audit-signing key; returns (key_id, 64-byte Ed25519 signature)."""
    key = get_signing_key(now=now)
    signature = backend_for(key.backend).sign(handle=key.handle, key_id=key.key_id, data=data)
    return key.key_id, signature


def verify(*, key_id: str, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``key_id``'s signature of ``data`` (works for retired keys too)."""
    try:
        key = key_version(key_id=key_id)
    except KeyNotFound:
        return False
    if key.purpose != SIGNING or not key.public_key:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(key.public_key)).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def _aad(key_id: str, context: bytes) -> bytes:
    return MAGIC + key_id.encode() + b"\x00" + context


def wrap(*, plaintext: bytes, context: bytes = b"", now: datetime | None = None) -> bytes:
    """Encrypt ``plaintext`` under the active KEK. ``context`` is bound as AAD (unwrap must give the same)."""
    key = active_key(purpose=WRAPPING, now=now)
    return _wrap_with(key, plaintext, context)


def _wrap_with(key: KeyVersion, plaintext: bytes, context: bytes) -> bytes:
    kid = key.key_id.encode()
    nonce = secrets.token_bytes(12)  # random 96-bit nonces; a KEK wraps few, small secrets
    ct = backend_for(key.backend).encrypt(
        handle=key.handle, key_id=key.key_id, nonce=nonce, plaintext=plaintext, aad=_aad(key.key_id, context)
    )
    return MAGIC + struct.pack(">B", len(kid)) + kid + nonce + ct


def blob_key_id(blob: bytes) -> str:
    if blob[:4] != MAGIC:
        raise ValueError("not a wrapped blob")
    n = blob[4]
    return blob[5 : 5 + n].decode()


def unwrap(*, blob: bytes, context: bytes = b"") -> bytes:
    """Decrypt a blob made by :func:`wrap` (under whichever KEK version it names)."""
    key_id = blob_key_id(blob)
    key = key_version(key_id=key_id)
    if key.purpose != WRAPPING:
        raise KeyNotFound(key_id)
    start = 5 + blob[4]
    nonce, ct = blob[start : start + 12], blob[start + 12 :]
    return backend_for(key.backend).decrypt(
        handle=key.handle, key_id=key.key_id, nonce=nonce, ciphertext=ct, aad=_aad(key.key_id, context)
    )


def secret_put(*, name: str, value: bytes, now: datetime | None = None) -> WrappedSecret:
    """Store a server-held secret wrapped under the active KEK (the name is bound as AAD)."""
    key = active_key(purpose=WRAPPING, now=now)
    row, _ = WrappedSecret.objects.update_or_create(
        name=name, defaults={"blob": _wrap_with(key, value, name.encode()), "key_version": key, "updated": _now(now)}
    )
    return row


def secret_get(*, name: str) -> bytes:
    row = WrappedSecret.objects.get(name=name)
    return unwrap(blob=bytes(row.blob), context=name.encode())


def rotate(*, purpose: str, now: datetime | None = None, reason: str = "on demand") -> KeyVersion:
    """Make a new active version of ``purpose``; the old one becomes retiring (or retired, for signing)."""
    now = _now(now)
    with transaction.atomic():
        old = KeyVersion.objects.select_for_update().filter(purpose=purpose, status=KeyVersion.ACTIVE).first()
        last = KeyVersion.objects.filter(purpose=purpose).order_by("-version").first()
        if old is not None:
            old.status = KeyVersion.RETIRING
            old.rotated = now
            old.save(update_fields=["status", "rotated"])
        new = _create_version(purpose=purpose, now=now, reason=reason, version=(last.version + 1) if last else 1)
    if purpose == SIGNING and old is not None:
        _destroy(old, now)  # nothing is encrypted under a signing key; its public half stays for verification
    return new


def _destroy(key: KeyVersion, now: datetime) -> None:
    backend_for(key.backend).destroy(handle=key.handle)
    KeyVersion.objects.filter(pk=key.pk).update(status=KeyVersion.RETIRED, retired=now, handle="")


def rotation_due(*, now: datetime | None = None) -> list[str]:
    """Purposes whose active key is older than the rotation interval (90 days by default)."""
    cutoff = _now(now) - rotation_interval()
    due = []
    for purpose in PURPOSES:
        key = KeyVersion.objects.filter(purpose=purpose, status=KeyVersion.ACTIVE).first()
        if key is not None and key.created <= cutoff:
            due.append(purpose)
    return due


def rewrap_batch(*, batch_size: int = 100, now: datetime | None = None) -> int:
    """Re-wrap up to ``batch_size`` secrets still under an old KEK; returns how many moved.

    Resumable by construction: progress is the rows' own ``key_version``, committed per batch,
    so a crash loses at most the current batch and a rerun continues where it stopped.
    When no secret is left under a retiring KEK, its material is destroyed.
    """
    now = _now(now)
    current = active_key(purpose=WRAPPING, now=now)
    moved = 0
    with transaction.atomic():
        qs = WrappedSecret.objects.exclude(key_version=current).select_related("key_version").order_by("pk")
        if transaction.get_connection().features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        for row in qs[:batch_size]:
            value = unwrap(blob=bytes(row.blob), context=row.name.encode())
            row.blob = _wrap_with(current, value, row.name.encode())
            row.key_version = current
            row.updated = now
            row.save(update_fields=["blob", "key_version", "updated"])
            moved += 1
    for old in KeyVersion.objects.filter(purpose=WRAPPING, status=KeyVersion.RETIRING):
        if not WrappedSecret.objects.filter(key_version=old).exists():
            _destroy(old, now)
    return moved


def rotate_due(*, now: datetime | None = None, batch_size: int = 100, max_batches: int | None = None) -> dict[str, int]:
    """The scheduled job: rotate what is due, then re-wrap in batches. Returns {"rotated": n, "rewrapped": m}."""
    now = _now(now)
    rotated = 0
    for purpose in rotation_due(now=now):
        rotate(purpose=purpose, now=now, reason="scheduled (90-day rotation)")
        rotated += 1
    rewrapped, batches = 0, 0
    while max_batches is None or batches < max_batches:
        n = rewrap_batch(batch_size=batch_size, now=now)
        rewrapped += n
        batches += 1
        if n < batch_size:
            break
    return {"rotated": rotated, "rewrapped": rewrapped}
