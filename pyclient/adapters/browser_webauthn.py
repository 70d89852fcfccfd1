"""Hardware-bound unlock (issue 10, item 16), the I/O side: the PIN-wrapped keyring blob wrapped a second time
under a key from the device's WebAuthn PRF output (``pwa/app/webauthn.js`` talks to the authenticator; the
container, KEK derivation and the unlock-secret rule are pure, in :mod:`pyclient.keys`).

Kept out of ``browser_app.py`` (being split): ``setup_pin`` calls :func:`prf_wrap`, the PIN unlock calls
:func:`prf_unwrap` when the stored blob is hardware-wrapped, ``unlock_info`` reads :func:`unlock_info`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from pyclient import keys as kh
from pyclient.envelope import NONCE_LEN


class HardwareKeyRefused(Exception):
    """The authenticator's output does not open the outer wrapping (another credential, or tampering)."""


def _unb64(text: Any) -> bytes:
    return base64.b64decode(str(text).encode("ascii"))


async def prf_wrap(app: Any, blob: bytes, prf: Mapping[str, Any]) -> bytes:
    """``blob`` (the PIN-wrapped keyring) wrapped under HKDF(PRF output): only that is stored."""
    cred, salt, output = _unb64(prf["credentialId"]), _unb64(prf["input"]), _unb64(prf["output"])
    aad = kh.prf_aad(cred, salt)
    key = await app._cipher.import_key(kh.prf_kek(output, salt))
    nonce = os.urandom(NONCE_LEN)
    (ct,) = await app._cipher.gcm_seal(key, [(nonce, aad, blob)])
    return kh.PrfWrapped(cred, salt, nonce, ct).pack()


async def prf_unwrap(app: Any, blob: bytes, output_b64: str | None) -> bytes:
    """The PIN-wrapped keyring inside a hardware-wrapped blob; raises :class:`HardwareKeyRefused`."""
    w = kh.parse_prf_wrapped(blob)
    if not output_b64:
        raise HardwareKeyRefused("This device's key is locked to its authenticator: use it to unlock.")
    key = await app._cipher.import_key(kh.prf_kek(_unb64(output_b64), w.salt))
    (inner,) = await app._cipher.gcm_open(key, [(w.nonce, w.aad(), w.ciphertext)])
    if inner is None:
        raise HardwareKeyRefused("This device's authenticator did not open its key.")
    return bytes(inner)


def unlock_info(blob_b64: str | None) -> dict[str, Any]:
    """What the unlock screen needs before asking for the PIN: is the key hardware-bound, and to what."""
    if not blob_b64:
        return {"hardwareBound": False}
    raw = _unb64(blob_b64)
    if not kh.is_prf_wrapped(raw):
        return {"hardwareBound": False}
    w = kh.parse_prf_wrapped(raw)
    return {"hardwareBound": True, "credentialId": base64.b64encode(w.credential_id).decode(),
            "input": base64.b64encode(w.salt).decode()}
