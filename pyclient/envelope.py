"""Versioned AES-256-GCM record envelope (plan / pack / parse; no cipher calls).

The core never runs AES: in the browser AES is only reachable as async
WebCrypto, and a JS<->Python crossing costs far more than the cipher on a small
record. So this module *plans* a seal (header, AAD, nonce, plaintext), *packs*
the adapter's ciphertext into the wire format and *parses* blobs back. The
adapters in :mod:`pyclient.adapters` execute AES-GCM, batched.

Wire format v1 (all integers big-endian; see PROTOCOL.md)::

    0  2  magic b"OE"
    2  1  format version = 0x01
    3  1  key id length N (1..64)
    4  N  key id (ASCII, printable, no spaces)
    .  12 nonce
    .  *  AES-256-GCM ciphertext || 16-byte tag

AAD = header (bytes 0 .. end of nonce) || u16 len || resource type (UTF-8)
      || u16 len || resource id (UTF-8) || u64 version.
Binding the header stops key-id/nonce substitution; binding type/id/version
stops a ciphertext being moved onto another record or another version.

Wire format v2 (written since issue 17; v1 stays readable) adds a 16-byte
**block salt** between the key id and the nonce. The AES key of a v2 envelope
is not the data key itself but ``HKDF-SHA256(data key, salt, "omnicare/envelope/v2/block-key")``;
the salt is fresh random bytes per nonce block. So even if the stored nonce
counter is rolled back and a counter value is used again, it is used under
another AES key: a (key, nonce) pair cannot repeat unless two 128-bit random
salts collide (PROTOCOL.md 2.2).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAGIC = b"OE"
FORMAT_V1 = 0x01
FORMAT_V2 = 0x02
SALT_LEN = 16
SUBKEY_INFO = b"omnicare/envelope/v2/block-key"
NONCE_LEN = 12
TAG_LEN = 16
KEY_LEN = 32
MAX_KEY_ID_LEN = 64
MAX_VERSION = 2**64 - 1


class EnvelopeError(ValueError):
    """Base class for envelope failures."""


class MalformedEnvelope(EnvelopeError):
    """The bytes are not a well-formed envelope of a known format version."""


class UnknownKeyId(EnvelopeError):
    """The envelope names a key id that is not in the keyring."""


class AuthenticationFailed(EnvelopeError):
    """GCM tag check failed: tampered, wrong key, or bound to another record."""


@dataclass(frozen=True, slots=True)
class RecordRef:
    """What an envelope is bound to: resource type, id and integer version."""

    resource_type: str
    resource_id: str
    version: int

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> RecordRef:
        """Ref of a FHIR resource dict (``meta.versionId`` missing -> version 0, a local draft)."""
        meta = resource.get("meta") or {}
        raw_version = meta.get("versionId", 0)
        try:
            version = int(raw_version)
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"meta.versionId must be an integer, got {raw_version!r}") from exc
        return cls(str(resource["resourceType"]), str(resource["id"]), version)


@dataclass(frozen=True, slots=True)
class SealJob:
    """Everything an adapter needs for one AES-GCM encryption."""

    key_id: str
    header: bytes
    aad: bytes
    nonce: bytes
    plaintext: bytes
    salt: bytes | None = None  # v2: the block salt the AES key is derived with (None = v1, the data key)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed envelope; ``aad_for(ref)`` still needs the record it is expected to belong to."""

    format_version: int
    key_id: str
    nonce: bytes
    header: bytes
    ciphertext: bytes  # ciphertext || tag
    salt: bytes | None = None  # v2 block salt; None for v1

    def aad_for(self, ref: RecordRef) -> bytes:
        """AAD to open this envelope as the record ``ref``."""
        return aad_for(header=self.header, ref=ref)


@lru_cache(maxsize=64)  # every record of a batch names the same key id: check it once
def _check_key_id(key_id: str) -> bytes:
    try:
        raw = key_id.encode("ascii")
    except UnicodeEncodeError as exc:
        raise EnvelopeError(f"key id must be ASCII: {key_id!r}") from exc
    if not 1 <= len(raw) <= MAX_KEY_ID_LEN or not all(0x21 <= b <= 0x7E for b in raw):
        raise EnvelopeError(f"key id must be 1..{MAX_KEY_ID_LEN} printable ASCII chars: {key_id!r}")
    return raw


def _lp16(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise EnvelopeError("field longer than 65535 bytes")
    return struct.pack(">H", len(raw)) + raw


def header_for(*, key_id: str, nonce: bytes, salt: bytes | None = None) -> bytes:
    """Envelope header: magic, format version, key id, (v2: block salt,) nonce."""
    kid = _check_key_id(key_id)
    if len(nonce) != NONCE_LEN:
        raise EnvelopeError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    if salt is None:
        return MAGIC + bytes((FORMAT_V1, len(kid))) + kid + nonce
    if len(salt) != SALT_LEN:
        raise EnvelopeError(f"block salt must be {SALT_LEN} bytes, got {len(salt)}")
    return MAGIC + bytes((FORMAT_V2, len(kid))) + kid + salt + nonce


def subkey(data_key: bytes, salt: bytes | None) -> bytes:
    """The AES-256 key an envelope is sealed with: the data key (v1) or its HKDF block key (v2).

    ``HKDF-SHA256(IKM = data key, salt = block salt, info = SUBKEY_INFO, L = 32)`` (RFC 5869).
    """
    if salt is None:
        return data_key
    if len(salt) != SALT_LEN:
        raise EnvelopeError(f"block salt must be {SALT_LEN} bytes, got {len(salt)}")
    prk = hmac.new(salt, data_key, hashlib.sha256).digest()
    return hmac.new(prk, SUBKEY_INFO + b"\x01", hashlib.sha256).digest()


def aad_for(*, header: bytes, ref: RecordRef) -> bytes:
    """Additional authenticated data binding ``header`` to one record version."""
    if not 0 <= ref.version <= MAX_VERSION:
        raise EnvelopeError(f"version out of range: {ref.version}")
    return header + _lp16(ref.resource_type) + _lp16(ref.resource_id) + struct.pack(">Q", ref.version)


def seal_plan(
    *,
    key_id: str,
    nonce: bytes,
    resource_type: str,
    resource_id: str,
    version: int,
    plaintext: bytes,
    salt: bytes | None = None,
) -> SealJob:
    """Plan one seal. The nonce must come from :func:`pyclient.keys.reserve_nonces`.

    ``salt`` is the nonce block's salt (:attr:`pyclient.keys.NonceLease.salt`): given, the
    envelope is v2 and sealed under :func:`subkey`; None writes v1 (old readers, vectors).
    """
    header = header_for(key_id=key_id, nonce=nonce, salt=salt)
    aad = aad_for(header=header, ref=RecordRef(resource_type, resource_id, version))
    return SealJob(key_id=key_id, header=header, aad=aad, nonce=nonce, plaintext=plaintext, salt=salt)


def seal_plans(
    *, key_id: str, salt: bytes | None, nonces: Sequence[bytes], items: Sequence[tuple[str, str, int, bytes]]
) -> list[SealJob]:
    """Plan a batch from one nonce block: one job per (type, id, version, compressed plaintext), in order."""
    if len(nonces) != len(items):
        raise EnvelopeError("one nonce per item")
    return [
        seal_plan(key_id=key_id, nonce=nonce, resource_type=t, resource_id=i, version=v, plaintext=pt, salt=salt)
        for (t, i, v, pt), nonce in zip(items, nonces, strict=True)
    ]


def pack(job: SealJob, ciphertext_with_tag: bytes) -> bytes:
    """Envelope bytes from a planned job and the adapter's AES-GCM output."""
    if len(ciphertext_with_tag) != len(job.plaintext) + TAG_LEN:
        raise EnvelopeError("ciphertext length does not match plaintext + 16-byte tag")
    return job.header + ciphertext_with_tag


def parse(blob: bytes) -> Parsed:
    """Split an envelope into its fields; raises :class:`MalformedEnvelope`."""
    if len(blob) < 4 or blob[:2] != MAGIC:
        raise MalformedEnvelope("not an OmniCare envelope (bad magic)")
    version = blob[2]
    if version not in (FORMAT_V1, FORMAT_V2):
        raise MalformedEnvelope(f"unsupported envelope format version {version}")
    n = blob[3]
    end_kid = 4 + n
    end_salt = end_kid + (SALT_LEN if version == FORMAT_V2 else 0)
    end_nonce = end_salt + NONCE_LEN
    if n == 0 or n > MAX_KEY_ID_LEN or len(blob) < end_nonce + TAG_LEN:
        raise MalformedEnvelope("truncated envelope")
    try:
        key_id = blob[4:end_kid].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedEnvelope("key id is not ASCII") from exc
    return Parsed(
        format_version=version,
        key_id=key_id,
        nonce=bytes(blob[end_salt:end_nonce]),
        header=bytes(blob[:end_nonce]),
        ciphertext=bytes(blob[end_nonce:]),
        salt=bytes(blob[end_kid:end_salt]) if version == FORMAT_V2 else None,
    )


def key_id_of(blob: bytes) -> str:
    """Key id of an envelope without touching the ciphertext (for the rotation planner)."""
    return parse(blob).key_id
