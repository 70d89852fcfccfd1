"""Where server key material lives: a local master key (default) or a PKCS#11 token (HSM).

A backend creates keys and performs the private operations (sign, AES-GCM encrypt and
decrypt); it never hands raw KEK or private-key material back to the caller (the local
backend's handle is the material *wrapped by the master key*). Which backend made a key
is recorded on its ``KeyVersion``, so keys made by either stay usable after a switch.

Configuration (environment):
  OMNICARE_KEY_BACKEND      ``local`` (default) or ``pkcs11``
  OMNICARE_MASTER_KEY       base64 of 32 random bytes (local backend)
  OMNICARE_PKCS11_LIB       path of the PKCS#11 module (default: SoftHSM2's)
  OMNICARE_PKCS11_TOKEN     token label;  OMNICARE_PKCS11_PIN  user PIN
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import threading
import warnings
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger("omnicare.keys")

SIGNING, WRAPPING = "audit-signing", "kek"
DEFAULT_PKCS11_LIB = "/usr/lib/softhsm/libsofthsm2.so"


class KeyBackend(Protocol):
    name: str

    def create(self, *, purpose: str, key_id: str) -> tuple[str, bytes | None]:
        """Make a new key; return (handle, raw Ed25519 public key or None)."""

    def sign(self, *, handle: str, key_id: str, data: bytes) -> bytes: ...

    def encrypt(self, *, handle: str, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    def decrypt(self, *, handle: str, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes: ...

    def destroy(self, *, handle: str) -> None: ...

    def public_key(self, *, handle: str, key_id: str) -> bytes:
        """The raw Ed25519 public key of a signing key, computed from the key material (not from the DB row)."""


PRODUCTION_KEY_MESSAGE = (
    "OMNICARE_MASTER_KEY (base64 of 32 random bytes) or OMNICARE_KEY_BACKEND=pkcs11 is required when "
    "OMNICARE_DEBUG is off: the audit-signing and wrapping keys must not derive from SECRET_KEY"
)


def dev_fallback_allowed() -> bool:
    """Only a DEBUG server, a test run or OMNICARE_TESTING may derive the master key from SECRET_KEY."""
    import sys

    testing = os.environ.get("OMNICARE_TESTING", "").strip().lower() in {"1", "true", "yes", "on"}
    return bool(settings.DEBUG) or testing or "pytest" in sys.modules


def production_key_check() -> None:
    """Refuse to start a production server (DEBUG off) without a real master key or an HSM."""
    if default_backend_name() == "local" and not master_key_configured() and not dev_fallback_allowed():
        raise ImproperlyConfigured(PRODUCTION_KEY_MESSAGE)


def master_key_configured() -> bool:
    return bool(os.environ.get("OMNICARE_MASTER_KEY", ""))


def key32_from_base64(b64: str, *, not_base64: str, wrong_size: str) -> bytes:
    """A 32-byte key from the environment's base64; a bad value stops start-up with the setting's own words."""
    try:
        key = base64.b64decode(b64, validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured(not_base64) from exc
    if len(key) != 32:
        raise ImproperlyConfigured(wrong_size)
    return key


def master_key() -> bytes:
    """The local master key from OMNICARE_MASTER_KEY, or (dev/demo only) one derived from SECRET_KEY."""
    raw = os.environ.get("OMNICARE_MASTER_KEY", "")
    if raw:
        return key32_from_base64(raw, not_base64="OMNICARE_MASTER_KEY must be base64",
                                 wrong_size="OMNICARE_MASTER_KEY must decode to exactly 32 bytes")
    if not dev_fallback_allowed():
        raise ImproperlyConfigured(PRODUCTION_KEY_MESSAGE)
    message = (
        "OMNICARE_MASTER_KEY is not set: the local key backend derives its master key from SECRET_KEY. "
        "This is for development and demos only; anyone with SECRET_KEY can unwrap server keys."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    log.warning(message)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"omnicare-master-key-v1", info=b"dev-fallback").derive(
        settings.SECRET_KEY.encode()
    )


class LocalBackend:
    """Key material is random, wrapped with AES-256-GCM under the master key, stored in the database."""

    name = "local"

    def __init__(self, key: bytes | None = None) -> None:
        self._master = key

    def _aes(self) -> AESGCM:
        if self._master is None:
            self._master = master_key()
        return AESGCM(self._master)

    def _seal(self, key_id: str, material: bytes) -> str:
        nonce = secrets.token_bytes(12)
        return base64.b64encode(nonce + self._aes().encrypt(nonce, material, key_id.encode())).decode()

    def _open(self, key_id: str, handle: str) -> bytes:
        if not handle:
            raise KeyError(f"{key_id} has been destroyed")
        blob = base64.b64decode(handle)
        return self._aes().decrypt(blob[:12], blob[12:], key_id.encode())

    def create(self, *, purpose: str, key_id: str) -> tuple[str, bytes | None]:
        if purpose == SIGNING:
            private = Ed25519PrivateKey.generate()
            raw = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return self._seal(key_id, raw), public
        return self._seal(key_id, secrets.token_bytes(32)), None

    def sign(self, *, handle: str, key_id: str, data: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self._open(key_id, handle)).sign(data)

    def encrypt(self, *, handle: str, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return AESGCM(self._open(key_id, handle)).encrypt(nonce, plaintext, aad)

    def decrypt(self, *, handle: str, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        return AESGCM(self._open(key_id, handle)).decrypt(nonce, ciphertext, aad)

    def destroy(self, *, handle: str) -> None:
        """Nothing to do: the caller blanks the stored handle, which is the only copy."""

    def public_key(self, *, handle: str, key_id: str) -> bytes:
        # Unwrapping under the master key authenticates the handle (AES-GCM, key id as AAD): a key pair an
        # attacker wrote into the table does not open unless they also hold the master key.
        private = Ed25519PrivateKey.from_private_bytes(self._open(key_id, handle))
        return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Pkcs11Backend:
    """Keys are generated on the token (non-extractable) and used through python-pkcs11."""

    name = "pkcs11"
    _lock = threading.Lock()  # python-pkcs11 sessions are not shared across threads

    def __init__(self, *, lib_path: str | None = None, token_label: str | None = None, pin: str | None = None) -> None:
        self.lib_path = lib_path or os.environ.get("OMNICARE_PKCS11_LIB", DEFAULT_PKCS11_LIB)
        self.token_label = token_label or os.environ.get("OMNICARE_PKCS11_TOKEN", "")
        self.pin = pin if pin is not None else os.environ.get("OMNICARE_PKCS11_PIN", "")
        if not self.token_label:
            raise ImproperlyConfigured("OMNICARE_PKCS11_TOKEN must name the token for the pkcs11 key backend")

    def _session(self) -> Any:
        import pkcs11  # imported lazily: only deployments with an HSM need the module

        token = pkcs11.lib(self.lib_path).get_token(token_label=self.token_label)
        return token.open(rw=True, user_pin=self.pin)

    def create(self, *, purpose: str, key_id: str) -> tuple[str, bytes | None]:
        from pkcs11 import Attribute, KeyType
        from pkcs11.util.ec import encode_named_curve_parameters

        # The label is unique even if a rotation is retried after a crash (no clash with a half-made key).
        label = f"omnicare:{key_id}:{secrets.token_hex(4)}"
        with self._lock, self._session() as session:
            if purpose == SIGNING:
                params = session.create_domain_parameters(
                    KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.101.112")}, local=True
                )
                public, _private = params.generate_keypair(
                    store=True, label=label, private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True}
                )
                point = bytes(public[Attribute.EC_POINT])
                # EC_POINT is a DER OCTET STRING (04 20 <32 bytes>) on SoftHSM2; some tokens give it raw.
                raw = point[2:] if len(point) == 34 and point[0] == 0x04 else point
                return label, raw
            session.generate_key(
                KeyType.AES, 256, store=True, label=label,
                template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
            )
            return label, None

    def sign(self, *, handle: str, key_id: str, data: bytes) -> bytes:
        from pkcs11 import Mechanism, ObjectClass

        with self._lock, self._session() as session:
            key = session.get_key(label=handle, object_class=ObjectClass.PRIVATE_KEY)
            return bytes(key.sign(data, mechanism=Mechanism.EDDSA))

    def _secret(self, session: Any, handle: str) -> Any:
        from pkcs11 import ObjectClass

        return session.get_key(label=handle, object_class=ObjectClass.SECRET_KEY)

    def encrypt(self, *, handle: str, key_id: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock, self._session() as session:
            key = self._secret(session, handle)
            return bytes(key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128)))

    def decrypt(self, *, handle: str, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock, self._session() as session:
            key = self._secret(session, handle)
            return bytes(
                key.decrypt(ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128))
            )

    def public_key(self, *, handle: str, key_id: str) -> bytes:
        from pkcs11 import Attribute, ObjectClass

        with self._lock, self._session() as session:
            key = session.get_key(label=handle, object_class=ObjectClass.PUBLIC_KEY)
            point = bytes(key[Attribute.EC_POINT])
            return point[2:] if len(point) == 34 and point[0] == 0x04 else point

    def destroy(self, *, handle: str) -> None:
        from pkcs11 import Attribute

        with self._lock, self._session() as session:
            for obj in list(session.get_objects({Attribute.LABEL: handle})):
                obj.destroy()


_backends: dict[str, KeyBackend] = {}


def backend_for(name: str) -> KeyBackend:
    """The backend called ``name`` (one instance per process)."""
    if name not in _backends:
        if name == "local":
            _backends[name] = LocalBackend()
        elif name == "pkcs11":
            _backends[name] = Pkcs11Backend()
        else:
            raise ImproperlyConfigured(f"Unknown key backend {name!r} (local or pkcs11)")
    return _backends[name]


def default_backend_name() -> str:
    return getattr(settings, "OMNICARE_KEY_BACKEND", "local") or "local"


def reset_backends() -> None:
    """Forget cached backends (tests switch tokens and master keys)."""
    _backends.clear()
