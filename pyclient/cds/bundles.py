"""Signed knowledge bundles as a device receives them (sans-IO: the adapter does the Ed25519 verify).

The server signs a *statement* - canonical JSON ``{"format", "kind", "version", "sha256", "publishedAt"}`` -
with its Ed25519 signing key and ships ``payload`` (the canonical JSON of the knowledge base or guideline
library) beside it. A device:

1. ``to_verify(bundle)`` -> (public key, signature, statement bytes): the adapter verifies (WebCrypto
   ``Ed25519`` in the browser, ``cryptography`` on CPython);
2. ``accept(bundle, signature_ok=..., pinned=...)`` -> :class:`Accepted` or :class:`BundleError`: the
   payload's SHA-256 must equal the signed one, kind and version must match the statement, and a key id the
   device has seen before must keep its public key (trust on first use, then pinned);
3. stores the accepted payload encrypted like a record and uses the newest version it holds
   (:func:`newest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATEMENT_FORMAT = "omnicare-signed-bundle-v1"
KINDS = ("kb", "guidelines")


class BundleError(ValueError):
    """A bundle that must not be used (bad signature, digest mismatch, unpinned key change, malformed)."""


@dataclass(frozen=True)
class Accepted:
    kind: str
    version: str
    sha256: str
    published_at: str
    key_id: str
    public_key: bytes
    payload: bytes

    def data(self) -> Any:
        return json.loads(self.payload)


def _unb64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"bundle field {field} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError(f"bundle field {field} is not base64") from exc


def to_verify(bundle: Mapping[str, Any]) -> tuple[bytes, bytes, bytes]:
    """(Ed25519 public key, signature, signed statement) for the adapter to verify."""
    if bundle.get("algorithm") != "Ed25519":
        raise BundleError("bundle is not signed with Ed25519")
    pub = _unb64(bundle.get("publicKey"), "publicKey")
    sig = _unb64(bundle.get("signature"), "signature")
    if len(pub) != 32 or len(sig) != 64:
        raise BundleError("bundle key or signature has the wrong length")
    return pub, sig, _unb64(bundle.get("statement"), "statement")


def accept(bundle: Mapping[str, Any], *, signature_ok: bool,
           pinned: Mapping[str, bytes] | None = None) -> Accepted:
    """Check everything but the signature itself (the adapter says ``signature_ok``)."""
    pub, _sig, statement_bytes = to_verify(bundle)
    if not signature_ok:
        raise BundleError("bundle signature does not verify")
    try:
        statement = json.loads(statement_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("signed statement is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("format") != STATEMENT_FORMAT:
        raise BundleError("signed statement has an unknown format")
    payload = _unb64(bundle.get("payload"), "payload")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != statement.get("sha256"):
        raise BundleError("payload does not match the signed digest")
    kind, version = statement.get("kind"), statement.get("version")
    if kind not in KINDS or not isinstance(version, str) or not version:
        raise BundleError("signed statement names no known kind and version")
    if bundle.get("kind") not in (None, kind) or bundle.get("version") not in (None, version):
        raise BundleError("bundle kind/version differ from the signed statement")
    key_id = str(bundle.get("keyId") or "")
    if pinned and key_id in pinned and bytes(pinned[key_id]) != pub:
        raise BundleError(f"signing key {key_id} changed since it was first seen")
    return Accepted(kind=str(kind), version=version, sha256=digest, published_at=str(statement.get("publishedAt")),
                    key_id=key_id, public_key=pub, payload=payload)


def version_key(version: str) -> tuple[int | str, ...]:
    """``2026.12.1`` < ``2026.12.10``: numeric parts compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


def newest(versions: Iterable[str]) -> str | None:
    items = list(versions)
    if not items:
        return None
    return max(items, key=lambda v: tuple((0, p) if isinstance(p, int) else (1, p) for p in version_key(v)))
