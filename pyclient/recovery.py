"""Recovery files: unsynced changes sealed to the server's recovery public key (sans-IO; PROTOCOL.md "Recovery files").

A device that cannot sync (server unreachable for days, account problem, blocked update, forgotten PIN)
hands its unsynced changes to an administrator as a file only the server can open. Each queued mutation
is sealed ON ITS OWN, when it is queued, to the server's recovery public key (ECDH-ES on P-256, HKDF-SHA256,
AES-256-GCM — WebCrypto in the browser, ``cryptography`` on CPython): the device keeps these escrow copies
next to its PIN-sealed outbox, so a file can be produced without the PIN, and nobody holding the device can
read them. The server opens each item, checks the recovery token inside it (proof that the device held a
session of that user: the public key alone is public), and replays the mutations through the normal push
path under their original ids (idempotent; merged or parked as conflicts).

This module is the format only: the byte layouts, the AAD, the HKDF info, parsing with plain-language
errors. The sealing itself is done by the crypto adapters (``adapters.cpython_crypto.recovery_seal``,
the browser's WebCrypto), the opening by the server (``omnicare.sync.recovery``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyclient.protocol import Mutation, ProtocolError

__all__ = [
    "ALG",
    "FORMAT",
    "MAX_ITEMS",
    "EscrowPayload",
    "RecoveryFile",
    "RecoveryFileError",
    "SealedItem",
    "hkdf_info",
    "item_aad",
    "key_id_of",
    "payload_bytes",
    "payload_parse",
]

FORMAT: Final = "omnicare-recovery/1"
ALG: Final = "ECDH-ES-P256+HKDF-SHA256+A256GCM"
#: A device never holds more than this many unsynced changes in one file (the import applies them at once).
MAX_ITEMS: Final = 5000
#: Upper bound of one file, bytes (an administrator uploads it in the admin).
MAX_FILE_BYTES: Final = 32 * 1024 * 1024


class RecoveryFileError(ValueError):
    """The file cannot be used; the message is plain words for the administrator (never file content)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise RecoveryFileError(f"the file is damaged ({what} is missing)")
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise RecoveryFileError(f"the file is damaged ({what} is not readable)") from None
    if size is not None and len(raw) != size:
        raise RecoveryFileError(f"the file is damaged ({what} has the wrong length)")
    return raw


def key_id_of(public_key: bytes) -> str:
    """The id of a recovery public key (65-byte uncompressed P-256 point): first 16 hex of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def hkdf_info(epk: bytes, recipient: bytes) -> bytes:
    """HKDF-SHA256 ``info`` (salt empty, 32-byte output = the AES-256-GCM key): binds both public keys."""
    return FORMAT.encode() + b"\x00" + epk + recipient


def item_aad(*, key_id: str, device_id: str, mutation_id: str) -> bytes:
    """Additional data of one item: a ciphertext cannot be moved to another device, key or mutation."""
    return json.dumps([FORMAT, key_id, device_id, mutation_id], separators=(",", ":")).encode()


@dataclass(frozen=True)
class EscrowPayload:
    """What one sealed item holds: the mutation and who made it, with the server-issued recovery token."""

    user: str  # the username the device was signed in as
    device_id: str
    token: str  # from GET /api/sync/recovery-key: HMAC the server can check, the device cannot forge
    queued: float  # device clock, seconds (shown to the administrator; never trusted for ordering)
    mutation: Mutation


def payload_bytes(p: EscrowPayload) -> bytes:
    """Canonical JSON of a payload (the plaintext that is sealed)."""
    body = {"user": p.user, "deviceId": p.device_id, "token": p.token, "queued": p.queued,
            "mutation": p.mutation.to_json()}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def payload_parse(raw: bytes) -> EscrowPayload:
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        return EscrowPayload(
            user=_text(obj["user"]),
            device_id=_text(obj["deviceId"]),
            token=_text(obj["token"]),
            queued=float(obj["queued"]),
            mutation=Mutation.from_json(obj["mutation"]),
        )
    except (KeyError, TypeError, ValueError, ProtocolError, UnicodeDecodeError) as exc:
        if isinstance(exc, ProtocolError):
            raise RecoveryFileError(f"a change in the file is not valid ({exc})"[:300]) from None
        raise RecoveryFileError("a change in the file is damaged") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected text")
    return value


@dataclass(frozen=True)
class SealedItem:
    """One escrow copy: ``epk`` the ephemeral P-256 public key (65 bytes), ``iv`` 12 bytes, ``ct`` with the tag."""

    key_id: str
    mutation_id: str
    epk: bytes
    iv: bytes
    ct: bytes

    def to_json(self) -> dict[str, Any]:
        return {"keyId": self.key_id, "mutationId": self.mutation_id, "epk": _b64(self.epk), "iv": _b64(self.iv),
                "ct": _b64(self.ct)}

    @classmethod
    def from_json(cls, data: Any, where: str = "a change") -> SealedItem:
        if not isinstance(data, Mapping):
            raise RecoveryFileError(f"the file is damaged ({where} is not readable)")
        key_id, mid = data.get("keyId"), data.get("mutationId")
        if not isinstance(key_id, str) or not isinstance(mid, str) or not mid or len(mid) > 64:
            raise RecoveryFileError(f"the file is damaged ({where} has no valid id)")
        ct = _unb64(data.get("ct"), f"{where}'s data")
        if len(ct) < 16:
            raise RecoveryFileError(f"the file is damaged ({where} is too short)")
        return cls(key_id, mid, _unb64(data.get("epk"), f"{where}'s key", 65), _unb64(data.get("iv"), f"{where}'s nonce", 12),
                   ct)


@dataclass(frozen=True)
class RecoveryFile:
    """The exported file: which device, when, and the escrow copies of every unsynced change, oldest first."""

    device_id: str
    created: str  # ISO 8601, device clock (informational)
    items: tuple[SealedItem, ...]

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, "alg": ALG, "deviceId": self.device_id, "created": self.created,
                "count": len(self.items), "items": [i.to_json() for i in self.items]}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> RecoveryFile:
        """Validate a file; every problem is a :class:`RecoveryFileError` in plain words."""
        if len(raw) > MAX_FILE_BYTES:
            raise RecoveryFileError("the file is too large to be a recovery file")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RecoveryFileError("this is not an OmniCare recovery file") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise RecoveryFileError("this is not an OmniCare recovery file (or one from a newer version)")
        if obj.get("alg") != ALG:
            raise RecoveryFileError("the file was sealed with an unknown method")
        device, created, items = obj.get("deviceId"), obj.get("created"), obj.get("items")
        if not isinstance(device, str) or not device or not isinstance(created, str) or not isinstance(items, list):
            raise RecoveryFileError("the file is damaged (its header is incomplete)")
        if not items:
            raise RecoveryFileError("the file holds no changes")
        if len(items) > MAX_ITEMS:
            raise RecoveryFileError(f"the file holds more than {MAX_ITEMS} changes")
        if obj.get("count") != len(items):
            raise RecoveryFileError("the file is incomplete (fewer changes than it says)")
        parsed = tuple(SealedItem.from_json(it, f"change {n}") for n, it in enumerate(items, 1))
        if len({i.mutation_id for i in parsed}) != len(parsed):
            raise RecoveryFileError("the file is damaged (a change appears twice)")
        return cls(device, created, parsed)


def file_of(device_id: str, created: str, items: Sequence[SealedItem]) -> bytes:
    """The bytes of a recovery file holding ``items``."""
    return RecoveryFile(device_id, created, tuple(items)).to_bytes()
