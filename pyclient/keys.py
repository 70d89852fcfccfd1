"""Key hierarchy, nonce budget and rotation planning (pure; no cipher or RNG calls).

* A random 256-bit **data key** per user per device seals records (AES-256-GCM),
  plus a random 256-bit **blind-index root key** (see :mod:`pyclient.blindindex`).
* Both live in a **keyring blob** wrapped (AES-256-GCM) under a key-encryption
  key derived from the user's offline PIN with PBKDF2-HMAC-SHA256
  (>= 600,000 iterations; salt and iteration count stored in the blob).
* Nonces are ``prefix(4) || counter(8)``: a per-key counter makes reuse
  impossible as long as the counter state (:class:`KeyState`) is persisted
  *before* the reserved nonces are used. Reservation happens in blocks so the
  caller persists once per block, not once per record.
* Rotation: a new data key id becomes active; old ones stay in the keyring as
  decrypt-only until :func:`plan_reencryption_batch` has walked every record.

The adapters run PBKDF2 and AES; this module plans, packs and parses, and holds the two procedures every
adapter runs the same way over its own primitives: the compare-and-swap nonce reservation
(:func:`lease_nonces`) and keyring wrapping (:func:`keyring_wrap`, :func:`keyring_unlock`). They are
``async`` so the browser awaits WebCrypto and IndexedDB; the CPython adapter's primitives never suspend and
it runs them with :func:`run_sync`.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Protocol

from pyclient.envelope import KEY_LEN, MAX_KEY_ID_LEN, NONCE_LEN, SALT_LEN, TAG_LEN, UnknownKeyId
from pyclient.errors import ValidationFailed

# -- errors -----------------------------------------------------------------


class KeyHierarchyError(ValueError):
    """Base class for key-hierarchy failures."""


class WrongPin(KeyHierarchyError):
    """The PIN/passphrase does not unlock this keyring (or the blob was tampered with)."""


class MalformedKeyring(KeyHierarchyError):
    """The keyring blob is not well formed, uses unknown parameters, or was partly tampered with."""


class NonceBudgetExhausted(RuntimeError):
    """This key has used its NIST SP 800-38D invocation budget: rotate before sealing more."""


class NonceReservationFailed(RuntimeError):
    """Other holders of the key state kept winning the compare-and-swap: nothing was sealed."""


class StaleKeyState(RuntimeError):
    """Raised by a ``persist_state`` callback when the stored state is not the expected one.

    Another tab or worker reserved a block first; ``current`` is what is stored
    now, and the adapter retries its reservation from there.
    """

    def __init__(self, current: KeyState) -> None:
        super().__init__(f"key state of {current.key_id!r} moved to counter {current.next_counter}")
        self.current = current


# -- nonces and invocation budget ----------------------------------------------

NONCE_PREFIX_LEN = 4
#: SP 800-38D 8.3: at most 2^32 invocations per key when IVs may be random. Our
#: IVs are deterministic, which allows more, but we keep the stricter bound.
DEFAULT_BUDGET = 2**32
DEFAULT_ROTATE_AFTER = 2**31
DEFAULT_BLOCK = 1024


@dataclass(frozen=True, slots=True)
class KeyState:
    """Persisted per-key counter state. Never reset it: a lost state means rotate."""

    key_id: str
    nonce_prefix: bytes
    next_counter: int = 0
    budget: int = DEFAULT_BUDGET
    rotate_after: int = DEFAULT_ROTATE_AFTER

    def __post_init__(self) -> None:
        if len(self.nonce_prefix) != NONCE_PREFIX_LEN:
            raise ValueError(f"nonce prefix must be {NONCE_PREFIX_LEN} bytes")
        if not 0 <= self.next_counter <= self.budget <= 2**64:
            raise ValueError("counter must satisfy 0 <= next_counter <= budget <= 2^64")
        if not 0 < self.rotate_after <= self.budget:
            raise ValueError("rotate_after must be in 1..budget")

    @property
    def remaining(self) -> int:
        """Invocations still allowed under this key."""
        return self.budget - self.next_counter

    @property
    def rotate_soon(self) -> bool:
        """True once the key has reserved ``rotate_after`` nonces: schedule a rotation."""
        return self.next_counter >= self.rotate_after

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for storage next to the keyring blob."""
        return {
            "key_id": self.key_id,
            "nonce_prefix": self.nonce_prefix.hex(),
            "next_counter": self.next_counter,
            "budget": self.budget,
            "rotate_after": self.rotate_after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            key_id=str(data["key_id"]),
            nonce_prefix=bytes.fromhex(str(data["nonce_prefix"])),
            next_counter=int(data["next_counter"]),
            budget=int(data.get("budget", DEFAULT_BUDGET)),
            rotate_after=int(data.get("rotate_after", DEFAULT_ROTATE_AFTER)),
        )


def compare_and_swap(stored: KeyState | None, *, expected: KeyState, new: KeyState) -> KeyState:
    """The check a ``persist_state`` implementation runs inside its storage transaction.

    Returns ``new`` (to write) if ``stored`` is ``expected``; raises
    :class:`StaleKeyState` otherwise. This is what makes two tabs sharing one
    key get disjoint nonce blocks.
    """
    if stored is None:
        if expected.next_counter:  # the state was lost: reusing counters would reuse nonces
            raise ValueError(f"key state of {expected.key_id!r} is missing from storage: rotate the key")
    elif stored != expected:
        raise StaleKeyState(stored)
    if new.key_id != expected.key_id or new.nonce_prefix != expected.nonce_prefix:
        raise ValueError("a key state can only advance its own counter")
    if new.next_counter < expected.next_counter:
        raise ValueError("a key state counter never goes backwards")
    return new


def nonce_at(prefix: bytes, counter: int) -> bytes:
    """The 96-bit nonce for one counter value."""
    return prefix + counter.to_bytes(NONCE_LEN - NONCE_PREFIX_LEN, "big")


@dataclass(frozen=True, slots=True)
class NonceBlock:
    """Counter values ``start .. stop-1`` reserved for one key."""

    key_id: str
    prefix: bytes
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def nonces(self) -> Iterator[bytes]:
        """Every nonce of the block, in order."""
        for c in range(self.start, self.stop):
            yield nonce_at(self.prefix, c)


def reserve_nonces(state: KeyState, count: int) -> tuple[KeyState, NonceBlock]:
    """Reserve ``count`` nonces. Persist the returned state before using the block."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if count > state.remaining:
        raise NonceBudgetExhausted(
            f"key {state.key_id!r} has {state.remaining} of {state.budget} invocations left, "
            f"{count} requested: rotate the data key"
        )
    new = replace(state, next_counter=state.next_counter + count)
    return new, NonceBlock(state.key_id, state.nonce_prefix, state.next_counter, new.next_counter)


@dataclass(slots=True)
class NonceLease:
    """Hands out nonces from a persisted block (adapter helper; not thread-safe).

    Protocol: ``r = lease.prepare(n)``; if ``r`` is not None, persist ``r[0]``
    with compare-and-swap against ``lease.state`` (sync or async, the adapter's
    business) and then ``lease.install(*r)``; finally ``lease.take(n)``. A failed
    persist leaves the lease unchanged; on :class:`StaleKeyState` call
    ``lease.adopt(exc.current)`` and prepare again.
    """

    state: KeyState
    block_size: int = DEFAULT_BLOCK
    _next: int = field(default=0, init=False)
    _stop: int = field(default=0, init=False)
    #: Random salt of the installed block (envelope v2): its records are sealed under
    #: ``envelope.subkey(data key, salt)``, so a counter replayed after a storage rollback
    #: is replayed under another AES key. None = a v1 block (sealed under the data key).
    salt: bytes | None = field(default=None, init=False)

    @property
    def available(self) -> int:
        """Nonces left in the installed block."""
        return self._stop - self._next

    def prepare(self, count: int) -> tuple[KeyState, NonceBlock] | None:
        """New state+block to persist, or None when the installed block suffices."""
        if count <= self.available:
            return None
        want = min(max(count, self.block_size), max(count, self.state.remaining))
        return reserve_nonces(self.state, want)

    def install(self, state: KeyState, block: NonceBlock, salt: bytes | None = None) -> None:
        """Adopt a block whose state has been persisted (the unused rest of the old block is dropped).

        ``salt``: 16 fresh random bytes from the adapter's CSPRNG (envelope v2), chosen per block,
        never reused and never persisted outside the envelopes sealed with it.
        """
        if salt is not None and len(salt) != SALT_LEN:
            raise ValueError(f"block salt must be {SALT_LEN} bytes")
        self.state, self._next, self._stop, self.salt = state, block.start, block.stop, salt

    def adopt(self, current: KeyState) -> None:
        """Continue from the stored state another holder advanced; drops the installed block."""
        if current.key_id != self.state.key_id or current.nonce_prefix != self.state.nonce_prefix:
            raise ValueError("stored key state belongs to another key")
        if current.next_counter < self.state.next_counter:
            raise ValueError("stored key state went backwards: refusing to reuse nonces")
        self.state, self._next, self._stop, self.salt = current, 0, 0, None

    def take(self, count: int) -> list[bytes]:
        """``count`` fresh nonces from the installed block."""
        if count > self.available:
            raise RuntimeError("nonce block not reserved: call prepare/persist/install first")
        start = self._next
        self._next += count
        return [nonce_at(self.state.nonce_prefix, c) for c in range(start, start + count)]


#: Compare-and-swap attempts before giving up: each loss means another tab reserved a whole block meanwhile,
#: so eight in a row is not contention but a holder gone wrong.
MAX_CAS_RETRIES = 8

#: ``persist(expected, new)``: store ``new`` only if the stored state is ``expected`` (one storage transaction
#: running :func:`compare_and_swap`), else raise :class:`StaleKeyState` with what is stored.
PersistState = Callable[[KeyState, KeyState], Awaitable[None]]


async def lease_nonces(
    lease: NonceLease, count: int, *, persist: PersistState, new_salt: Callable[[], bytes] | None
) -> tuple[bytes | None, list[bytes]]:
    """``count`` nonces no other holder of this key state will ever use, and the salt of their block.

    A new block's state is persisted BEFORE any of its nonces is used (a crash skips nonces, never reuses
    them); when another holder moved the stored state first, continue after its block. ``new_salt`` is the
    adapter's CSPRNG for the per-block salt of envelope v2 (None: a v1 block). A failing ``persist`` leaves
    the lease as it was and seals nothing. Not re-entrant: an async caller serialises calls per lease.
    """
    for _ in range(MAX_CAS_RETRIES):
        pending = lease.prepare(count)
        if pending is None:
            break
        try:
            await persist(lease.state, pending[0])
        except StaleKeyState as exc:
            lease.adopt(exc.current)
            continue
        lease.install(*pending, salt=None if new_salt is None else new_salt())
        break
    else:
        raise NonceReservationFailed("could not reserve nonces: the stored key state keeps changing")
    return lease.salt, lease.take(count)


# -- keyring ----------------------------------------------------------------


class KeyKind(IntEnum):
    """What a keyring entry is for."""

    DATA = 1
    INDEX_ROOT = 2


class KeyStatus(IntEnum):
    """ACTIVE seals new data; RETIRED only opens old data until re-encryption finishes."""

    ACTIVE = 1
    RETIRED = 2


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One unwrapped key. ``repr`` never shows the key bytes."""

    kind: KeyKind
    key_id: str
    status: KeyStatus
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise ValueError(f"keys are {KEY_LEN} bytes")
        _key_id_bytes(self.key_id)


def _key_id_bytes(key_id: str) -> bytes:
    raw = key_id.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_KEY_ID_LEN or not all(0x21 <= b <= 0x7E for b in raw) or b"?" in raw:
        raise ValueError(f"key id must be 1..{MAX_KEY_ID_LEN} printable ASCII chars without '?': {key_id!r}")
    return raw


@dataclass(frozen=True, slots=True)
class Keyring:
    """Unwrapped keys of one user on one device: key id -> key."""

    entries: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        ids = [e.key_id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate key id in keyring")
        active_data = [e for e in self.entries if e.kind is KeyKind.DATA and e.status is KeyStatus.ACTIVE]
        active_idx = [
            e for e in self.entries if e.kind is KeyKind.INDEX_ROOT and e.status is KeyStatus.ACTIVE
        ]
        if len(active_data) != 1:
            raise ValueError("a keyring needs exactly one active data key")
        if len(active_idx) > 1:
            raise ValueError("at most one active blind-index root key")

    @property
    def active_data(self) -> KeyEntry:
        """The data key that seals new records."""
        return next(e for e in self.entries if e.kind is KeyKind.DATA and e.status is KeyStatus.ACTIVE)

    @property
    def index_root(self) -> bytes | None:
        """The active blind-index root key, if any."""
        for e in self.entries:
            if e.kind is KeyKind.INDEX_ROOT and e.status is KeyStatus.ACTIVE:
                return e.key
        return None

    def data_key(self, key_id: str) -> bytes:
        """Key bytes for an envelope's key id (active or retired)."""
        for e in self.entries:
            if e.kind is KeyKind.DATA and e.key_id == key_id:
                return e.key
        raise UnknownKeyId(f"no data key {key_id!r} in the keyring (dropped before re-encryption finished?)")

    def data_key_ids(self) -> list[str]:
        """All data key ids, active first."""
        data = [e for e in self.entries if e.kind is KeyKind.DATA]
        return [e.key_id for e in sorted(data, key=lambda e: e.status)]

    def rotated(self, *, new_key_id: str, new_key: bytes) -> Keyring:
        """New active data key; the old one becomes decrypt-only."""
        entries = [
            replace(e, status=KeyStatus.RETIRED) if e.kind is KeyKind.DATA else e for e in self.entries
        ]
        return Keyring((KeyEntry(KeyKind.DATA, new_key_id, KeyStatus.ACTIVE, new_key), *entries))

    def without(self, key_ids: Iterable[str]) -> Keyring:
        """Drop retired keys once no record uses them any more."""
        drop = set(key_ids)
        if self.active_data.key_id in drop:
            raise ValueError("cannot drop the active data key")
        return Keyring(tuple(e for e in self.entries if e.key_id not in drop))


def new_keyring(
    *, data_key_id: str, data_key: bytes, index_key_id: str | None = None, index_root_key: bytes | None = None
) -> Keyring:
    """A fresh keyring from random key material chosen by the caller."""
    entries = [KeyEntry(KeyKind.DATA, data_key_id, KeyStatus.ACTIVE, data_key)]
    if index_root_key is not None:
        entries.append(KeyEntry(KeyKind.INDEX_ROOT, index_key_id or "bi-1", KeyStatus.ACTIVE, index_root_key))
    return Keyring(tuple(entries))


# -- keyring blob (PIN-wrapped) -------------------------------------------------

KEYRING_MAGIC = b"OK"
KEYRING_FORMAT_V1 = 0x01
KDF_PBKDF2_SHA256 = 0x01
MIN_PBKDF2_ITERATIONS = 600_000
MAX_PBKDF2_ITERATIONS = 100_000_000
MIN_SALT_LEN = 16
MAX_SALT_LEN = 64


@dataclass(frozen=True, slots=True)
class KdfParams:
    """PBKDF2-HMAC-SHA256 parameters recorded in the keyring blob."""

    salt: bytes
    iterations: int = MIN_PBKDF2_ITERATIONS

    def __post_init__(self) -> None:
        if not MIN_SALT_LEN <= len(self.salt) <= MAX_SALT_LEN:
            raise ValueError(f"salt must be {MIN_SALT_LEN}..{MAX_SALT_LEN} bytes")
        if not MIN_PBKDF2_ITERATIONS <= self.iterations <= MAX_PBKDF2_ITERATIONS:
            raise ValueError(f"PBKDF2 iterations must be >= {MIN_PBKDF2_ITERATIONS}")


def pin_bytes(pin: str) -> bytes:
    """PIN/passphrase as PBKDF2 password: NFC-normalised UTF-8 (same bytes on every keyboard)."""
    if not pin:
        raise ValueError("empty PIN")
    return unicodedata.normalize("NFC", pin).encode("utf-8")


def keyring_header(params: KdfParams) -> bytes:
    """Blob header; it is part of every entry's AAD."""
    return (
        KEYRING_MAGIC
        + bytes((KEYRING_FORMAT_V1, KDF_PBKDF2_SHA256))
        + struct.pack(">I", params.iterations)
        + bytes((len(params.salt),))
        + params.salt
    )


def _entry_meta(kind: int, status: int, key_id: str) -> bytes:
    kid = _key_id_bytes(key_id)
    return bytes((kind, status, len(kid))) + kid


@dataclass(frozen=True, slots=True)
class WrapJob:
    """One AES-256-GCM encryption of a key under the PIN-derived KEK."""

    meta: bytes
    aad: bytes
    nonce: bytes
    plaintext: bytes = field(repr=False)


def wrap_plan(params: KdfParams, keyring: Keyring, nonces: list[bytes]) -> list[WrapJob]:
    """Plan wrapping every keyring entry; ``nonces`` are random, one per entry.

    Each wrap uses a fresh salt (so a fresh KEK) in practice, so random nonces
    are far inside the GCM budget.
    """
    if len(nonces) != len(keyring.entries) or any(len(n) != NONCE_LEN for n in nonces):
        raise ValueError("need one 12-byte nonce per keyring entry")
    if len(set(nonces)) != len(nonces):
        raise ValueError("nonces must be distinct")
    header = keyring_header(params)
    jobs = []
    for entry, nonce in zip(keyring.entries, nonces, strict=True):
        meta = _entry_meta(entry.kind, entry.status, entry.key_id)
        jobs.append(WrapJob(meta=meta, aad=header + meta, nonce=nonce, plaintext=entry.key))
    return jobs


def pack_keyring(params: KdfParams, jobs: list[WrapJob], ciphertexts: list[bytes]) -> bytes:
    """Keyring blob from planned jobs and the adapter's AES-GCM outputs."""
    if not 1 <= len(jobs) <= 255 or len(jobs) != len(ciphertexts):
        raise ValueError("1..255 entries, one ciphertext per job")
    out = [keyring_header(params), bytes((len(jobs),))]
    for job, ct in zip(jobs, ciphertexts, strict=True):
        if len(ct) != KEY_LEN + TAG_LEN:
            raise ValueError("wrapped key must be 48 bytes")
        out += [job.meta, job.nonce, ct]
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class WrappedEntry:
    """One entry of a parsed keyring blob."""

    kind: KeyKind
    status: KeyStatus
    key_id: str
    aad: bytes
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ParsedKeyring:
    """A keyring blob split into KDF parameters and wrapped entries."""

    params: KdfParams
    entries: tuple[WrappedEntry, ...]


def parse_keyring(blob: bytes) -> ParsedKeyring:
    """Parse a keyring blob; raises :class:`MalformedKeyring`."""
    try:
        if blob[:2] != KEYRING_MAGIC or blob[2] != KEYRING_FORMAT_V1:
            raise MalformedKeyring("not an OmniCare keyring v1")
        if blob[3] != KDF_PBKDF2_SHA256:
            raise MalformedKeyring(f"unknown KDF id {blob[3]}")
        (iterations,) = struct.unpack_from(">I", blob, 4)
        salt_len = blob[8]
        salt = bytes(blob[9 : 9 + salt_len])
        params = KdfParams(salt=salt, iterations=iterations)
        header = bytes(blob[: 9 + salt_len])
        pos = 9 + salt_len
        count = blob[pos]
        pos += 1
        entries = []
        for _ in range(count):
            kind, status, n = blob[pos], blob[pos + 1], blob[pos + 2]
            meta = bytes(blob[pos : pos + 3 + n])
            key_id = meta[3:].decode("ascii")
            _key_id_bytes(key_id)
            pos += 3 + n
            nonce = bytes(blob[pos : pos + NONCE_LEN])
            ct = bytes(blob[pos + NONCE_LEN : pos + NONCE_LEN + KEY_LEN + TAG_LEN])
            pos += NONCE_LEN + KEY_LEN + TAG_LEN
            if len(ct) != KEY_LEN + TAG_LEN or len(meta) != 3 + n:
                raise MalformedKeyring("truncated keyring")
            entries.append(WrappedEntry(KeyKind(kind), KeyStatus(status), key_id, header + meta, nonce, ct))
        if pos != len(blob) or not entries:
            raise MalformedKeyring("trailing bytes or no entries in keyring")
    except MalformedKeyring:
        raise
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedKeyring(f"malformed keyring: {exc}") from exc
    return ParsedKeyring(params=params, entries=tuple(entries))


def keyring_from_unwrapped(parsed: ParsedKeyring, keys: list[bytes | None]) -> Keyring:
    """Assemble the keyring from the adapter's unwrap results (None = tag failure).

    All entries failing means the PIN is wrong; only some failing means tampering.
    """
    if all(k is None for k in keys):
        raise WrongPin("wrong PIN or passphrase")
    if any(k is None for k in keys):
        raise MalformedKeyring("some keyring entries fail authentication: blob was tampered with")
    entries = tuple(
        KeyEntry(w.kind, w.key_id, w.status, k)
        for w, k in zip(parsed.entries, keys, strict=True)
        if k is not None
    )
    try:
        return Keyring(entries)
    except ValueError as exc:
        raise MalformedKeyring(str(exc)) from exc


#: One AES-256-GCM operation on a keyring entry: (nonce, aad, data).
GcmJob = tuple[bytes, bytes, bytes]


class KeyringCipher(Protocol):
    """What an adapter supplies for the keyring: PBKDF2 and AES-256-GCM. The key handle is the adapter's own
    (raw bytes on CPython, a non-extractable CryptoKey in the browser), so the KEK need not reach Python."""

    async def derive_kek(self, pin: bytes, params: KdfParams) -> Any:
        """PBKDF2-HMAC-SHA256(pin, salt, iterations, 32 bytes) as an AES-256-GCM key."""
        ...

    async def gcm_seal(self, key: Any, jobs: Sequence[GcmJob]) -> list[bytes]:
        """ciphertext || 128-bit tag per job."""
        ...

    async def gcm_open(self, key: Any, jobs: Sequence[GcmJob]) -> list[bytes | None]:
        """Plaintext per job, None where the tag fails."""
        ...


async def keyring_wrap(
    cipher: KeyringCipher,
    *,
    pin: str,
    keyring: Keyring,
    salt: bytes,
    nonces: Sequence[bytes],
    iterations: int = MIN_PBKDF2_ITERATIONS,
) -> bytes:
    """The PIN-wrapped keyring blob (section 3); salt and nonces are the caller's random bytes (fixed in the
    test vectors, so every adapter must give the vector's bytes)."""
    params = KdfParams(salt=salt, iterations=iterations)
    jobs = wrap_plan(params, keyring, list(nonces))
    kek = await cipher.derive_kek(pin_bytes(pin), params)
    return pack_keyring(params, jobs, await cipher.gcm_seal(kek, [(j.nonce, j.aad, j.plaintext) for j in jobs]))


async def keyring_unlock(cipher: KeyringCipher, *, pin: str, blob: bytes) -> Keyring:
    """Unwrap a keyring blob: :class:`WrongPin` (an empty PIN too: it unlocks nothing) or
    :class:`MalformedKeyring`."""
    parsed = parse_keyring(blob)
    kek = await cipher.derive_kek(pin_bytes(pin or " "), parsed.params)
    opened = await cipher.gcm_open(kek, [(w.nonce, w.aad, w.ciphertext) for w in parsed.entries])
    return keyring_from_unwrapped(parsed, opened)


def run_sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Result of a coroutine whose every await completes at once (the CPython adapter's primitives): its way
    into the one async implementation above, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a synchronous primitive suspended")


# -- rotation -------------------------------------------------------------------

ROTATION_MAX_AGE_SECONDS = 90 * 86_400


def rotation_due(
    *, key_created_at: float, now: float, state: KeyState, max_age_seconds: float = ROTATION_MAX_AGE_SECONDS
) -> str | None:
    """Why the active data key should be rotated now, or None. Times are passed in (seconds)."""
    if state.rotate_soon:
        return f"key {state.key_id!r} used {state.next_counter} of {state.budget} invocations"
    if now - key_created_at >= max_age_seconds:
        return f"key {state.key_id!r} is older than {max_age_seconds / 86_400:g} days"
    return None


@dataclass(frozen=True, slots=True)
class ReencryptionBatch:
    """Next step of a resumable re-encryption pass."""

    to_reencrypt: list[str]
    next_cursor: str | None
    done: bool


def plan_reencryption_batch(
    records: Iterable[tuple[str, str]],
    *,
    cursor: str | None,
    batch_size: int,
    target_key_id: str,
    max_scan: int | None = None,
) -> ReencryptionBatch:
    """Pick the next records to re-seal under ``target_key_id``.

    ``records`` yields ``(store_key, envelope_key_id)`` in ascending store-key
    order, starting after ``cursor`` (e.g. an IndexedDB cursor opened at
    ``IDBKeyRange.lowerBound(cursor, true)``; keys <= cursor are skipped anyway).
    Persist ``next_cursor`` after the batch has been written: a crash re-plans
    from the last cursor and re-sealing twice is harmless. When ``done`` is
    True no record uses an old key and the retired keys can be dropped.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    scan_limit = max_scan if max_scan is not None else 50 * batch_size
    todo: list[str] = []
    last = cursor
    scanned = 0
    for store_key, key_id in records:
        if cursor is not None and store_key <= cursor:
            continue
        last = store_key
        scanned += 1
        if key_id != target_key_id:
            todo.append(store_key)
        if len(todo) >= batch_size or scanned >= scan_limit:
            return ReencryptionBatch(todo, last, False)
    return ReencryptionBatch(todo, last, True)


# -- hardware-bound unlock and the unlock-secret rule (issue 10, item 16) ------------------------------------
#
# Why: a copied IndexedDB can be attacked offline. PBKDF2 at 600,000 iterations costs ~6 x 10^5 SHA-256 pairs
# per guess, so all 10^6 six-digit PINs are 6 x 10^11 HMAC pairs: minutes to hours on one GPU. Two answers:
# * where the browser offers WebAuthn with the PRF extension on a platform authenticator, the PIN-wrapped
#   keyring blob is wrapped a SECOND time under a key only the authenticator can produce (its PRF output for
#   this device's input, through HKDF). What is stored is only the doubly wrapped blob: a copy is useless without
#   the device's authenticator, and the PIN (still needed) is only tried through the device's attempt limit;
# * where it is not, roles whose scope is every patient need a passphrase, not a PIN.
# The adapter does WebAuthn and AES; this module names the inputs, derives the KEK and packs the container.

import hashlib  # noqa: E402  (kept beside the code that needs it)
import hmac  # noqa: E402

PRF_MAGIC = b"OKP1"
PRF_INFO = b"omnicare/keyring/webauthn-prf/v1"
PRF_SALT_LEN = 32


def prf_kek(prf_output: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the authenticator's PRF output: the 32-byte outer wrapping key."""
    if len(prf_output) < 32 or len(salt) != PRF_SALT_LEN:
        raise ValueError("PRF output must be >= 32 bytes and the salt 32 bytes")
    prk = hmac.new(salt, prf_output, hashlib.sha256).digest()
    return hmac.new(prk, PRF_INFO + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class PrfWrapped:
    """The keyring blob wrapped a second time: ``OKP1 | len(cred) | cred | salt(32) | nonce(12) | ciphertext``."""

    credential_id: bytes
    salt: bytes
    nonce: bytes
    ciphertext: bytes

    def aad(self) -> bytes:
        return PRF_MAGIC + bytes((len(self.credential_id),)) + self.credential_id + self.salt

    def pack(self) -> bytes:
        return self.aad() + self.nonce + self.ciphertext


def prf_aad(credential_id: bytes, salt: bytes) -> bytes:
    if not 1 <= len(credential_id) <= 255 or len(salt) != PRF_SALT_LEN:
        raise ValueError("credential id 1..255 bytes, salt 32 bytes")
    return PRF_MAGIC + bytes((len(credential_id),)) + credential_id + salt


def is_prf_wrapped(blob: bytes) -> bool:
    return blob[:4] == PRF_MAGIC


def parse_prf_wrapped(blob: bytes) -> PrfWrapped:
    if not is_prf_wrapped(blob) or len(blob) < 5:
        raise MalformedKeyring("not a hardware-wrapped keyring")
    n = blob[4]
    cred, rest = blob[5:5 + n], blob[5 + n:]
    if len(cred) != n or n == 0 or len(rest) < PRF_SALT_LEN + NONCE_LEN + TAG_LEN:
        raise MalformedKeyring("truncated hardware-wrapped keyring")
    return PrfWrapped(cred, rest[:PRF_SALT_LEN], rest[PRF_SALT_LEN:PRF_SALT_LEN + NONCE_LEN],
                      rest[PRF_SALT_LEN + NONCE_LEN:])


#: Roles whose scope is every patient (``omnicare.access.roles``: scope "all"): a PIN is not enough for them
#: without hardware-bound unlock.
WIDE_SCOPES = frozenset({"all"})
PASSPHRASE_MIN = 12
#: The unlock-secret rule (the one copy: the PIN set-up form shows PIN_RULE as its hint, ``BrowserApp.pin_rule``).
PIN_MIN_DIGITS = 6
SECRET_MIN_CHARS = 8
SECRET_MAX_CHARS = 64
PIN_RULE = f"At least {PIN_MIN_DIGITS} digits, or a passphrase of {SECRET_MIN_CHARS}+ characters."
PIN_TOO_WEAK = f"Choose a PIN of at least {PIN_MIN_DIGITS} digits (or a passphrase of {SECRET_MIN_CHARS}+ characters)."


def unlock_secret_problem(secret: str, *, scope: str, hardware_bound: bool) -> str | None:
    """Why ``secret`` cannot protect this device's keys (None: it can). Everyone: a PIN of 6+ digits or a
    passphrase of 8+ characters, at most 64; wide-scope roles without hardware-bound unlock: a passphrase of
    12+ characters with at least one letter, not a run of one character."""
    s = unicodedata.normalize("NFC", secret or "")
    if len(s) > SECRET_MAX_CHARS:
        return f"Keep the PIN or passphrase to {SECRET_MAX_CHARS} characters or fewer."
    if not ((s.isdigit() and len(s) >= PIN_MIN_DIGITS) or len(s) >= SECRET_MIN_CHARS):
        return PIN_TOO_WEAK
    if scope in WIDE_SCOPES and not hardware_bound:
        if len(s) < PASSPHRASE_MIN or not any(c.isalpha() for c in s) or len(set(s)) < 4:
            return (f"Your role can see every patient, and this device cannot lock your data to its own hardware: "
                    f"choose a passphrase of at least {PASSPHRASE_MIN} characters with letters, not a PIN.")
    return None


def unlock_secret_check(secret: str, *, scope: str, hardware_bound: bool) -> None:
    """Raise :class:`ValidationFailed` (the form's sentence, and the PIN field's) unless ``secret`` will do."""
    problem = unlock_secret_problem(secret, scope=scope, hardware_bound=hardware_bound)
    if problem:
        raise ValidationFailed(problem, fields={"pin": PIN_RULE if problem == PIN_TOO_WEAK else problem})
