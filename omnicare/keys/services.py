"""The server's key-management interface: sign/verify (audit checkpoints), wrap/unwrap, rotate.

Every key has versions. Exactly one version per purpose is active; rotation makes a new
active version and marks the old one ``retiring``. Signing keys retire at once (their
public key stays to verify old signatures); a KEK stays ``retiring`` until every
``WrappedSecret`` under it has been re-wrapped in resumable batches, then its material is
destroyed. Callers pass ``now``; nothing here reads the clock when a time is given.
"""

from __future__ import annotations

import base64
import secrets
import struct
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .backends import (
    SIGNING,
    WRAPPING,
    backend_for,
    default_backend_name,
    key32_from_base64,
    master_key_configured,
)
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
    """True if ``signature`` is ``key_id``'s signature of ``data`` by the key *stored in the database*.

    Not a trust anchor (anyone who can write ``keys_keyversion`` can swap the key): the audit verifier uses
    :func:`verify_pinned`. Kept for callers that check their own recent signatures.
    """
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


# --- The verifier's trust anchor: a public key pinned outside the database -----------------------------


def _parse_pins(raw: str) -> dict[str, bytes]:
    """``OMNICARE_AUDIT_PUBKEY``: comma-separated ``<key id>=<base64 raw Ed25519 public key>`` (or a bare
    base64 key, trusted for any key id). ``manage.py audit_pubkey`` prints the value to set."""
    pins: dict[str, bytes] = {}
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        key_id, b64 = item.split("=", 1) if item.startswith(SIGNING + ":") else ("*", item)
        pins[key_id] = key32_from_base64(b64, not_base64="OMNICARE_AUDIT_PUBKEY: not base64",
                                         wrong_size="OMNICARE_AUDIT_PUBKEY: an Ed25519 public key is 32 bytes")
    return pins


def pinned_source() -> str:
    """Where the verifier's key comes from: 'pinned (OMNICARE_AUDIT_PUBKEY)' or 'derived ...'."""
    if getattr(settings, "OMNICARE_AUDIT_PUBKEY", ""):
        return "pinned (OMNICARE_AUDIT_PUBKEY)"
    if default_backend_name() == "pkcs11":
        return "derived key from the HSM"
    return "derived key from the master key" + ("" if master_key_configured() else " (dev fallback from SECRET_KEY)")


_derived: dict[tuple[str, str], bytes] = {}


def trusted_public_key(*, key_id: str) -> bytes | None:
    """The public key the verifier trusts for ``key_id``; never the ``public_key`` column of the database.

    With ``OMNICARE_AUDIT_PUBKEY`` set, only the keys listed there. Otherwise the key is computed from the
    private material through the key backend (the master key or the HSM, both outside the database), so a
    key pair swapped into ``keys_keyversion`` is not trusted: its handle does not unwrap.
    """
    raw = getattr(settings, "OMNICARE_AUDIT_PUBKEY", "")
    if raw:
        pins = _parse_pins(raw)
        return pins.get(key_id) or pins.get("*")
    try:
        row = key_version(key_id=key_id)
    except KeyNotFound:
        return None
    if row.purpose != SIGNING or not row.handle:
        return None  # a destroyed key can only be trusted through OMNICARE_AUDIT_PUBKEY
    cache_key = (row.handle, key_id)
    if cache_key not in _derived:
        try:
            _derived[cache_key] = backend_for(row.backend).public_key(handle=row.handle, key_id=key_id)
        except Exception:  # noqa: BLE001 - does not unwrap: not our key
            return None
    return _derived[cache_key]


def verify_pinned(*, key_id: str, data: bytes, signature: bytes) -> bool:
    """True if ``signature`` over ``data`` verifies under the pinned (or backend-derived) key for ``key_id``."""
    public = trusted_public_key(key_id=key_id)
    if public is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def pubkey_pin_value(*, now: datetime | None = None) -> str:
    """The ``OMNICARE_AUDIT_PUBKEY`` value for every signing key whose material still exists (newest last)."""
    get_signing_key(now=now)
    parts = []
    for row in KeyVersion.objects.filter(purpose=SIGNING).order_by("version"):
        if row.handle:
            public = backend_for(row.backend).public_key(handle=row.handle, key_id=row.key_id)
            parts.append(f"{row.key_id}={base64.b64encode(public).decode()}")
    return ",".join(parts)


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
        # Retired at once (never signs again), but its wrapped material stays: the verifier derives the public
        # key from it through the master key / HSM instead of trusting the public_key column (a DB attacker
        # could swap that). Destroying it would gain little: whoever holds the master key can sign with the
        # current key anyway, which is what the checkpoints published outside the database catch.
        KeyVersion.objects.filter(pk=old.pk).update(status=KeyVersion.RETIRED, retired=now)
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
