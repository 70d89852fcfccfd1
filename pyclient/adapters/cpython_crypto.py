"""CPython crypto adapter: runs the core's plans with ``cryptography`` (sync).

Used by the server, the CPython test-suite and tools. The nonce reservation and the keyring wrapping are
:mod:`pyclient.keys`'s (the same code the browser adapter :mod:`pyclient.adapters.webcrypto` awaits): this
module supplies PBKDF2 and AES-GCM, which never suspend, and runs them with :func:`pyclient.keys.run_sync`.
Both adapters must produce the same bytes for the test vectors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyclient import envelope, integrity, keys, recovery
from pyclient.compress import Codec, default_codec
from pyclient.envelope import AuthenticationFailed, EnvelopeError, RecordRef, SealJob
from pyclient.keys import GcmJob, KdfParams, Keyring, KeyState, NonceLease
from pyclient.store import StoredRecord

RandomBytes = Callable[[int], bytes]


def system_random(n: int) -> bytes:
    """OS CSPRNG."""
    return os.urandom(n)


# -- primitives ---------------------------------------------------------------------


def derive_kek(pin: str, params: KdfParams) -> bytes:
    """PBKDF2-HMAC-SHA256(pin, salt, iterations) -> 32-byte key-encryption key."""
    return keys.run_sync(_CIPHER.derive_kek(keys.pin_bytes(pin), params))


def gcm_encrypt(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM, 128-bit tag appended."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def gcm_decrypt(key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes | None:
    """AES-256-GCM open; None on tag failure."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        return None


def seal_jobs(keyring: Keyring, jobs: Sequence[SealJob]) -> list[bytes]:
    """Envelopes for already-planned jobs (nonces chosen by the caller, e.g. test vectors)."""
    ciphers: dict[tuple[str, bytes | None], AESGCM] = {}
    out = []
    for job in jobs:
        aes = _cipher(ciphers, keyring, job.key_id, job.salt)
        out.append(envelope.pack(job, aes.encrypt(job.nonce, job.plaintext, job.aad)))
    return out


def _cipher(
    cache: dict[tuple[str, bytes | None], AESGCM], keyring: Keyring, key_id: str, salt: bytes | None
) -> AESGCM:
    """AES-GCM under the data key (v1) or its block key ``envelope.subkey(data key, salt)`` (v2)."""
    aes = cache.get((key_id, salt))
    if aes is None:
        aes = cache.setdefault((key_id, salt), AESGCM(envelope.subkey(keyring.data_key(key_id), salt)))
    return aes


def open_blobs(keyring: Keyring, items: Sequence[tuple[RecordRef, bytes]]) -> list[bytes | EnvelopeError]:
    """Plaintexts (compressed records) of envelopes (v1 or v2), or the error for each failing one."""
    ciphers: dict[tuple[str, bytes | None], AESGCM] = {}
    out: list[bytes | EnvelopeError] = []
    for ref, blob in items:
        try:
            parsed = envelope.parse(blob)
            aes = _cipher(ciphers, keyring, parsed.key_id, parsed.salt)
            out.append(aes.decrypt(parsed.nonce, parsed.ciphertext, parsed.aad_for(ref)))
        except InvalidTag:
            out.append(
                AuthenticationFailed(
                    f"{ref.resource_type}/{ref.resource_id} v{ref.version}: authentication failed"
                )
            )
        except EnvelopeError as exc:
            out.append(exc)
    return out


# -- keyring ------------------------------------------------------------------------------


class _KeyringCipher:
    """:class:`pyclient.keys.KeyringCipher` with hashlib and ``cryptography``: the KEK is raw bytes here."""

    async def derive_kek(self, pin: bytes, params: KdfParams) -> bytes:
        return hashlib.pbkdf2_hmac("sha256", pin, params.salt, params.iterations, 32)

    async def gcm_seal(self, key: bytes, jobs: Sequence[GcmJob]) -> list[bytes]:
        return [gcm_encrypt(key, *j) for j in jobs]

    async def gcm_open(self, key: bytes, jobs: Sequence[GcmJob]) -> list[bytes | None]:
        return [gcm_decrypt(key, *j) for j in jobs]


_CIPHER = _KeyringCipher()


def wrap_keyring(
    *,
    pin: str,
    keyring: Keyring,
    salt: bytes,
    nonces: Sequence[bytes],
    iterations: int = keys.MIN_PBKDF2_ITERATIONS,
) -> bytes:
    """PIN-wrapped keyring blob (salt and nonces random, passed in for reproducibility)."""
    return keys.run_sync(
        keys.keyring_wrap(_CIPHER, pin=pin, keyring=keyring, salt=salt, nonces=nonces, iterations=iterations))


def wrap_keyring_random(
    *,
    pin: str,
    keyring: Keyring,
    random: RandomBytes = system_random,
    iterations: int = keys.MIN_PBKDF2_ITERATIONS,
) -> bytes:
    """:func:`wrap_keyring` with fresh random salt and nonces."""
    nonces = [random(envelope.NONCE_LEN) for _ in keyring.entries]
    return wrap_keyring(pin=pin, keyring=keyring, salt=random(16), nonces=nonces, iterations=iterations)


def unlock_keyring(*, pin: str, blob: bytes) -> Keyring:
    """Unwrap a keyring blob; raises :class:`pyclient.keys.WrongPin` for a wrong PIN."""
    return keys.run_sync(keys.keyring_unlock(_CIPHER, pin=pin, blob=blob))


def new_data_key(*, key_id: str, random: RandomBytes = system_random) -> tuple[bytes, KeyState]:
    """Random 256-bit data key and its fresh counter state."""
    return random(envelope.KEY_LEN), KeyState(key_id=key_id, nonce_prefix=random(keys.NONCE_PREFIX_LEN))


# -- record pipeline ---------------------------------------------------------------------


class CpythonCrypto:
    """Seal/open FHIR records: canonical JSON -> dictionary zlib -> AES-256-GCM envelope.

    ``persist_state(expected, new)`` is called *before* any nonce of a newly
    reserved block is used; it must store ``new`` only if the stored state equals
    ``expected`` (compare-and-swap, see :func:`pyclient.keys.compare_and_swap`)
    and raise :class:`pyclient.keys.StaleKeyState` otherwise. Any other error
    propagates and nothing is sealed.
    """

    def __init__(
        self,
        *,
        keyring: Keyring,
        state: KeyState,
        persist_state: Callable[[KeyState, KeyState], None],
        codec: Codec | None = None,
        block_size: int = keys.DEFAULT_BLOCK,
        random: RandomBytes = system_random,
    ) -> None:
        if state.key_id != keyring.active_data.key_id:
            raise ValueError("key state belongs to another key than the active data key")
        self.keyring = keyring
        self._lease = NonceLease(state, block_size)
        self._persist = persist_state
        self._codec = codec or default_codec()
        self._random = random
        self._ciphers: dict[tuple[str, bytes | None], AESGCM] = {}

    @property
    def key_state(self) -> KeyState:
        """Counter state as last persisted."""
        return self._lease.state

    def _reserve(self, n: int) -> tuple[bytes | None, list[bytes]]:
        async def persist(expected: KeyState, new: KeyState) -> None:
            self._persist(expected, new)

        return keys.run_sync(keys.lease_nonces(self._lease, n, persist=persist,
                                               new_salt=lambda: self._random(envelope.SALT_LEN)))

    def seal_records(self, resources: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """One envelope per FHIR resource dict, bound to its type, id and meta.versionId."""
        refs = [RecordRef.of(r) for r in resources]
        return self.seal_items([(f.resource_type, f.resource_id, f.version, r) for f, r in zip(refs, resources, strict=True)])

    def seal_items(self, items: Sequence[tuple[str, str, int, Mapping[str, Any]]]) -> list[bytes]:
        """One envelope per (type, id, version, plaintext dict), bound to exactly that (type, id, version):
        the sealing primitive of :func:`pyclient.sync.seal_items` (base copies, outbox entries)."""
        if not items:
            return []
        salt, nonces = self._reserve(len(items))  # one batch always comes from one block (NonceLease.prepare)
        kid = self.keyring.active_data.key_id
        aes = _cipher(self._ciphers, self.keyring, kid, salt)
        jobs = envelope.seal_plans(key_id=kid, salt=salt, nonces=nonces,
                                   items=[(t, i, v, self._codec.encode_record(r)) for t, i, v, r in items])
        return [envelope.pack(j, aes.encrypt(j.nonce, j.plaintext, j.aad)) for j in jobs]

    def try_open_records(
        self, items: Sequence[tuple[RecordRef, bytes]]
    ) -> list[dict[str, Any] | EnvelopeError]:
        """Open each envelope as the record it is stored under; failures are returned, not raised."""
        out: list[dict[str, Any] | EnvelopeError] = []
        for res in open_blobs(self.keyring, items):
            if isinstance(res, EnvelopeError):
                out.append(res)
                continue
            try:
                out.append(self._codec.decode_record(res))
            except ValueError as exc:
                out.append(EnvelopeError(f"sealed record does not decompress: {exc}"))
        return out

    def open_records(self, items: Sequence[tuple[RecordRef, bytes]]) -> list[dict[str, Any]]:
        """Like :meth:`try_open_records` but raises the first failure."""
        out = []
        for res in self.try_open_records(items):
            if isinstance(res, EnvelopeError):
                raise res
            out.append(res)
        return out


class SealingCodec:
    """:class:`pyclient.sync.RecordCodec` over :class:`CpythonCrypto`: effects land in a CPython store sealed and
    MACed the way the browser's commit seals them (the same :func:`pyclient.sync.store_ops` path).

    ``store_key`` (:func:`pyclient.integrity.store_key`) turns on row MACs; ``tokens`` gives a record's
    blind-index tokens (None: the rows keep the tokens they have).
    """

    def __init__(
        self,
        crypto: CpythonCrypto,
        *,
        store_key: bytes | None = None,
        tokens: Callable[[str, dict[str, Any]], tuple[str, ...]] | None = None,
    ) -> None:
        self._crypto = crypto
        self._store_key = store_key
        self._tokens = tokens

    def seal(self, items: Sequence[tuple[str, str, int, Mapping[str, Any]]]) -> list[bytes]:
        return self._crypto.seal_items(items)

    def tokens(self, resource_type: str, resource: dict[str, Any]) -> tuple[str, ...] | None:
        return None if self._tokens is None else self._tokens(resource_type, resource)

    def record_mac(self, record: StoredRecord, tokens: tuple[str, ...] | None) -> str | None:
        if self._store_key is None:
            return None
        return integrity.record_mac(self._store_key, resource_type=record.resource_type, id=record.id,
                                    version=record.version, tokens=tokens or (), blob=record.blob, base=record.base)

    def outbox_mac(self, entry_id: str, blob: bytes) -> str | None:
        if self._store_key is None:
            return None
        return integrity.outbox_mac(self._store_key, entry_id=entry_id, blob=blob)


# -- recovery files (pyclient.recovery; PROTOCOL.md "Recovery files") ------------------------------


def recovery_seal(
    *, public_key: bytes, device_id: str, payload: Any, random: RandomBytes = system_random
) -> Any:
    """Seal one :class:`pyclient.recovery.EscrowPayload` to the server's recovery public key (65-byte P-256 point).

    ECDH with a fresh ephemeral key, HKDF-SHA256 (salt empty, ``recovery.hkdf_info``) to an AES-256-GCM key,
    AAD ``recovery.item_aad``. Mirrors what the browser does with WebCrypto."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    recipient = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    eph = ec.generate_private_key(ec.SECP256R1())
    epk = eph.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    shared = eph.exchange(ec.ECDH(), recipient)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=recovery.hkdf_info(epk, public_key)).derive(shared)
    iv = random(12)
    key_id = recovery.key_id_of(public_key)
    mid = payload.mutation.mutation_id
    ct = AESGCM(key).encrypt(iv, recovery.payload_bytes(payload),
                             recovery.item_aad(key_id=key_id, device_id=device_id, mutation_id=mid))
    return recovery.SealedItem(key_id, mid, epk, iv, ct)


def recovery_open(*, private_key: Any, device_id: str, item: Any) -> Any:
    """Open one sealed item with the server's private key (``cryptography`` EllipticCurvePrivateKey).

    Raises :class:`pyclient.recovery.RecoveryFileError` when it is not for this key or was altered."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    public = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if item.key_id != recovery.key_id_of(public):
        raise recovery.RecoveryFileError("the file was sealed for another server's recovery key")
    try:
        epk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), item.epk)
        shared = private_key.exchange(ec.ECDH(), epk)
    except ValueError:
        raise recovery.RecoveryFileError("the file is damaged (a change's key is not valid)") from None
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=recovery.hkdf_info(item.epk, public)).derive(shared)
    try:
        raw = AESGCM(key).decrypt(item.iv, item.ct, recovery.item_aad(
            key_id=item.key_id, device_id=device_id, mutation_id=item.mutation_id))
    except InvalidTag:
        raise recovery.RecoveryFileError("the file is damaged or was altered (a change does not open)") from None
    payload = recovery.payload_parse(raw)
    if payload.mutation.mutation_id != item.mutation_id or payload.device_id != device_id:
        raise recovery.RecoveryFileError("the file is damaged (a change does not match its label)")
    return payload
